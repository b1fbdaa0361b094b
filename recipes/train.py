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

from recipes import callbacks as bcallbacks
from recipes import cli, configs, io, tta
from recipes import data as data_lib
from recipes import workdir as wd
from recipes.callbacks.progress import ReadableProgbar
from recipes.callbacks.writers import (  # noqa: F401 - recipes.train.HistoryCSV & co. too
    AtomicBackupAndRestore,
    HistoryCSV,
    checkpoint_bytes,
)
from recipes.prepare import (  # noqa: F401 - recipes.train.prepare & co. keep working
    Prepared,
    jit_compile,
    prepare,
    set_op_determinism,
)

#: Fields that may differ between a run and its resumption (they change no result).
_RESUME_IGNORED = (("train", "verbose"),)


def run(config: Any, workdir: str, *, model: Any = None, data: Any = None,
        splits: data_lib.Splits | None = None, overwrite: bool = False,
        extra_callbacks: list | None = None, test: bool = True) -> dict[str, Any]:
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
        model: the user's network instead of ``model.arch``: a ``keras.Model`` (compiled or
            not; trained as a fresh copy, ``keras.models.clone_model``) or a function
            returning one. Its compiled loss and optimizer class are kept for the fields
            ``config`` does not name (``recipes.prepare.resolve``).
        data: the user's data instead of ``config.dataset``: ``(x, y)``,
            ``(x_train, y_train, x_test, y_test)``, a pair of ``tf.data`` datasets
            ``(train, test)`` or ``recipes.data.Splits``.
        splits: already-loaded ``Splits`` (the older name of ``data``).
        overwrite: replace what ``workdir`` holds once this run has finished.
        extra_callbacks: more Keras callbacks for ``fit`` (e.g. from ``recipes.babysit``).
        test: evaluate the test split (False: a run that chooses between models, such as
            a repair round, must not look at it; ``recipes.babysit`` evaluates the chosen
            model once, at the end).

    Returns:
        The summary (also written to ``summary.json``).

    Raises:
        ValueError: a bad config field, bad data, or a workdir that cannot be used (nothing
            is written then); ``recipes.workdir.WorkdirBusy`` when another process runs in it.
        OSError: a write failed (disk full), naming the file; the last epoch stays resumable.
    """
    start = time.time()
    p = prepare(config, model=model, data=data, splits=splits)
    cfg = p.config
    check_workdir(workdir, cfg, overwrite=overwrite)
    wd.check_space(workdir, checkpoint_bytes(p.model) + _SPACE_MARGIN, "a checkpoint")
    _callbacks(p, workdir, os.path.join(workdir, "history.csv"), extra_callbacks or [])
    with wd.locked(workdir):
        wd.recover(workdir)  # what a replacement killed mid-swap left behind
        check_workdir(workdir, cfg, overwrite=overwrite)  # it may have changed meanwhile
        if overwrite and wd.holds_files(workdir) and not holds_run(workdir, cfg):
            can_continue = lambda d: holds_run(d, cfg, finished_too=True)  # noqa: E731
            with wd.replacing(workdir, can_continue=can_continue) as d:
                summary = _train_in(p, d, extra_callbacks or [], start, shown=workdir,
                                    test=test)
        else:
            summary = _train_in(p, workdir, extra_callbacks or [], start, shown=workdir,
                                test=test)
    return summary


_SPACE_MARGIN = 1 << 20  # history, plots, TensorBoard events of a short run


def holds_run(directory: str, cfg: ml_collections.ConfigDict, *, finished_too: bool = False,
              ignored: tuple[tuple[str, str], ...] = ()) -> bool:
    """Whether ``directory`` holds a run of ``cfg``, unfinished (or finished too).

    The saved ``config.json`` is completed with today's defaults first (a field added since
    it was written is not a difference); ``ignored`` ``(branch, field)`` pairs and
    ``train.verbose`` are left out of the comparison.
    """
    ignored = _RESUME_IGNORED + tuple(ignored)

    def same(old: Any) -> bool:
        old = configs.complete(old).to_dict()  # raises ValueError for a tree it cannot take
        return _comparable(old, ignored) == _comparable(cfg.to_dict(), ignored)

    return wd.holds_run(directory, "config.json", "summary.json", same,
                        finished_too=finished_too)


def _train_in(p: Prepared, workdir: str, extra: list, start: float, *, shown: str,
              test: bool = True) -> dict[str, Any]:
    """The run itself, in ``workdir`` (the user's, or a staged replacement of ``shown``)."""
    cfg = p.config
    summary_path = os.path.join(workdir, "summary.json")
    if os.path.exists(summary_path):  # a staged replacement finished, killed before its swap
        return io.read_json(summary_path, what="summary")
    history_path = os.path.join(workdir, "history.csv")
    cbs = _callbacks(p, workdir, history_path, extra)
    io.remove_stale_temps(workdir)  # a SIGKILLed attempt's half-written files
    io.write_json(os.path.join(workdir, "config.json"),
                  {**cfg.to_dict(), configs.ORIGINS: p.origins})
    p.preprocessor.save(workdir)
    fit_start = time.time()
    p.model.fit(p.train_ds, validation_data=p.val_ds, epochs=cfg.train.epochs,
                callbacks=cbs, verbose=cfg.train.verbose, shuffle=False)  # tf.data shuffles
    fit_seconds = time.time() - fit_start

    rows = io.read_csv(history_path) if os.path.exists(history_path) else []
    exploded = bcallbacks.save_monitor_records(cbs, workdir)
    restored = _restore_best(p, cbs, len(rows))
    summary = _summarize(p, rows, fit_seconds=fit_seconds, test=test)
    summary.update(restore_best=bool(cfg.train.restore_best), best_epoch=restored)
    if exploded:
        summary["stopped_reason"] = exploded
    save_model(p.model, os.path.join(workdir, "model.keras"))
    summary["total_seconds"] = round(time.time() - start, 2)
    io.write_json(summary_path, summary)
    shutil.rmtree(os.path.join(workdir, "backup"), ignore_errors=True)
    if cfg.train.verbose:
        split = "test" if test and "test_accuracy" in summary else "val"
        kept = f" (epoch {restored}'s weights kept)" if restored else ""
        print(f"{split} accuracy {summary[f'{split}_accuracy']:.4f} (loss "
              f"{summary[f'{split}_loss']:.4f}) after {summary['epochs']} epochs in "
              f"{summary['fit_seconds']:.1f} s{kept}; artifacts in {shown}")
        if cfg.monitor.tensorboard:
            print(f"curves: tensorboard --logdir {os.path.abspath(shown)}/tensorboard")
        print(f"next:   python -m recipes.predict --workdir={shown} --input=INPUTS "
              "--out=predictions.csv")
    return summary


def _restore_best(p: Prepared, cbs: list, epochs: int) -> int:
    """Loads the best validation epoch's weights when ``train.restore_best`` asks for them.

    CS231n "Neural Networks 3": keep the checkpoint with the best validation accuracy
    (Keras' ``EarlyStopping(restore_best_weights=True)`` without the stop). The weights
    come from ``best.keras``, written by ``BestModelCheckpoint``, so a resumed run restores
    the best epoch of all its attempts.

    Returns:
        The restored epoch (1-based), or 0 when the last epoch's weights are kept.
    """
    best = next((cb for cb in cbs if isinstance(cb, bcallbacks.BestModelCheckpoint)), None)
    if not p.config.train.restore_best or best is None or not best.best_epoch \
            or best.best_epoch >= epochs or not os.path.exists(best.path):
        return 0
    p.model.load_weights(best.path)
    return int(best.best_epoch)


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
    callbacks, the momentum schedule and the optimizer switch:
    ``recipes.callbacks.build_callbacks`` without a workdir.

    Raises:
        ValueError: ``optimizer.switch_to`` names no optimizer.
    """
    return bcallbacks.build_callbacks(p.config, steps_per_epoch=p.steps_per_epoch,
                                      epoch_seed=p.epoch_seed)


def _callbacks(p: Prepared, workdir: str, history_path: str,
               extra: list[keras.callbacks.Callback]) -> list[keras.callbacks.Callback]:
    """The run's callbacks, in ``recipes.callbacks.build_callbacks``'s order."""
    probe_x, probe_y = _probe(p)
    cbs = bcallbacks.build_callbacks(
        p.config, steps_per_epoch=p.steps_per_epoch, epoch_seed=p.epoch_seed,
        workdir=workdir, probe_x=probe_x, probe_y=probe_y,
        input_shape=p.splits.info.input_shape,
        initial_loss=bcallbacks.first_loss(history_path), has_val=p.val_ds is not None,
        tta_eval=_tta_eval(p), extra=extra)
    return [*cbs, ReadableProgbar()]  # last: it shows what the others wrote, readably


def _tta_eval(p: Prepared) -> tta.CropAveragingEval | None:
    """The crop-averaged validation every ``evaluate.tta_every`` epochs, if asked for."""
    e = p.config.evaluate
    if e.tta == "none" or not e.tta_every or not len(p.splits.val):
        return None
    return tta.CropAveragingEval(p.splits.val.x, p.splits.val.y, e.tta, every=e.tta_every,
                                 grid=e.grid, from_logits=p.task.from_logits,
                                 transform=p.preprocessor.transform)


def _probe(p: Prepared, size: int = 256) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A fixed validation batch as the model sees it, with its targets in the loss's form.

    ``ActivationMonitor`` reads the inputs; ``GradientNormMonitor`` needs the targets too.
    """
    m = p.config.monitor
    if not (m.activations_every or m.gradient_norms_every):
        return None, None
    split = p.splits.val if len(p.splits.val) else p.splits.train
    batches = list(p.dataset(split.x[:size], split.y[:size], training=False))
    return (np.concatenate([x.numpy() for x, _ in batches]),
            np.concatenate([y.numpy() for _, y in batches]))


def _summarize(p: Prepared, rows: list[dict[str, str]], *, fit_seconds: float,
               test: bool = True) -> dict[str, Any]:
    """Evaluates train (without augmentation), val and test, and gathers the run's facts."""
    cfg, splits = p.config, p.splits
    summary: dict[str, Any] = {}
    for name, split in (("train", splits.train), ("val", splits.val)):
        if not len(split):
            continue
        scores = p.model.evaluate(p.dataset(split.x, split.y, training=False), verbose=0,
                                  return_dict=True)
        summary[f"{name}_loss"] = float(scores["loss"])
        summary[f"{name}_accuracy"] = float(scores["accuracy"])
    if test:
        summary.update(test_scores(p))
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
        task=p.task.describe(),
        class_names=list(splits.info.class_names),  # output i is class_names[i]
        num_train=len(splits.train), num_val=len(splits.val), num_test=len(splits.test),
    )
    return summary


def test_scores(p: Prepared) -> dict[str, Any]:
    """``p.model`` on the test split: accuracy and loss, crop-averaged too when asked for.

    Returns:
        ``test_accuracy``, ``test_loss`` and, with ``evaluate.tta``, ``test_tta_accuracy``,
        ``test_tta_loss`` and ``tta_mode``; empty without a test split.
    """
    split, out = p.splits.test, {}
    if not len(split):
        return out
    scores = p.model.evaluate(p.dataset(split.x, split.y, training=False), verbose=0,
                              return_dict=True)
    out.update(test_loss=float(scores["loss"]), test_accuracy=float(scores["accuracy"]))
    if p.config.evaluate.tta != "none":
        scores = _tta_scores(p, split)
        out.update(test_tta_accuracy=scores["accuracy"], test_tta_loss=scores["loss"],
                   tta_mode=p.config.evaluate.tta)
    return out


_TTA_CHUNK = 1024  # images read, preprocessed and crop-averaged at once


def _tta_scores(p: Prepared, split: data_lib.Split) -> dict[str, float]:
    """Crop-averaged accuracy and loss on ``split``, read chunk by chunk (streamed sources).

    Full-size images: the preprocessors allowed with crops are per-channel, so cropping
    after preprocessing equals preprocessing the crops.
    """
    e = p.config.evaluate
    probs = [tta.predict(p.model, p.preprocessor.transform(split.x[i:i + _TTA_CHUNK]), e.tta,
                         grid=e.grid, from_logits=p.task.from_logits)
             for i in range(0, len(split), _TTA_CHUNK)]
    return tta.scores(np.concatenate(probs), split.y)


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
    cli.main_for(lambda cfg, flags: run(cfg, flags.workdir, overwrite=flags.overwrite),
                 argv if argv is not None else sys.argv, prog="recipes.train")


if __name__ == "__main__":
    main()
