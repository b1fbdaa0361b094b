"""Train one recipe end to end: data → preprocessing → tf.data → model → fit → artifacts.

The lecture's training loop as one call, ``recipes.train.run(config, workdir)``, and one
command, ``python -m recipes.train --config=NAME_OR_PATH --workdir=DIR [--config.a.b=v]``.

One run = one workdir: ``config.json``, ``history.csv`` (one row per epoch, with the ``lr``
actually used), ``summary.json``, ``model.keras`` (reloads in safe mode), ``preprocessing.*``,
``backup/`` (``keras.callbacks.BackupAndRestore``: a killed run resumes when the same command
is run again) and ``tensorboard/``. Every file is written atomically (``recipes.io``), and
nothing is written before the config, the data and the model have all been checked.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping
from typing import Any

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from recipes import callbacks as bcallbacks
from recipes import configs, data, io, monitors, optimizers, pipeline, schedules, tta
from recipes import workdir as wd
from recipes.prepare import (  # noqa: F401 - recipes.train.prepare & co. keep working
    Prepared,
    jit_compile,
    prepare,
    set_op_determinism,
)

#: Fields that may differ between a run and its resumption (they change no result).
_RESUME_IGNORED = (("train", "verbose"),)


def run(config: Any, workdir: str, *, splits: data.Splits | None = None,
        overwrite: bool = False, extra_callbacks: list | None = None) -> dict[str, Any]:
    """Trains the recipe ``config`` and writes every artifact into ``workdir``.

    Run again with the same config and workdir after a crash or kill, it resumes from the
    last finished epoch (``BackupAndRestore``). A workdir holding a finished run is never
    overwritten unless ``overwrite=True``; one holding an unfinished run of another config
    is refused. ``overwrite=True`` builds the new run beside the old one
    (``recipes.workdir.replacing``) and swaps it in only once it has finished: until then the
    old run stays whole, and a failed or killed replacement leaves it exactly as it was.
    The workdir is locked while the run goes on.

    Args:
        config: a full or partial config tree (ConfigDict or nested dict).
        workdir: the run's directory (created if missing).
        splits: already-loaded data instead of ``config.dataset``.
        overwrite: replace what ``workdir`` holds once this run has finished.
        extra_callbacks: more Keras callbacks for ``fit`` (e.g. from ``recipes.babysit``).

    Returns:
        The summary (also written to ``summary.json``).

    Raises:
        ValueError: a bad config field, bad data, or a workdir that cannot be used (nothing
            is written then); ``recipes.workdir.WorkdirBusy`` when another process runs in it.
        OSError: a write failed (disk full), naming the file; the last epoch stays resumable.
    """
    start = time.time()
    p = prepare(config, splits=splits)
    cfg = p.config
    check_workdir(workdir, cfg, overwrite=overwrite)
    wd.check_space(workdir, checkpoint_bytes(p.model) + _SPACE_MARGIN, "a checkpoint")
    _callbacks(p, workdir, os.path.join(workdir, "history.csv"), extra_callbacks or [])
    with wd.locked(workdir):
        check_workdir(workdir, cfg, overwrite=overwrite)  # it may have changed meanwhile
        if overwrite and wd.holds_files(workdir) and not holds_run(workdir, cfg):
            can_continue = lambda d: holds_run(d, cfg, finished_too=True)  # noqa: E731
            with wd.replacing(workdir, can_continue=can_continue) as d:
                summary = _train_in(p, d, extra_callbacks or [], start, shown=workdir)
        else:
            summary = _train_in(p, workdir, extra_callbacks or [], start, shown=workdir)
    return summary


_SPACE_MARGIN = 1 << 20  # history, plots, TensorBoard events of a short run


def checkpoint_bytes(model: keras.Model) -> int:
    """About the size of ``model.keras`` for this model: weights and two optimizer slots."""
    return 3 * 4 * sum(int(np.prod(v.shape)) for v in model.weights) + (64 << 10)


def holds_run(directory: str, cfg: ml_collections.ConfigDict, *, finished_too: bool = False,
              ignored: tuple[tuple[str, str], ...] = ()) -> bool:
    """Whether ``directory`` holds a run of ``cfg``, unfinished (or finished too).

    The saved ``config.json`` is completed with today's defaults first (a field added since
    it was written is not a difference); ``ignored`` ``(branch, field)`` pairs and
    ``train.verbose`` are left out of the comparison.
    """
    config_path = os.path.join(directory, "config.json")
    if not os.path.exists(config_path):
        return False
    if os.path.exists(os.path.join(directory, "summary.json")) and not finished_too:
        return False
    try:
        old = configs.complete(io.read_json(config_path, what="config")).to_dict()
    except ValueError:
        return False
    ignored = _RESUME_IGNORED + tuple(ignored)
    return _comparable(old, ignored) == _comparable(cfg.to_dict(), ignored)


def _train_in(p: Prepared, workdir: str, extra: list, start: float, *, shown: str
              ) -> dict[str, Any]:
    """The run itself, in ``workdir`` (the user's, or a staged replacement of ``shown``)."""
    cfg = p.config
    summary_path = os.path.join(workdir, "summary.json")
    if os.path.exists(summary_path):  # a staged replacement finished, killed before its swap
        return io.read_json(summary_path, what="summary")
    history_path = os.path.join(workdir, "history.csv")
    cbs = _callbacks(p, workdir, history_path, extra)
    io.remove_stale_temps(workdir)  # a SIGKILLed attempt's half-written files
    io.write_json(os.path.join(workdir, "config.json"), cfg.to_dict())
    p.preprocessor.save(workdir)
    fit_start = time.time()
    p.model.fit(p.train_ds, validation_data=p.val_ds, epochs=cfg.train.epochs,
                callbacks=cbs, verbose=cfg.train.verbose, shuffle=False)  # tf.data shuffles
    fit_seconds = time.time() - fit_start

    rows = io.read_csv(history_path) if os.path.exists(history_path) else []
    exploded = _save_monitor_records(cbs, workdir)
    summary = _summarize(p, rows, fit_seconds=fit_seconds)
    if exploded:
        summary["stopped_reason"] = exploded
    save_model(p.model, os.path.join(workdir, "model.keras"))
    summary["total_seconds"] = round(time.time() - start, 2)
    io.write_json(summary_path, summary)
    shutil.rmtree(os.path.join(workdir, "backup"), ignore_errors=True)
    if cfg.train.verbose:
        print(f"test accuracy {summary['test_accuracy']:.4f} (loss {summary['test_loss']:.4f}) "
              f"after {summary['epochs']} epochs in {summary['fit_seconds']:.1f} s; "
              f"artifacts in {shown}")
    return summary


def save_model(model: keras.Model, path: str) -> None:
    """Saves ``model`` to the ``.keras`` file ``path`` atomically, if the disk has room.

    Raises:
        OSError: not enough space (checked first: h5py can crash, not raise, on a full
            disk) or the write failed, naming ``path``; the old file stays as it was.
    """
    io.write_with(path, model.save, suffix=".keras", need=checkpoint_bytes(model))


def config_callbacks(p: Prepared) -> list[keras.callbacks.Callback]:
    """The callbacks the config asks for that write no files (shared with ``tuning``).

    The epoch-keyed data order (``EpochSeed``), the lr logger, the ``plateau`` schedule's
    callbacks, the momentum schedule and the optimizer switch.

    Raises:
        ValueError: ``optimizer.switch_to`` names no optimizer.
    """
    cfg, o = p.config, p.config.optimizer
    cbs: list[keras.callbacks.Callback] = [p.epoch_seed, bcallbacks.LearningRateLogger()]
    cbs += schedules.callbacks(cfg.schedule, learning_rate=o.learning_rate,
                               steps_per_epoch=p.steps_per_epoch)
    if o.momentum_epochs:
        end = o.beta_1 if o.name in ("adam", "adamw") else o.momentum
        cbs.append(bcallbacks.MomentumSchedule(o.momentum_start, end, o.momentum_epochs))
    if o.switch_to:
        if o.switch_to not in optimizers.NAMES:
            raise ValueError(f"optimizer.switch_to={o.switch_to!r} is not an optimizer; use one "
                             f"of {list(optimizers.NAMES)}, or '' for no switch")
        to = dict(o.to_dict(), name=o.switch_to)
        cbs.append(bcallbacks.SwitchOptimizer(o.switch_epoch, to,
                                              learning_rate=o.switch_learning_rate or None))
    return cbs


def _callbacks(p: Prepared, workdir: str, history_path: str,
               extra: list[keras.callbacks.Callback]) -> list[keras.callbacks.Callback]:
    """The run's callbacks, in order: those that write into ``logs`` come before the writers."""
    cfg = p.config
    cbs = config_callbacks(p)
    cbs += monitors.callbacks(cfg.monitor, probe_x=_probe(p), workdir=workdir,
                              input_shape=p.splits.info.input_shape,
                              initial_loss=_first_loss(history_path))
    cbs += [keras.callbacks.TerminateOnNaN(), *extra]
    # The writers come before the backup: once the backup says "epoch k done", epoch k's row
    # and records are on disk. The backup outlives fit (removed once summary.json is
    # written): a run killed in the final evaluation or save resumes there, not at epoch 1.
    cbs += [HistoryCSV(history_path), _RecordsWriter(workdir, cbs),
            AtomicBackupAndRestore(os.path.join(workdir, "backup"), delete_checkpoint=False)]
    if p.val_ds is not None:
        cbs.append(bcallbacks.BestModelCheckpoint(os.path.join(workdir, "best.keras"),
                                                  "val_accuracy", history_path))
    if cfg.evaluate.tta != "none" and cfg.evaluate.tta_every and len(p.splits.val):
        x_val = p.preprocessor.transform(p.splits.val.x)
        cbs.insert(2, tta.CropAveragingEval(x_val, p.splits.val.y, cfg.evaluate.tta,
                                            every=cfg.evaluate.tta_every, grid=cfg.evaluate.grid))
    if cfg.monitor.tensorboard:
        cbs.append(keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard")))
    return cbs


def _probe(p: Prepared, size: int = 256) -> np.ndarray | None:
    """A fixed batch of validation images as the model sees them, for ActivationMonitor."""
    if not p.config.monitor.activations_every:
        return None
    split = p.splits.val if len(p.splits.val) else p.splits.train
    ds = pipeline.make(split.x[:size], split.y[:size], p.config, training=False,
                       num_classes=p.splits.info.num_classes, preprocessor=p.preprocessor)
    return np.concatenate([x.numpy() for x, _ in ds])


def _first_loss(history_path: str) -> float | None:
    """The first epoch's loss of a run being resumed, as ExplosionGuard's reference."""
    if not os.path.exists(history_path):
        return None
    rows = io.read_csv(history_path)
    return float(rows[0]["loss"]) if rows and rows[0].get("loss") else None


def _save_monitor_records(cbs: list[keras.callbacks.Callback], workdir: str) -> str | None:
    """Writes the monitors' per-layer records for the report; returns a stop reason."""
    reason = None
    for cb in cbs:
        if isinstance(cb, monitors.UpdateRatioMonitor):
            _write_records(os.path.join(workdir, "update_ratios.json"), cb.records)
        elif isinstance(cb, monitors.ActivationMonitor):
            _write_records(os.path.join(workdir, "activation_stats.json"), cb.records)
        elif isinstance(cb, monitors.ExplosionGuard) and cb.stopped:
            reason = cb.reason
    return reason


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
    """

    def _save_model(self):
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


class _RecordsWriter(keras.callbacks.Callback):
    """Saves the monitors' records after every epoch, so a killed run keeps its epochs."""

    def __init__(self, workdir: str, cbs: list[keras.callbacks.Callback]):
        super().__init__()
        self.workdir, self.cbs = workdir, cbs  # the run's callbacks (the same list)

    def on_epoch_end(self, epoch, logs=None):
        _save_monitor_records(self.cbs, self.workdir)


def _write_records(path: str, records: list[dict[str, Any]]) -> None:
    """Writes a monitor's per-epoch records, keeping a resumed run's earlier epochs."""
    first = min((r["epoch"] for r in records), default=None)
    old = io.read_json(path, what="monitor records") if os.path.exists(path) else []
    kept = [r for r in old if first is not None and r.get("epoch", first) < first]
    io.write_json(path, kept + list(records) if first is not None else old)


class HistoryCSV(keras.callbacks.Callback):
    """Writes ``history.csv`` atomically after every epoch, keeping rows across a resume.

    Keras's ``CSVLogger`` appends line by line (a kill can leave half a line) and, on a
    resumed run, cannot drop rows of epochs that are re-run; this rewrites the whole file
    through a rename and keys rows by epoch.
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.rows: list[dict[str, Any]] = []

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
        columns: list[str] = []
        for r in self.rows:
            columns += [k for k in r if k not in columns]
        io.write_csv(self.path, self.rows, columns)


def _summarize(p: Prepared, rows: list[dict[str, str]], *, fit_seconds: float
               ) -> dict[str, Any]:
    """Evaluates train (without augmentation), val and test, and gathers the run's facts."""
    cfg, splits = p.config, p.splits
    summary: dict[str, Any] = {}
    for name, split in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        if not len(split):
            continue
        ds = pipeline.make(split.x, split.y, cfg, training=False,
                           num_classes=splits.info.num_classes, preprocessor=p.preprocessor)
        loss, acc = p.model.evaluate(ds, verbose=0)
        summary[f"{name}_loss"] = float(loss)
        summary[f"{name}_accuracy"] = float(acc)
    if cfg.evaluate.tta != "none" and len(splits.test):
        # Full-size images: the preprocessors allowed with crops are per-channel, so
        # cropping after preprocessing equals preprocessing the crops.
        x = p.preprocessor.transform(splits.test.x)
        scores = tta.evaluate(p.model, x, splits.test.y, cfg.evaluate.tta, grid=cfg.evaluate.grid)
        summary.update(test_tta_accuracy=scores["accuracy"], test_tta_loss=scores["loss"],
                       tta_mode=cfg.evaluate.tta)
    losses_seen = [float(r["loss"]) for r in rows if r.get("loss", "") != ""]
    epochs = len(rows)
    summary.update(
        epochs=epochs,
        epochs_planned=cfg.train.epochs,
        stopped_reason=_stopped_reason(losses_seen, epochs, cfg.train.epochs),
        fit_seconds=round(fit_seconds, 2),
        seconds_per_epoch=round(fit_seconds / max(epochs, 1), 3),
        parameters=int(p.model.count_params()),
        dataset=cfg.dataset.name,
        dataset_source=splits.info.source,
        num_train=len(splits.train), num_val=len(splits.val), num_test=len(splits.test),
    )
    return summary


def _stopped_reason(losses_seen: list[float], epochs: int, planned: int) -> str:
    if any(not math.isfinite(v) for v in losses_seen):
        return "nan/inf loss"
    return "completed" if epochs >= planned else "stopped early"


def check_workdir(workdir: str, cfg: ml_collections.ConfigDict, *, overwrite: bool = False,
                  ignore_fields: tuple[tuple[str, str], ...] = ()) -> None:
    """Refuses a workdir that is a file, unwritable, finished, or another config's run.

    Args:
        workdir: the run's directory.
        cfg: the run's config.
        overwrite: a finished run may be replaced.
        ignore_fields: ``(branch, field)`` pairs left out of the comparison with an
            unfinished run's config (``recipes.babysit`` sets the learning rate itself).

    Raises:
        ValueError: the workdir cannot be used, with the fix.
    """
    wd.check_path(workdir)
    if overwrite:
        return
    if os.path.exists(os.path.join(workdir, "summary.json")):
        raise ValueError(f"--workdir {workdir} already holds a finished run (summary.json); "
                         "use a new workdir, or --overwrite to replace it (the old run stays "
                         "until the new one has finished)")
    config_path = os.path.join(workdir, "config.json")
    if os.path.exists(config_path):
        io.read_json(config_path, what="config")  # a corrupt file is named as such
        if not holds_run(workdir, cfg, finished_too=True, ignored=tuple(ignore_fields)):
            raise ValueError(f"--workdir {workdir} holds an unfinished run of another config; "
                             "rerun with the same config to resume it, use a new workdir, or "
                             "--overwrite to replace it")


def _comparable(tree: Mapping[str, Any], ignored: tuple[tuple[str, str], ...]) -> str:
    tree = json.loads(json.dumps(tree, default=list))  # tuples → lists, deep copy
    for branch, field in ignored:
        tree.get(branch, {}).pop(field, None)
    return json.dumps(tree, sort_keys=True)


def main(argv: list[str] | None = None) -> None:
    """``python -m recipes.train``: see ``recipes.cli``."""
    from recipes import cli

    cli.main_for(lambda cfg, flags: run(cfg, flags.workdir, overwrite=flags.overwrite),
                 argv if argv is not None else sys.argv, prog="recipes.train")


if __name__ == "__main__":
    main()
