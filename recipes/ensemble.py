"""Model ensembles: average the predicted distributions of several trained models.

CS231n "Neural Networks 3" (model ensembles): train several independent models (different
seeds or hyperparameters) and average their predictions at test time for a reliable extra
percent or two. Snapshot ensembles (Huang et al. 2017, "Snapshot Ensembles: Train 1, get M
for free") get the members from *one* run: a ``cosine_restarts`` schedule (Loshchilov &
Hutter 2017, SGDR) anneals to a minimum at the end of every cycle, a snapshot is saved there
(``SnapshotSaver``), and the snapshots are averaged like independent models
(``load_snapshots`` + ``predict``).

Members output logits or probabilities (a softmax last layer, read by
``recipes.tasks.output_activation``; one sigmoid unit counts as two classes); the ensemble
averages their probabilities (not the logits).
"""

from __future__ import annotations

import numbers
import os
import re
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from recipes import io, tasks

__all__ = ["SnapshotSaver", "evaluate", "load_snapshots", "member_probabilities", "predict",
           "snapshot_paths"]

_SNAPSHOT = re.compile(r"^snapshot_(\d+)\.keras$")


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def _probabilities(model: keras.Model, out: np.ndarray) -> np.ndarray:
    """One member's outputs as class probabilities (n, C), whatever its last layer does."""
    out = np.asarray(out)
    act = tasks.output_activation(model)
    if out.shape[-1] == 1:  # one sigmoid unit: P(1) = sigmoid(z), two classes
        p = out[:, 0] if act == "sigmoid" else 1.0 / (1.0 + np.exp(-out[:, 0]))
        return np.stack([1.0 - p, p], axis=-1).astype(np.float32)
    return out.astype(np.float32) if act == "softmax" else _softmax(out)


def _check_members(models: Sequence[keras.Model]) -> list[keras.Model]:
    models = list(models) if not isinstance(models, keras.Model) else [models]
    if not models:
        raise ValueError("an ensemble needs at least one model, got an empty list; pass the "
                         "trained models (or load_snapshots(directory))")
    classes = {}
    for i, m in enumerate(models):
        try:
            shape = m.output_shape
        except (AttributeError, ValueError):  # subclassed, not yet built: checked after
            continue
        if isinstance(shape, tuple) and shape and shape[-1] is not None:
            classes[i] = shape[-1]
    if len(set(classes.values())) > 1:
        raise ValueError(f"ensemble members disagree on the number of classes: {classes} "
                         "(member index → classes); ensemble models of the same task")
    return models


def member_probabilities(models: Sequence[keras.Model], x: Any, *,
                         batch_size: int = 256) -> np.ndarray:
    """Each member's softmax probabilities.

    Args:
        models: trained models outputting logits.
        x: inputs, as each model's ``predict`` takes them.
        batch_size: examples per forward pass.

    Returns:
        float32 (num_models, n, num_classes).

    Raises:
        ValueError: no models, or members with different numbers of classes.
    """
    models = _check_members(models)
    probs = [_probabilities(m, m.predict(x, batch_size=batch_size, verbose=0))
             for m in models]
    shapes = {p.shape for p in probs}
    if len(shapes) > 1:
        raise ValueError(f"ensemble members disagree on the output shape: {sorted(shapes)}; "
                         "ensemble models of the same task")
    return np.stack(probs)


def predict(models: Sequence[keras.Model], x: Any, *, batch_size: int = 256) -> np.ndarray:
    """The ensemble's prediction: the mean of the members' softmax probabilities.

    Args:
        models: trained models outputting logits (independent seeds, or snapshots).
        x: inputs, as each model's ``predict`` takes them.
        batch_size: examples per forward pass.

    Returns:
        float32 (n, num_classes) probabilities, each row summing to 1.

    Raises:
        ValueError: no models, or members with different numbers of classes.
    """
    return member_probabilities(models, x, batch_size=batch_size).mean(axis=0)


def _accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(probs.argmax(axis=-1) == y))


def evaluate(models: Sequence[keras.Model], x: Any, y: Any, *,
             batch_size: int = 256) -> dict[str, Any]:
    """The ensemble's accuracy and loss next to each member's accuracy.

    Args:
        models: trained models outputting logits.
        x: inputs.
        y: integer labels (n,) (one-hot labels are accepted too).
        batch_size: examples per forward pass.

    Returns:
        ``{"accuracy", "loss", "member_accuracy": [...], "member_loss": [...]}``; losses are
        mean negative log-likelihoods (probabilities clipped at ``keras.config.epsilon()``).
    """
    probs = member_probabilities(models, x, batch_size=batch_size)
    y = np.asarray(y)
    if y.ndim == 2:
        y = y.argmax(axis=-1)
    y = y.astype(np.int64).reshape(-1)
    if len(y) != probs.shape[1]:
        raise ValueError(f"{probs.shape[1]} examples but {len(y)} labels")
    eps = keras.config.epsilon()

    def nll(p: np.ndarray) -> float:
        return float(np.mean(-np.log(np.clip(p[np.arange(len(y)), y], eps, 1.0))))

    mean = probs.mean(axis=0)
    return {"accuracy": _accuracy(mean, y), "loss": nll(mean),
            "member_accuracy": [_accuracy(p, y) for p in probs],
            "member_loss": [nll(p) for p in probs]}


@keras.saving.register_keras_serializable(package="babysit")
class SnapshotSaver(keras.callbacks.Callback):
    """Saves the model at the end of every learning-rate cycle (Huang et al. 2017).

    With ``schedule.name = "cosine_restarts"`` and ``schedule.cycles`` equal cycles over
    ``train.epochs``, a cycle is ``epochs // cycles`` epochs; the snapshot after cycle k
    (1-based) is ``directory/snapshot_{k}.keras``, written atomically (a temporary
    ``.keras`` file in the same directory, then ``os.replace``).

    Args:
        directory: where the snapshots go (created if missing).
        cycle_epochs: epochs per cycle; the epoch counter is absolute, so a run resumed by
            ``BackupAndRestore`` still saves at the cycle ends.
    """

    def __init__(self, directory: str, cycle_epochs: int):
        super().__init__()
        if isinstance(cycle_epochs, bool) or not isinstance(cycle_epochs, numbers.Integral) \
                or cycle_epochs < 1:
            raise ValueError(f"cycle_epochs must be an integer >= 1, got {cycle_epochs!r}; "
                             "choose train.epochs divisible by schedule.cycles and pass "
                             "epochs // cycles")
        self.directory = os.fspath(directory)
        self.cycle_epochs = int(cycle_epochs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.cycle_epochs:
            return
        os.makedirs(self.directory, exist_ok=True)
        k = (epoch + 1) // self.cycle_epochs
        path = os.path.join(self.directory, f"snapshot_{k}.keras")
        with io.atomic_path(path, suffix=".keras") as tmp:
            self.model.save(tmp)

    def get_config(self) -> dict[str, Any]:
        return {"directory": self.directory, "cycle_epochs": self.cycle_epochs}


def snapshot_paths(directory: str) -> list[str]:
    """The ``snapshot_{k}.keras`` files in ``directory``, in cycle order."""
    found = []
    for name in os.listdir(directory):
        m = _SNAPSHOT.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(directory, name)))
    return [path for _, path in sorted(found)]


def load_snapshots(directory: str, *, compile: bool = False) -> list[keras.Model]:
    """Loads the snapshots ``SnapshotSaver`` wrote, in cycle order, in safe mode.

    Args:
        directory: the ``SnapshotSaver`` directory.
        compile: also restore each snapshot's optimizer, loss and metrics (``predict`` needs
            none of them; leaving them out avoids needing their classes registered).

    Returns:
        The snapshot models, first cycle first.

    Raises:
        ValueError: ``directory`` is not a path, is a file, holds no ``snapshot_{k}.keras``,
            or one of them is not a readable ``.keras`` file.
    """
    if not isinstance(directory, (str, bytes, os.PathLike)):
        raise ValueError(f"load_snapshots: directory must be the path (str or os.PathLike) of "
                         f"a SnapshotSaver directory, got {type(directory).__name__}: "
                         f"{directory!r:.80}")
    directory = os.fsdecode(directory)
    if os.path.isfile(directory):
        raise ValueError(f"load_snapshots: directory {directory!r} is a file; give the "
                         "directory that ensemble.SnapshotSaver(directory, cycle_epochs) wrote")
    paths = snapshot_paths(directory) if os.path.isdir(directory) else []
    paths = [p for p in paths if os.path.isfile(p)]
    if not paths:
        raise ValueError(f"no snapshot_{{k}}.keras files in {directory!r}; train with "
                         "ensemble.SnapshotSaver(directory, cycle_epochs) first")
    models = []
    for path in paths:
        try:
            models.append(keras.saving.load_model(path, compile=compile, safe_mode=True))
        except Exception as e:  # truncated, not a zip, no config.json, bad JSON, unsafe...
            raise ValueError(f"load_snapshots: {path} is not a readable .keras model "
                             f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); delete it "
                             "or train the snapshots again") from e
    return models
