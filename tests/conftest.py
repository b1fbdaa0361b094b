"""Shared fixtures: quiet TensorFlow, a fixed seed for every test."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# isort: off
import recipes  # noqa: E402,F401 -- imports TensorFlow quietly (see recipes/__init__.py)
import keras  # noqa: E402
import pytest  # noqa: E402
# isort: on


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same Python, NumPy and TF seeds (keras-tuner's conftest)."""
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session(free_memory=False)  # gc.collect costs ~0.4 s a test
