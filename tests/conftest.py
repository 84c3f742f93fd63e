"""Shared test fixtures: quiet TF logs, fixed seeds, and the location of ../shared/datasets."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    import keras

    keras.utils.set_random_seed(0)
    yield


@pytest.fixture
def shared_datasets():
    """../shared/datasets, or a skip naming what is missing."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"real data folder {SHARED_DATASETS} is absent (CI always has it)")
    return SHARED_DATASETS
