"""Fixtures: the chart rendered once per value set of the matrix (module-scoped, cached per session)."""

from __future__ import annotations

import pytest

from .rendering import MATRIX, Rendered, render, values_of


@pytest.fixture(scope="module", params=list(MATRIX))
def case(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def rendered(case: str) -> Rendered:
    return render(values_of(case))
