"""Small helpers several test files share: a quiet quick config, a workdir's files, a kill."""

import os

import keras

from recipes import configs
from recipes import workdir as wd


def quick(epochs=None, **overrides):
    """``digits_mlp:quick``, quiet, without TensorBoard; ``overrides`` keyed ``"branch.field"``."""
    cfg = configs.get("digits_mlp:quick")
    cfg.train.verbose = 0
    cfg.monitor.tensorboard = False
    if epochs is not None:
        cfg.train.epochs = epochs
    for path, value in overrides.items():
        branch, field = path.split(".")
        cfg[branch][field] = value
    return cfg


def snapshot(directory):
    """{relative path: bytes} of every file under ``directory`` (the lock file aside: it is
    not a result); empty if the directory is missing."""
    out = {}
    for base, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(base, name)
            rel = os.path.relpath(path, directory)
            if rel != wd.LOCK_NAME:
                with open(path, "rb") as f:
                    out[rel] = f.read()
    return out


class KillAt(keras.callbacks.Callback):
    """Stands in for SIGKILL: aborts the run as epoch ``after`` begins (after its backup)."""

    def __init__(self, after):
        super().__init__()
        self.after = after

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.after:
            raise KeyboardInterrupt
