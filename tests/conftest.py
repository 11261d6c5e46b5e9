"""Shared fixtures. Real-data fixtures skip with a clear message when ../shared/data is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"real data not available: {what} expected at {path} (CI has it)")
    return path


@pytest.fixture(scope="session")
def physionet_zip() -> Path:
    return _need(SHARED_DATA / "physionet2019" / "training_setA.zip", "PhysioNet 2019 training set A")


@pytest.fixture(scope="session")
def mimic_demo_dir() -> Path:
    return _need(SHARED_DATA / "mimic-iii-demo", "MIMIC-III demo v1.4")


@pytest.fixture(scope="session")
def cxr_data_dir() -> Path:
    return _need(SHARED_DATA / "cxr", "chest X-ray samples (Kermany, NIH)")
