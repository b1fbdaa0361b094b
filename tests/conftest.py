"""Shared fixtures: quiet TensorFlow, a fixed seed for every test."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same Python, NumPy and TF seeds (keras-tuner's conftest)."""
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()
