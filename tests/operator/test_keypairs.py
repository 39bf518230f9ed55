"""Keys the operator makes are keys the service loads, in every algorithm, private and public halves alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from authsvc_operator import keypairs, rotation
from service import keys


@pytest.mark.parametrize("algorithm", rotation.ALGORITHMS)
def test_a_generated_key_and_its_public_half_load_in_the_service_as_that_algorithm(
    algorithm: str, tmp_path: Path
) -> None:
    private = keypairs.generate(algorithm)
    public = keypairs.public_half(private)
    assert keypairs.inspect("k1.pem", private) == rotation.Material(algorithm, private=True)
    assert keypairs.inspect("k0.pub.pem", public) == rotation.Material(algorithm, private=False)
    (tmp_path / "k1.pem").write_bytes(private)
    (tmp_path / "k0.pub.pem").write_bytes(public)
    (tmp_path / "active-kid").write_text("k1")
    loaded = keys.load(tmp_path, None)
    assert (loaded.signing.kid, loaded.signing.algorithm) == ("k1", algorithm)
    assert (loaded.by_kid["k0"].algorithm, loaded.by_kid["k0"].private) == (algorithm, None)
    jwks = [{k: v for k, v in loaded.by_kid[kid].jwk().items() if k != "kid"} for kid in ("k0", "k1")]
    assert jwks[0] == jwks[1]  # the public half of that very key


@pytest.mark.parametrize(
    ("entry", "data"),
    [("k.pem", b"not a key"), ("k.pub.pem", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")],
)
def test_an_entry_that_does_not_parse_is_named_without_its_content(entry: str, data: bytes) -> None:
    with pytest.raises(ValueError, match=f"^{entry} is not a key the service can load$"):
        keypairs.inspect(entry, data)


def test_key_entries_are_told_from_the_rest_by_name() -> None:
    assert [keypairs.kid_of(e) for e in ("a.pem", "a.pub.pem", "active-kid", "a.txt")] == ["a", "a", None, None]
