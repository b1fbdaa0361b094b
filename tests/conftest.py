"""Shared fixtures: quiet TensorFlow, a fixed seed for every test, fresh CLI flags."""

import os
import signal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# isort: off
import recipes  # noqa: E402,F401 -- imports TensorFlow quietly (see recipes/__init__.py)
import keras  # noqa: E402
import pytest  # noqa: E402
from recipes import cli  # noqa: E402
# isort: on


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same Python, NumPy and TF seeds (keras-tuner's conftest)."""
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session(free_memory=False)  # gc.collect costs ~0.4 s a test


@pytest.fixture
def _fresh_flags():
    """For a test that runs ``cli.main_for`` in process: the flags and SIGTERM as they were."""
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, handler)  # main_for turns SIGTERM into KeyboardInterrupt
    for name in [n for n in cli.FLAGS if n.startswith("config.")]:
        delattr(cli.FLAGS, name)
    cli.FLAGS.unparse_flags()
