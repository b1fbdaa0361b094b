"""babysit.recipes: running a training recipe, from data to report."""

import contextlib
import os
import sys

# TensorFlow's C++ log lines (CPU feature notes, oneDNN, and an "E0000 ... NodeDef mentions
# attribute use_unbounded_threadpool" line a tf.data pipeline prints at every new graph,
# harmless) drown a recipe's own one-line verdicts: level 3 keeps them out; a real failure
# still reaches Python as an exception. BABYSIT_TF_LOGS=1 (or TF_CPP_MIN_LOG_LEVEL set before
# the import) shows everything.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if os.environ.get("BABYSIT_TF_LOGS") else "3")


@contextlib.contextmanager
def _native_stderr_silenced():
    """Silences file descriptor 2 while TensorFlow loads and probes its devices.

    TF 2.2x logs "oneDNN custom operations are on", "Could not find cuda drivers" and, on a
    CPU machine with the CUDA wheel, "failed call to cuInit" through absl before absl logging
    is initialised, so no TF_CPP_MIN_LOG_LEVEL hides them (abseil-cpp PR #1957). Set
    BABYSIT_TF_LOGS=1 to see them, e.g. to debug a GPU setup.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # notebooks: no real descriptor
        fd = None
    if fd is None or os.environ.get("BABYSIT_TF_LOGS"):
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(fd), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


with _native_stderr_silenced():
    import tensorflow as _tf

    _tf.config.list_physical_devices()

# Every class a saved babysit model can name registers itself with Keras on import: the
# builders' layers and initializers (Maxout, WeightNormalization, Scaled, ...), the crop
# layer, the schedules (LinearWarmup, ...), the SVM loss and the Distiller (an exported model's
# flip layer is in models.layers). Without these
# imports keras.saving.load_model on a babysit model fails ("Could not interpret
# initializer identifier", "Could not locate class 'LinearWarmup'") unless the user happens
# to have imported the module that defines the class.
import models as _models  # noqa: E402, F401
from recipes import distill as _distill  # noqa: E402, F401
from recipes import losses as _losses  # noqa: E402, F401
from recipes import pipeline as _pipeline  # noqa: E402, F401
from recipes import schedules as _schedules  # noqa: E402, F401
