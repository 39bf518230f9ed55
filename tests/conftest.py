from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools import stack as stack_module


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"  # asyncpg runs only on asyncio; the session shares one loop


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack_module.Stack]:
    with stack_module.Stack(tmp_path_factory.mktemp("stack")) as running:
        yield running
