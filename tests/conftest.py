"""Shared test fixtures: repository paths and the optional shared real data."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_PARQUET = SHARED / "data" / "stooq-us-daily-1992-2019.parquet"
GOLDEN = SHARED / "golden" / "render_cases.npz"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_parquet() -> Path:
    if not SHARED_PARQUET.exists():
        pytest.skip(f"shared real panel not found at {SHARED_PARQUET} (clone with ../shared beside it)")
    return SHARED_PARQUET


@pytest.fixture(scope="session")
def golden_path() -> Path:
    if not GOLDEN.exists():
        pytest.skip(f"golden render cases not found at {GOLDEN}")
    return GOLDEN
