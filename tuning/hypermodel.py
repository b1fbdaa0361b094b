"""A ``keras_tuner.HyperModel`` that builds whole runs from the config tree.

Each trial's sampled values (keyed by dotted config paths) are set on a copy of the config,
and ``recipes.train.prepare`` builds the preprocessing, the tf.data pipelines and the
compiled model from it, so every knob of the tree (model, optimizer, schedule, batch size,
augmentation, loss) is searchable without new code. ``fit`` trains on the prepared
pipelines, not on arrays KerasTuner would pass in, which is what makes the batch size and
the input pipeline searchable.

Early abort (CS231n "Training Neural Networks II": "if the cost is ever > 3× the original
cost, break out early"): every trial runs under ``recipes.callbacks.ExplosionGuard``. A trial
it stops is *not* a crash: it reports a finite bad score (val accuracy 0, val loss
``EXPLODED_LOSS``) and ``exploded=1``, so KerasTuner's consecutive-failure limit never
ends the search because of a too-high learning rate.

Hyperband (Li et al. 2018, "Hyperband"; ``keras_tuner.Hyperband``) passes ``fit`` the
trial's ``epochs`` and ``initial_epoch`` (its ``tuner/epochs``, ``tuner/initial_epoch``); a
trial continuing a parent's checkpoint (``tuner/trial_id``) gets its optimizer built first, so
KerasTuner's ``load_weights`` restores the optimizer's state (step count, moments) with the
weights, and its ``ExplosionGuard`` compares with the parent's initial loss.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Iterator, Mapping
from typing import Any

import keras
import keras_tuner as kt
import ml_collections

from recipes import configs, data, train
from recipes.callbacks import monitors
from tuning import space as space_lib

__all__ = ["ConfigHyperModel", "Outcome", "EXPLODED_LOSS", "explosion_reason",
           "compressed_schedule"]

#: The val loss reported for an exploded trial: finite (the oracle accepts it) and worse
#: than any real loss.
EXPLODED_LOSS = 1e9

#: ``exploded`` metric codes: KerasTuner's gRPC messages carry numbers, not the reason text.
_KIND_NONE, _KIND_NAN, _KIND_RATIO = 0.0, 1.0, 2.0


@dataclasses.dataclass
class Outcome:
    """What one trial measured, as reported to the oracle (all numbers, for gRPC)."""

    val_accuracy: float
    val_loss: float
    epochs_run: int
    seconds: float
    exploded: bool = False
    reason: str = ""
    explosion_step: int = -1
    epochs_trained: float | None = None  # epochs_run, less the unfinished part of an abort
    initial_loss: float | None = None  # the first batch's loss (a continued trial's parent's)

    def metrics(self) -> dict[str, float]:
        """The oracle's metrics: the objective ``val_accuracy`` first, then the facts."""
        kind = _KIND_NONE
        if self.exploded:
            kind = _KIND_NAN if self.reason.startswith("nan") else _KIND_RATIO
        out = {
            "val_accuracy": float(self.val_accuracy),
            "val_loss": float(self.val_loss),
            "epochs_run": float(self.epochs_run),
            "epochs_trained": float(self.epochs_run if self.epochs_trained is None
                                    else self.epochs_trained),
            "seconds": float(self.seconds),
            "exploded": kind,
            "explosion_step": float(self.explosion_step),
        }
        if self.initial_loss is not None and math.isfinite(self.initial_loss):
            out["initial_loss"] = float(self.initial_loss)
        return out


def explosion_reason(metrics: Mapping[str, float],
                     factor: float = monitors.EXPLOSION_FACTOR) -> str:
    """Rebuilds an exploded trial's reason from its metrics (what a remote worker sent).

    Args:
        metrics: the trial's metrics (``exploded``, ``explosion_step``).
        factor: the explosion factor the trial ran with.

    Returns:
        ``"nan/inf loss at step N"``, ``"loss > 3× initial at step N"`` or "".
    """
    kind = float(metrics.get("exploded", 0.0) or 0.0)
    step = int(metrics.get("explosion_step", -1) or -1)
    where = f" at step {step}" if step >= 0 else ""
    if kind == _KIND_NAN:
        return "nan/inf loss" + where
    if kind == _KIND_RATIO:
        return f"loss > {factor:g}× initial" + where
    return ""


def compressed_schedule(config: ml_collections.ConfigDict, epochs: int) -> dict[str, Any]:
    """Fields in absolute epochs, scaled from ``train.epochs`` to ``epochs``.

    ``schedule.step_epochs``, ``schedule.warmup_epochs`` and ``train.progressive_epochs``
    (kept below ``epochs``: the trial's last epoch is at full resolution).
    """
    full = float(config.train.epochs)
    if full <= 0 or epochs >= full:
        return {}
    ratio = epochs / full
    out: dict[str, Any] = {}
    if config.schedule.name == "step":
        out["schedule.step_epochs"] = max(1, round(float(config.schedule.step_epochs) * ratio))
    if float(config.schedule.warmup_epochs) > 0:
        out["schedule.warmup_epochs"] = float(config.schedule.warmup_epochs) * ratio
    low_res = int(config.train.get("progressive_epochs", 0) or 0)
    if low_res > 0:  # the same share of low-resolution epochs; 0 turns it off, as it must be
        out["train.progressive_epochs"] = min(epochs - 1, round(low_res * ratio))
    return out


class ConfigHyperModel(kt.HyperModel):
    """Builds and trains one trial from ``config`` with the trial's values applied.

    Args:
        config: the base config tree (full or partial).
        space: the search space (path → distribution).
        epochs: epochs per trial (``train.epochs`` of every trial, unless searched).
        splits: already-loaded data, shared by all trials (None: each trial loads it).
        grid_points: values per numeric range for a grid search (None: continuous ranges).
        model: the user's network (a ``keras.Model``, copied with fresh weights per trial,
            or a function called per trial); None builds ``model.arch``.

    Attributes:
        last: the ``Outcome`` of the last trial this process trained.
        last_config: that trial's config tree.
    """

    def __init__(self, config: Any, space: Mapping[str, space_lib.Dimension], *, epochs: int,
                 splits: data.Splits | None = None, grid_points: int | None = None,
                 model: Any = None):
        super().__init__(name="babysit", tunable=True)
        self.config = configs.complete(config)
        self.space = dict(space)
        self.epochs = int(epochs)
        self.splits = splits
        self.grid_points = grid_points
        self.model = model
        self.last: Outcome | None = None
        self.last_config: ml_collections.ConfigDict | None = None
        self._prepared: train.Prepared | None = None
        self._callbacks: list[keras.callbacks.Callback] = []

    def declare_hyperparameters(self, hp: kt.HyperParameters) -> None:
        space_lib.declare(self.space, hp, points=self.grid_points)

    def config_for(self, values: Mapping[str, Any]) -> ml_collections.ConfigDict:
        """The trial's config: the base tree, ``train.epochs``, then the sampled values.

        The final training's schedule, compressed to the trial's length (a short-horizon
        correction, Wu et al. 2018): shapes over ``train.epochs`` (cosine, linear,
        one-cycle) follow it by themselves; the fields in absolute epochs
        (``schedule.step_epochs``, ``schedule.warmup_epochs``) are scaled by
        trial epochs / ``train.epochs``, so a trial sees the same decays at the same
        fraction of its run.
        """
        values = {k: v for k, v in values.items() if not k.startswith("tuner/")}  # Hyperband's
        return space_lib.apply(self.config, {"train.epochs": self.epochs,
                                             **compressed_schedule(self.config, self.epochs),
                                             **values})

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        """Prepares the trial's run (data pipelines, compiled model) and returns its model.

        Raises:
            keras_tuner.errors.FatalValueError: a value the config cannot take (a misspelt
                activation in a choice, say): a user error that ends the search.
        """
        self.last = None
        cfg = self.config_for(hp.values)
        try:
            self._prepared = train.prepare(cfg, model=self.model, splits=self.splits)
            # the callbacks the config asks for, as recipes.train.run adds them (no files)
            self._callbacks = train.config_callbacks(self._prepared)
        except ValueError as e:
            shown = ", ".join(f"{k}={v}" for k, v in hp.values.items())
            raise kt.errors.FatalValueError(f"{e} (trial values: {shown})") from e
        self.last_config = self._prepared.config
        model = self._prepared.model
        if "tuner/trial_id" in hp.values and model.optimizer is not None:
            # Hyperband loads the parent's checkpoint next: a built optimizer takes its state
            # too (an unbuilt one is skipped, with a warning, and would restart at step 0).
            model.optimizer.build(model.trainable_variables)
        return model

    def parent_exploded(self, reason: str) -> dict[str, float]:
        """The metrics of a Hyperband trial not run because its parent exploded (0 epochs)."""
        self.last = Outcome(0.0, EXPLODED_LOSS, 0, 0.0, True, reason, -1, 0.0)
        self._prepared, self._callbacks = None, []
        return self.last.metrics()

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args: Any,
            callbacks: list | None = None, epochs: int | None = None, initial_epoch: int = 0,
            initial_loss: float | None = None, **kwargs: Any) -> dict[str, float]:
        """Trains on the prepared pipelines under ``ExplosionGuard``; returns the metrics.

        Args:
            hp: the trial's hyperparameters (already applied in ``build``).
            model: the model ``build`` returned.
            *args: ignored (the data come from the config).
            callbacks: KerasTuner's callbacks (checkpointing the best epoch).
            epochs: the epoch to train up to (Hyperband's ``tuner/epochs``; None:
                ``train.epochs``).
            initial_epoch: the epoch to start at (Hyperband's ``tuner/initial_epoch``, > 0
                for a trial continuing its parent's checkpoint).
            initial_loss: a continued trial's parent's initial loss, for the 3× rule.
            **kwargs: ignored ``search`` keyword arguments.

        Returns:
            ``val_accuracy`` (best epoch), ``val_loss`` (same epoch), ``epochs_run``
            (epochs started in this fit), ``epochs_trained`` (steps taken / steps per
            epoch), ``seconds``, ``exploded`` (0, 1 = NaN/inf, 2 = loss > factor × initial),
            ``explosion_step`` and ``initial_loss``.
        """
        del hp, args, kwargs
        p = self._prepared
        if p is None or p.model is not model:
            raise kt.errors.FatalError("ConfigHyperModel.fit needs the model of its own build")
        if p.val_ds is None:
            raise kt.errors.FatalValueError("a search needs a validation split: set "
                                            "dataset.val_size > 0")
        cfg = p.config
        initial_epoch = int(initial_epoch or 0)
        given = initial_loss if initial_epoch > 0 and initial_loss is not None and \
            math.isfinite(initial_loss) and initial_loss > 0 else None
        guard = monitors.ExplosionGuard(float(cfg.monitor.explosion_factor), initial_loss=given)
        cbs = [*self._callbacks, guard, *(callbacks or [])]
        start_step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        start = time.time()
        with _quiet_trial():
            history = model.fit(p.train_ds, validation_data=p.val_ds,
                                epochs=int(epochs or cfg.train.epochs),
                                initial_epoch=initial_epoch, callbacks=cbs, verbose=0,
                                shuffle=False).history
        seconds = time.time() - start
        self.last = _outcome(history, guard, seconds, p.steps_per_epoch, start_step)
        self._prepared, self._callbacks = None, []  # nothing pins this trial's graph
        return self.last.metrics()


@contextlib.contextmanager
def _quiet_trial() -> Iterator[None]:
    """Silences what a search says once per trial anyway, in its own line.

    ExplosionGuard's stop warning (the trial's line gives the reason) and TensorFlow's
    "triggered tf.function retracing" (every trial builds a new model: expected).
    """
    loggers = [monitors.logger, logging.getLogger("tensorflow")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _outcome(history: Mapping[str, list], guard: monitors.ExplosionGuard, seconds: float,
             steps_per_epoch: int, start_step: int = 0) -> Outcome:
    """Summarizes a trial: the best epoch's val accuracy, or an explosion.

    ``start_step``: the optimizer's step count when the fit began (a continued Hyperband
    trial's parent's steps), not counted as this trial's training.
    """
    losses = [float(v) for v in history.get("loss", [])]
    accs = [float(v) for v in history.get("val_accuracy", [])]
    vlosses = [float(v) for v in history.get("val_loss", [])]
    epochs = len(losses)
    if guard.stopped or not accs or any(not math.isfinite(v) for v in losses + accs):
        reason = guard.reason or ("nan/inf loss" if any(not math.isfinite(v) for v in losses)
                                  else "no validation result")
        step = guard.stopped_step if guard.stopped_step is not None else -1
        trained = (step - start_step + 1) / steps_per_epoch if step >= 0 and steps_per_epoch \
            else epochs
        return Outcome(0.0, EXPLODED_LOSS, epochs, seconds, True, reason, int(step),
                       round(float(trained), 4), guard.initial_loss)
    best = max(range(len(accs)), key=lambda i: accs[i])
    vloss = vlosses[best] if best < len(vlosses) and math.isfinite(vlosses[best]) \
        else EXPLODED_LOSS
    return Outcome(accs[best], vloss, epochs, seconds, initial_loss=guard.initial_loss)
