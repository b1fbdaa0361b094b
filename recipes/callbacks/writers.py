"""Artifact writers: the callbacks that put a run's epochs on disk, each file atomically.

``HistoryCSV`` (``history.csv``, one row per epoch), ``RecordsWriter`` (the monitors'
per-layer records, ``update_ratios.json``, ``activation_stats.json`` and
``gradient_norms.json``), ``AtomicBackupAndRestore`` (``backup/``, so a killed run resumes)
and ``BestModelCheckpoint`` (``best.keras``). They write what the callbacks before them put
into ``logs``, so they come after those in the list; and the backup comes after the history
and the records, so that once it says "epoch k done", epoch k's row and records are on disk
(``recipes.callbacks.build_callbacks`` keeps that order).

Every epoch's writes cost a fixed ~30-60 ms on CPU (an HDF5 backup, a ``.keras`` zip, a CSV
and JSON files, each through a rename): nothing beside an epoch of minutes, but as much as
the training itself on a small network whose epochs take a tenth of a second. A
:class:`SaveClock` placed before the writers spaces their writes out in time: they write
together at the end of an epoch once ``every_seconds`` have passed since the last write (and
always at the end of training), so a kill loses at most that long or one epoch, whichever is
more. Keras's own ``BackupAndRestore`` offers only a count of epochs or batches.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from recipes import io
from recipes.callbacks import gradients, monitors

__all__ = ["AtomicBackupAndRestore", "BestModelCheckpoint", "HistoryCSV", "RecordsWriter",
           "SaveClock", "checkpoint_bytes", "first_loss", "save_monitor_records", "write_records"]


def checkpoint_bytes(model: keras.Model) -> int:
    """About the size of ``model.keras`` for this model: weights and two optimizer slots."""
    return 3 * 4 * sum(int(np.prod(v.shape)) for v in model.weights) + (64 << 10)


def first_loss(history_path: str) -> float | None:
    """The first epoch's loss of a run being resumed, as ExplosionGuard's reference.

    Args:
        history_path: the run's ``history.csv`` (written by :class:`HistoryCSV`).

    Returns:
        Its first row's ``loss``; None without the file, a row or a loss.
    """
    if not os.path.exists(history_path):
        return None
    rows = io.read_csv(history_path)
    return float(rows[0]["loss"]) if rows and rows[0].get("loss") else None


# -- when to write ---------------------------------------------------------------------------

class SaveClock(keras.callbacks.Callback):
    """Decides, at each epoch's end, whether the writers after it write (see the module doc).

    Args:
        every_seconds: the least time between two writes; 0 writes after every epoch.
        clock: the time source (``time.monotonic``; tests pass a fake one).

    Attributes:
        due: True from this epoch's end until the next epoch's: the writers write now.
    """

    def __init__(self, every_seconds: float = 0.0, clock=time.monotonic):
        super().__init__()
        if not math.isfinite(float(every_seconds)) or float(every_seconds) < 0:
            raise ValueError(f"SaveClock every_seconds must be >= 0, got {every_seconds}")
        self.every, self.clock = float(every_seconds), clock
        self.due, self._last = True, 0.0

    def on_train_begin(self, logs=None):
        self._last, self.due = self.clock(), True

    def on_epoch_end(self, epoch, logs=None):
        last_epoch = epoch + 1 >= int((self.params or {}).get("epochs") or 0)
        self.due = last_epoch or self.clock() - self._last >= self.every
        if self.due:
            self._last = self.clock()


def _due(clock: SaveClock | None) -> bool:
    return clock is None or clock.due


# -- history and records --------------------------------------------------------------------

class HistoryCSV(keras.callbacks.Callback):
    """Writes ``history.csv`` atomically after every epoch, keeping rows across a resume.

    Keras's ``CSVLogger`` appends line by line (a kill can leave half a line) and, on a
    resumed run, cannot drop rows of epochs that are re-run; this rewrites the whole file
    through a rename and keys rows by epoch. With a ``clock`` (:class:`SaveClock`) it
    writes when the clock says so and at the end of training.
    """

    def __init__(self, path: str, clock: SaveClock | None = None):
        super().__init__()
        self.path, self.clock = path, clock
        self.rows: list[dict[str, Any]] = []
        self._pending = False

    def on_train_begin(self, logs=None):
        self.rows = io.read_csv(self.path) if os.path.exists(self.path) else []
        for n, row in enumerate(self.rows, start=2):  # line 1 is the header
            if None in row or None in row.values() or not str(row.get("epoch", "")).isdigit():
                raise ValueError(f"history {self.path} is corrupt or half-written (line {n}; "
                                 "an older version appended to it in place); move it away "
                                 "or use a new workdir")

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        self.rows = [r for r in self.rows if int(r["epoch"]) <= epoch] + [row]
        self._pending = True
        if _due(self.clock):
            self._write()

    def on_train_end(self, logs=None):
        if self._pending:
            self._write()

    def _write(self) -> None:
        columns: list[str] = []
        for r in self.rows:
            columns += [k for k in r if k not in columns]
        io.write_csv(self.path, self.rows, columns)
        self._pending = False


class RecordsWriter(keras.callbacks.Callback):
    """Saves the monitors' records after every epoch, so a killed run keeps its epochs.

    Args:
        workdir: the run's directory (see :func:`save_monitor_records`).
        cbs: the run's callback list itself, read at each epoch end (so it may still grow
            after this writer is made).
        clock: when to write (:class:`SaveClock`; None: after every epoch); it always
            writes at the end of training.
    """

    def __init__(self, workdir: str, cbs: list[keras.callbacks.Callback],
                 clock: SaveClock | None = None):
        super().__init__()
        self.workdir, self.cbs, self.clock = workdir, cbs, clock  # cbs: the run's own list
        self._pending = False

    def on_epoch_end(self, epoch, logs=None):
        self._pending = True
        if _due(self.clock):
            self.on_train_end()

    def on_train_end(self, logs=None):
        if self._pending:
            save_monitor_records(self.cbs, self.workdir)
            self._pending = False


def write_records(path: str, records: list[dict[str, Any]]) -> None:
    """Writes a monitor's per-epoch records, keeping a resumed run's earlier epochs.

    Args:
        path: the JSON file (a list of records).
        records: this ``fit``'s records, each with its 1-based ``epoch``; the file's records
            of earlier epochs are kept, those of re-run epochs replaced.
    """
    first = min((r["epoch"] for r in records), default=None)
    old = io.read_json(path, what="monitor records") if os.path.exists(path) else []
    kept = [r for r in old if first is not None and r.get("epoch", first) < first]
    io.write_json(path, kept + list(records) if first is not None else old)


def save_monitor_records(cbs: list[keras.callbacks.Callback], workdir: str) -> str | None:
    """Writes the monitors' per-layer records for the report; returns a stop reason.

    Args:
        cbs: the run's callbacks; ``UpdateRatioMonitor`` records go to
            ``workdir/update_ratios.json``, ``ActivationMonitor`` ones to
            ``workdir/activation_stats.json``, ``GradientNormMonitor`` ones to
            ``workdir/gradient_norms.json``.
        workdir: the run's directory.

    Returns:
        The reason of an ``ExplosionGuard`` that stopped the run, else None.
    """
    reason = None
    for cb in cbs:
        if isinstance(cb, monitors.UpdateRatioMonitor):
            write_records(os.path.join(workdir, "update_ratios.json"), cb.records)
        elif isinstance(cb, monitors.ActivationMonitor):
            write_records(os.path.join(workdir, "activation_stats.json"), cb.records)
        elif isinstance(cb, gradients.GradientNormMonitor):
            write_records(os.path.join(workdir, "gradient_norms.json"), cb.records)
        elif isinstance(cb, monitors.ExplosionGuard) and cb.stopped:
            reason = cb.reason
    return reason


# -- checkpoints ----------------------------------------------------------------------------

class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` whose backup a SIGKILL cannot corrupt, and that keeps workers in step.

    Keras writes ``latest.weights.h5`` in place and then the epoch in a second file: a kill
    mid-write leaves an unreadable HDF5 file (every rerun then crashes), and a kill between
    the two leaves weights and epoch out of step. Here each epoch's weights go atomically to
    their own file, then ``training_metadata.json`` (atomically) names it and the epoch
    before; weights older than those two are deleted only after that.

    Under ``MultiWorkerMirroredStrategy`` each worker backs up into its own directory, and a
    kill can land after one worker has saved epoch k and before another has: restarted as
    they are, they would run different epochs and break each other's collectives. On
    restore the workers gather their latest epochs and all resume from the oldest (one
    worker can be at most one epoch ahead, since every step is a collective).

    With a ``clock`` (:class:`SaveClock`), an epoch's end backs up only when the clock says
    so, and the end of training backs up an epoch not yet saved. Keep it None under
    ``MultiWorkerMirroredStrategy``: every worker must back up the same epochs.
    """

    def __init__(self, backup_dir: str, *, clock: SaveClock | None = None, **kwargs: Any):
        super().__init__(backup_dir, **kwargs)
        self.clock, self._pending = clock, False

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch, self._last_batch_seen = epoch + 1, 0
        self._pending = True
        if _due(self.clock):
            self._save_model()

    def on_train_end(self, logs=None):
        if self._pending and not self.delete_checkpoint:
            self._save_model()
        super().on_train_end(logs)

    def _save_model(self):
        self._pending = False
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch{self._current_epoch:05d}.weights.h5"
        path = os.path.join(self.backup_dir, name)
        io.write_with(path, lambda tmp: self.model.save_weights(tmp, overwrite=True),
                      suffix=".weights.h5", need=checkpoint_bytes(self.model) // 3 + (64 << 10))
        old = self._metadata()
        if not old:
            previous = None
        elif old["weights"] == name:  # epoch re-run after a restore from the one before
            previous = old.get("previous")
        else:
            previous = {"epoch": old["epoch"], "weights": old["weights"]}
        io.write_json(self._training_metadata_path, {"epoch": self._current_epoch,
                                                     "batch": self._last_batch_seen,
                                                     "weights": name, "previous": previous})
        keep = {name, previous["weights"] if previous else name}
        for f in os.listdir(self.backup_dir):
            if f.endswith(".weights.h5") and f not in keep and not f.startswith("."):
                os.remove(os.path.join(self.backup_dir, f))

    def _metadata(self) -> dict[str, Any] | None:
        if not os.path.exists(self._training_metadata_path):
            return None
        meta = io.read_json(self._training_metadata_path, what="backup")
        if "weights" not in meta:
            raise ValueError(f"{self.backup_dir} is an older backup format; move it away "
                             "(training restarts from epoch 1)")
        return meta

    def _load_model(self):
        meta = self._metadata()
        saved = {0: None}  # epoch -> weights file; epoch 0 is the initial weights
        if meta:
            saved[meta["epoch"]] = meta["weights"]
            if meta.get("previous"):
                saved[meta["previous"]["epoch"]] = meta["previous"]["weights"]
        epoch = max(saved)
        strategy = self.model.distribute_strategy
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            epoch = _oldest_epoch_of_all_workers(strategy, epoch)
            if epoch not in saved:
                raise ValueError(f"{self.backup_dir} holds epochs {sorted(saved)}, but another "
                                 f"worker's backup is at epoch {epoch}; move every worker's "
                                 "backup directory away (training restarts from epoch 1)")
            saved = {e: w for e, w in saved.items() if e <= epoch}
        if saved[epoch] is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model._initial_epoch = self._load_newest_readable(saved)

    def _load_newest_readable(self, saved: dict[int, str | None]) -> int:
        """Loads the newest backup that reads back; an unreadable newest falls back once.

        Returns:
            The epoch loaded.

        Raises:
            ValueError: every kept backup is unreadable, naming the files and the fix.
        """
        errors = []
        for epoch in sorted((e for e in saved if saved[e]), reverse=True):
            path = os.path.join(self.backup_dir, saved[epoch])
            try:
                self.model.load_weights(path)
            except Exception as e:  # noqa: BLE001 - h5py/Keras raise many types on damage
                errors.append(f"{path} ({type(e).__name__}: {' '.join(str(e).split())[:120]})")
                continue
            if errors:
                print(f"warning: the newest backup is unreadable: {errors[0]}; resuming from "
                      f"epoch {epoch} instead", file=sys.stderr, flush=True)
            return epoch
        raise ValueError(f"every backup in {self.backup_dir} is unreadable: "
                         f"{'; '.join(errors)}; move {self.backup_dir} away to restart "
                         "training from epoch 1")


def _oldest_epoch_of_all_workers(strategy: tf.distribute.Strategy, epoch: int) -> int:
    """The smallest of every worker's ``epoch`` (a collective: all workers must call it)."""
    mine = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant([epoch], tf.int64))
    return int(tf.reduce_min(strategy.gather(mine, axis=0)).numpy())


class BestModelCheckpoint(keras.callbacks.Callback):
    """Keeps the best model by a validation metric in ``path``, written atomically.

    CS231n "Neural Networks 3": keep the checkpoint with the best validation performance.
    Keras's ``ModelCheckpoint(save_best_only=True)`` writes the file in place (a kill can
    leave half a file) and forgets the best value when a run resumes; this one replaces
    the file through a rename and reads the best value so far from ``history.csv``.
    With a ``clock`` (:class:`SaveClock`), a best epoch between two writes is kept in
    memory (a copy of its weights) and written at the next one, or at the end of training.

    Args:
        path: the ``.keras`` file.
        monitor: a metric in the epoch logs, e.g. ``"val_accuracy"`` or ``"val_loss"``.
        history_path: the run's ``history.csv``, to recover the best value after a resume.
        clock: when to write (None: at every epoch that improves).
    """

    def __init__(self, path: str, monitor: str = "val_accuracy", history_path: str = "",
                 clock: SaveClock | None = None):
        super().__init__()
        self.path, self.monitor, self.history_path = path, monitor, history_path
        self.clock = clock
        self.mode_max = "loss" not in monitor
        self.best = -math.inf if self.mode_max else math.inf
        self.best_epoch = 0
        self._pending: list[np.ndarray] | None = None  # the best weights not yet written

    def _better(self, value: float) -> bool:
        return value > self.best if self.mode_max else value < self.best

    def on_train_begin(self, logs=None):
        if self.history_path and os.path.exists(self.history_path):
            for row in io.read_csv(self.history_path):
                value = row.get(self.monitor, "")
                if value not in ("", None) and self._better(float(value)):
                    self.best, self.best_epoch = float(value), int(row["epoch"])

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        improved = (value is not None and math.isfinite(float(value))
                    and self._better(float(value)))
        if improved:
            self.best, self.best_epoch = float(value), epoch + 1
        if improved and _due(self.clock):
            self._pending = None
            self._save()
        elif improved:
            self._pending = self.model.get_weights()
        elif self._pending is not None and _due(self.clock):
            self.on_train_end()

    def on_train_end(self, logs=None):
        if self._pending is None:
            return
        now = self.model.get_weights()
        self.model.set_weights(self._pending)
        try:
            self._save()
        finally:
            self.model.set_weights(now)
            self._pending = None

    def _save(self) -> None:
        io.write_with(self.path, self.model.save, suffix=".keras",
                      need=checkpoint_bytes(self.model))
