"""``build_callbacks``: the run's callbacks from the config tree, in the one order that works.

Callbacks see an epoch's ``logs`` one after another, in list order, so the order is part
of the result:

1. the data order (``EpochSeed``) and what the optimizer uses: ``LearningRateLogger``
   (before ``ReduceLROnPlateau``, so that a row shows the rate its epoch ran with),
   ``AveragedWeights`` (``optimizer.ema``: the averaged weights in the model from each
   epoch's validation to the next epoch), the crop-averaging evaluation, the schedule's
   callbacks, ``MomentumCycle`` (one_cycle, triangular), ``MomentumSchedule``,
   ``SwitchOptimizer``;
2. the monitors, ``TerminateOnNaN`` and the caller's extra callbacks: all write into
   ``logs`` or stop the run;
3. the writers, which read those ``logs``: ``HistoryCSV`` and ``RecordsWriter`` before
   ``AtomicBackupAndRestore``, so that once the backup says "epoch k done", epoch k's row
   and records are on disk (a killed run then resumes bit for bit); then
   ``BestModelCheckpoint`` and ``TensorBoard``. A ``SaveClock`` before them
   (``train.save_every_seconds``) spaces their writes out in time on short epochs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import ml_collections

from recipes import optimizers, schedules
from recipes.callbacks import monitors, writers
from recipes.callbacks.optimizer import (
    AveragedWeights,
    LearningRateLogger,
    MomentumCycle,
    MomentumSchedule,
    SwitchOptimizer,
)

__all__ = ["build_callbacks"]


def build_callbacks(cfg: ml_collections.ConfigDict, *, steps_per_epoch: int,
                    epoch_seed: keras.callbacks.Callback | None = None,
                    workdir: str | None = None, probe_x: Any = None, probe_y: Any = None,
                    input_shape: Sequence[int] | None = None,
                    initial_loss: float | None = None, has_val: bool = False,
                    tta_eval: keras.callbacks.Callback | None = None,
                    extra: Sequence[keras.callbacks.Callback] = ()
                    ) -> list[keras.callbacks.Callback]:
    """The callbacks a run of ``cfg`` gives ``fit``, in order (see the module docstring).

    Args:
        cfg: the full config tree (``optimizer``, ``schedule`` and ``monitor`` are read).
        steps_per_epoch: optimizer steps per epoch (for the schedule's callbacks).
        epoch_seed: the pipeline's epoch-keyed data order (``recipes.pipeline.EpochSeed``),
            first in the list; None leaves it out.
        workdir: the run's directory. None: only group 1 above, the callbacks that write
            no files (what a search trial adds its own guard to); the other arguments
            below are then not used.
        probe_x: the fixed probe batch for ``ActivationMonitor`` (needed when
            ``monitor.activations_every`` > 0) and ``GradientNormMonitor``.
        probe_y: the probe's targets as the compiled loss takes them (sparse or one-hot,
            from the same pipeline batch), for ``GradientNormMonitor``
            (``monitor.gradient_norms_every`` > 0; left out with a warning without them).
        input_shape: ``(H, W, C)`` for Dense first-layer images (None: the model's input).
        initial_loss: ``ExplosionGuard``'s original loss for a resumed run
            (:func:`recipes.callbacks.writers.first_loss` of its ``history.csv``).
        has_val: there is a validation split: keep ``workdir/best.keras`` by
            ``val_accuracy``.
        tta_eval: a callback writing ``val_tta_*`` into the logs
            (``recipes.tta.CropAveragingEval``), placed after ``LearningRateLogger``.
        extra: the caller's callbacks, after the monitors and before the writers.

    Returns:
        A new list of callbacks.

    Raises:
        ValueError: ``optimizer.switch_to`` names no optimizer, or a monitor lacks what it
            needs (``probe_x``).
    """
    cbs = _training_callbacks(cfg, steps_per_epoch, epoch_seed, tta_eval)
    if workdir is None:
        return cbs
    history_path = os.path.join(workdir, "history.csv")
    cbs += monitors.monitor_callbacks(cfg.monitor, probe_x=probe_x, probe_y=probe_y,
                                      workdir=workdir, input_shape=input_shape,
                                      initial_loss=initial_loss)
    cbs += [keras.callbacks.TerminateOnNaN(), *extra]
    # The writers come before the backup: once the backup says "epoch k done", epoch k's row
    # and records are on disk. The backup outlives fit (the run removes it once summary.json
    # is written): a run killed in the final evaluation or save resumes there, not at epoch 1.
    clock = _save_clock(cfg)
    cbs += [*([clock] if clock else []), writers.HistoryCSV(history_path, clock),
            writers.RecordsWriter(workdir, cbs, clock),
            writers.AtomicBackupAndRestore(os.path.join(workdir, "backup"), clock=clock,
                                           delete_checkpoint=False)]
    if has_val:
        cbs.append(writers.BestModelCheckpoint(os.path.join(workdir, "best.keras"),
                                               "val_accuracy", history_path, clock))
    if cfg.monitor.tensorboard:
        cbs.append(keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard")))
    return cbs


def _save_clock(cfg: ml_collections.ConfigDict) -> writers.SaveClock | None:
    """The writers' clock (``train.save_every_seconds``); None: write after every epoch.

    Under ``multi_worker`` every worker must back up the same epochs, so there is none.
    """
    value = cfg.train.get("save_every_seconds", 0.0) or 0.0
    try:
        every = float(value)
    except (TypeError, ValueError):
        every = -1.0
    if isinstance(value, bool) or every < 0 or not every == every:
        raise ValueError(f"train.save_every_seconds={value!r}: give seconds >= 0 (0: write "
                         "after every epoch)")
    if not every or str(cfg.train.distribute) == "multi_worker":
        return None
    return writers.SaveClock(every)


def _training_callbacks(cfg: ml_collections.ConfigDict, steps_per_epoch: int,
                        epoch_seed: keras.callbacks.Callback | None,
                        tta_eval: keras.callbacks.Callback | None
                        ) -> list[keras.callbacks.Callback]:
    """Group 1: the data order, the lr logger, the TTA evaluation and the optimizer's side.

    With ``optimizer.ema``, ``AveragedWeights`` comes before the TTA evaluation and every
    writer, so that they see (and ``best.keras`` holds) the averaged weights.
    """
    o = cfg.optimizer
    ema = AveragedWeights() if o.get("ema", 0.0) else None
    cbs: list[keras.callbacks.Callback] = [
        cb for cb in (epoch_seed, LearningRateLogger(), ema, tta_eval) if cb is not None]
    cbs += schedules.callbacks(cfg.schedule, learning_rate=o.learning_rate,
                               steps_per_epoch=steps_per_epoch)
    cycle = _momentum_cycle(cfg, steps_per_epoch)
    if cycle is not None:
        cbs.append(cycle)
    if ema is not None and o.name == "model":
        raise ValueError("optimizer.ema averages the weights of a named optimizer (Keras's "
                         "use_ema); optimizer.name=model keeps the user's compiled optimizer "
                         "as it is: compile it with use_ema=True, or set optimizer.ema=0")
    if ema is not None and o.switch_to:
        raise ValueError("optimizer.ema with optimizer.switch_to: the new optimizer would start "
                         "a fresh weight average mid-run; set optimizer.ema=0 or "
                         "optimizer.switch_to=''")
    if o.momentum_epochs:
        end = o.beta_1 if o.name in ("adam", "adamw") else o.momentum
        cbs.append(MomentumSchedule(o.momentum_start, end, o.momentum_epochs))
    if o.switch_to:
        if o.switch_to not in optimizers.NAMES:
            raise ValueError(f"optimizer.switch_to={o.switch_to!r} is not an optimizer; use one "
                             f"of {list(optimizers.NAMES)}, or '' for no switch")
        to = dict(o.to_dict(), name=o.switch_to)
        cbs.append(SwitchOptimizer(o.switch_epoch, to,
                                   learning_rate=o.switch_learning_rate or None))
    return cbs


#: The optimizers whose momentum (or Adam's beta_1) a cyclical schedule cycles.
_CYCLED = {"momentum": "momentum", "nesterov": "momentum", "adam": "beta_1", "adamw": "beta_1"}


def _momentum_cycle(cfg: ml_collections.ConfigDict, steps_per_epoch: int
                    ) -> MomentumCycle | None:
    """one_cycle's / triangular's momentum cycle, for an optimizer with a momentum."""
    o, name = cfg.optimizer, cfg.optimizer.name
    if name not in _CYCLED:  # sgd, adagrad, rmsprop (momentum 0 here), the user's optimizer
        return None
    values = schedules.momentum_values(cfg.schedule, momentum=o[_CYCLED[name]],
                                       steps_per_epoch=steps_per_epoch,
                                       epochs=cfg.train.epochs)
    if values is None:
        return None
    for field, value in (("momentum_epochs", o.momentum_epochs), ("switch_to", o.switch_to)):
        if value:
            raise ValueError(f"schedule.momentum_cycle with optimizer.{field}={value!r}: both "
                             f"change the momentum; set schedule.momentum_cycle=False or "
                             f"optimizer.{field} off")
    return MomentumCycle(values)
