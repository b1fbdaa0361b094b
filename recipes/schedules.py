"""Learning-rate schedules computed per step: ``get(cfg.schedule, learning_rate=, ...)``.

CS231n "Neural Networks 3", annealing the learning rate: step decay, exponential decay
η0·e^(−kt), 1/t decay η0/(1+kt); plus linear, √linear ("poly" 0.5, BVLC GoogLeNet), cosine
(Loshchilov & Hutter 2017, SGDR, also with restarts for snapshot ensembles), 1/√t, GoogLeNet's
×0.96-per-epoch staircase, ReduceLROnPlateau, and a linear warmup in front of any of them
(Goyal et al. 2017, "Accurate, Large Minibatch SGD").

``t`` is the optimizer's step counter; fields given in epochs (``step_epochs``, the epoch
``k`` of exponential/inverse, ``warmup_epochs``) are converted with ``steps_per_epoch``. Keras's
own schedule classes are used wherever one exists; written here are only ``Constant``,
``InverseSqrtDecay`` and the generic ``LinearWarmup`` wrapper (serializable in safe mode).

With η0 = learning_rate, s = steps_per_epoch, T = the decay's steps (epochs·s − warmup):

- constant: η0 (a float; ``Constant`` under warmup)
- step: η0·decay_rate^⌊t/(step_epochs·s)⌋ (ExponentialDecay, staircase)
- epoch_decay: η0·epoch_decay^⌊t/s⌋ (ExponentialDecay, staircase; GoogLeNet's 0.96)
- exponential: η0·e^(−decay_rate·t/s) (ExponentialDecay with rate e^(−decay_rate))
- inverse: η0/(1 + decay_rate·t/s) (InverseTimeDecay)
- inverse_sqrt: η0/√(1 + t/s) (InverseSqrtDecay)
- linear: η0·(1 − t/T) (PolynomialDecay, power 1)
- sqrt_linear: η0·√(1 − t/T) (PolynomialDecay, power 0.5)
- cosine: η0·(α + (1 − α)·½(1 + cos(πt/T))) (CosineDecay)
- cosine_restarts: the cosine over each of ``cycles`` periods of T/cycles steps
  (CosineDecayRestarts, t_mul = m_mul = 1)
- plateau: η0, × plateau_factor when val_loss stalls (a float + ReduceLROnPlateau)
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import keras
from keras import ops

from recipes.configs import config_fields

__all__ = ["NAMES", "Constant", "InverseSqrtDecay", "LinearWarmup", "LinearWarmupCallback",
           "callbacks", "get"]

_Schedule = keras.optimizers.schedules.LearningRateSchedule
_register = keras.saving.register_keras_serializable(package="babysit")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


@_register
class Constant(_Schedule):
    """η(t) = η0: the constant learning rate as a schedule (Keras has none), for warmup.

    Args:
        learning_rate: η0 > 0.
        name: the name scope of the computation.
    """

    def __init__(self, learning_rate: float, name: str = "Constant"):
        super().__init__()
        _require(_is_number(learning_rate) and learning_rate > 0,
                 f"Constant: learning_rate must be > 0, got {learning_rate!r}")
        self.learning_rate = float(learning_rate)
        self.name = name

    def __call__(self, step: Any) -> Any:
        with keras.name_scope(self.name):
            return ops.multiply(ops.ones_like(ops.cast(step, "float32")), self.learning_rate)

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "name": self.name}


@_register
class InverseSqrtDecay(_Schedule):
    """η(t) = η0 / √(1 + t / decay_steps): the 1/√t decay, finite at t = 0.

    Vaswani et al. 2017 use η ∝ 1/√t after warmup; shifting t by one ``decay_steps`` keeps
    η(0) = η0 with no warmup. With ``decay_steps = steps_per_epoch`` (what ``get`` uses),
    η = η0/√(epoch + 1) at each epoch boundary: ½η0 after 3 epochs, η0/10 after 99.

    Args:
        initial_learning_rate: η0 > 0.
        decay_steps: the step scale, > 0.
        name: the name scope of the computation.
    """

    def __init__(self, initial_learning_rate: float, decay_steps: float,
                 name: str = "InverseSqrtDecay"):
        super().__init__()
        _require(_is_number(initial_learning_rate) and initial_learning_rate > 0,
                 f"InverseSqrtDecay: initial_learning_rate must be > 0, "
                 f"got {initial_learning_rate!r}")
        _require(_is_number(decay_steps) and decay_steps > 0,
                 f"InverseSqrtDecay: decay_steps must be > 0, got {decay_steps!r}")
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = decay_steps
        self.name = name

    def __call__(self, step: Any) -> Any:
        with keras.name_scope(self.name):
            t = ops.cast(step, "float32")
            return self.initial_learning_rate * ops.rsqrt(1.0 + t / float(self.decay_steps))

    def get_config(self) -> dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "name": self.name}


@_register
class LinearWarmup(_Schedule):
    """Linear warmup to η0 = schedule(0) over ``warmup_steps``, then ``schedule(t − W)``.

    Goyal et al. 2017, "Accurate, Large Minibatch SGD", gradual warmup: η(t) = η0·(t+1)/W for
    t < W (η0/W at the first step, not 0, so no step is wasted), then the wrapped schedule
    shifted by W, so the decay starts where warmup ends and spans the remaining steps.

    Args:
        schedule: the schedule after warmup (or its serialized dict, as ``from_config`` gives).
        warmup_steps: W ≥ 1.
        name: the name scope of the computation.
    """

    def __init__(self, schedule: _Schedule | dict[str, Any], warmup_steps: int,
                 name: str = "LinearWarmup"):
        super().__init__()
        if isinstance(schedule, dict):
            schedule = keras.optimizers.schedules.deserialize(schedule)
        _require(isinstance(schedule, _Schedule),
                 f"LinearWarmup: schedule must be a LearningRateSchedule, got {schedule!r}; "
                 "wrap a float in recipes.schedules.Constant")
        _require(isinstance(warmup_steps, numbers.Integral) and warmup_steps >= 1,
                 f"LinearWarmup: warmup_steps must be an integer >= 1, got {warmup_steps!r}")
        self.schedule = schedule
        self.warmup_steps = int(warmup_steps)
        self.name = name

    def __call__(self, step: Any) -> Any:
        with keras.name_scope(self.name):
            t = ops.cast(step, "float32")
            w = float(self.warmup_steps)
            target = ops.cast(self.schedule(ops.zeros_like(t)), "float32")
            warm = target * (t + 1.0) / w
            after = ops.cast(self.schedule(ops.maximum(t - w, 0.0)), "float32")
            return ops.where(t < w, warm, after)

    def get_config(self) -> dict[str, Any]:
        return {"schedule": keras.optimizers.schedules.serialize(self.schedule),
                "warmup_steps": self.warmup_steps, "name": self.name}


class LinearWarmupCallback(keras.callbacks.Callback):
    """Linear warmup for a float learning rate (``plateau``), by setting the optimizer's lr.

    Goyal et al. 2017: η = η0·(t+1)/W for the first W steps, then η0, after which
    ``ReduceLROnPlateau`` may lower it. Put it before ``ReduceLROnPlateau`` in the list.

    Args:
        warmup_epochs: length of the warmup in epochs, > 0.
        learning_rate: η0; None reads the optimizer's rate at the start of training (then a
            run resumed in the middle of warmup cannot know η0 and raises).
        steps_per_epoch: None takes ``fit``'s ``params["steps"]``.
    """

    def __init__(self, warmup_epochs: float, learning_rate: float | None = None,
                 steps_per_epoch: int | None = None):
        super().__init__()
        _require(_is_number(warmup_epochs) and warmup_epochs > 0,
                 f"schedule.warmup_epochs must be > 0 here, got {warmup_epochs!r}")
        self.warmup_epochs = warmup_epochs
        self.learning_rate = learning_rate
        self.steps_per_epoch = steps_per_epoch

    def on_train_begin(self, logs: dict | None = None) -> None:
        spe = self.steps_per_epoch or self.params.get("steps")
        _require(bool(spe), "LinearWarmupCallback: the number of steps per epoch is unknown; "
                 "pass steps_per_epoch= (a dataset of unknown cardinality hides it)")
        self._warmup_steps = max(1, round(self.warmup_epochs * spe))
        t = int(self.model.optimizer.iterations)
        self._target = self.learning_rate
        if self._target is None:
            _require(t == 0 or t > self._warmup_steps,
                     f"LinearWarmupCallback: resumed at step {t}, inside the warmup, without "
                     "learning_rate=; pass the peak learning rate")
            self._target = float(ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        t = int(self.model.optimizer.iterations)
        if t < self._warmup_steps:
            self.model.optimizer.learning_rate = self._target * (t + 1) / self._warmup_steps
        elif t == self._warmup_steps:
            self.model.optimizer.learning_rate = self._target


def _steps(epochs: float, steps_per_epoch: int) -> int:
    return max(1, round(epochs * steps_per_epoch))


def _step(c: dict, lr: float, spe: int, total: int) -> _Schedule:
    # × decay_rate every step_epochs epochs.
    _require(_is_number(c["decay_rate"]) and 0 < c["decay_rate"] <= 1,
             f"schedule.decay_rate must be in (0, 1] for step (the factor applied every "
             f"schedule.step_epochs), got {c['decay_rate']!r}; try 0.1 or 0.5")
    _require(_is_number(c["step_epochs"]) and c["step_epochs"] > 0,
             f"schedule.step_epochs must be > 0, got {c['step_epochs']!r}")
    return keras.optimizers.schedules.ExponentialDecay(
        lr, _steps(c["step_epochs"], spe), c["decay_rate"], staircase=True)


def _epoch_decay(c: dict, lr: float, spe: int, total: int) -> _Schedule:
    # GoogLeNet: × epoch_decay (0.96 there) once per epoch.
    _require(_is_number(c["epoch_decay"]) and 0 < c["epoch_decay"] <= 1,
             f"schedule.epoch_decay must be in (0, 1], got {c['epoch_decay']!r}; try 0.96")
    return keras.optimizers.schedules.ExponentialDecay(lr, spe, c["epoch_decay"],
                                                       staircase=True)


def _check_k(c: dict) -> None:
    _require(_is_number(c["decay_rate"]) and c["decay_rate"] > 0,
             f"schedule.decay_rate must be > 0 (k per epoch), got {c['decay_rate']!r}")


def _exponential(c: dict, lr: float, spe: int, total: int) -> _Schedule:
    # η0·e^(−k·t/spe) = η0·(e^(−k))^(t/spe): ExponentialDecay with rate e^(−k) per epoch.
    _check_k(c)
    return keras.optimizers.schedules.ExponentialDecay(lr, spe, math.exp(-c["decay_rate"]))


def _inverse(c: dict, lr: float, spe: int, total: int) -> _Schedule:
    # η0/(1 + k·t/spe).
    _check_k(c)
    return keras.optimizers.schedules.InverseTimeDecay(lr, spe, c["decay_rate"])


def _inverse_sqrt(c: dict, lr: float, spe: int, total: int) -> _Schedule:
    return InverseSqrtDecay(lr, spe)


def _linear(c: dict, lr: float, spe: int, total: int) -> _Schedule:
    return keras.optimizers.schedules.PolynomialDecay(lr, total, end_learning_rate=0.0,
                                                      power=1.0)


def _sqrt_linear(c: dict, lr: float, spe: int, total: int) -> _Schedule:
    # BVLC GoogLeNet's "poly" policy with power 0.5: η0·√(1 − t/T).
    return keras.optimizers.schedules.PolynomialDecay(lr, total, end_learning_rate=0.0,
                                                      power=0.5)


def _check_alpha(c: dict) -> None:
    _require(_is_number(c["alpha"]) and 0 <= c["alpha"] <= 1,
             f"schedule.alpha must be in [0, 1] (final lr / initial lr), got {c['alpha']!r}")


def _cosine(c: dict, lr: float, spe: int, total: int) -> _Schedule:
    # η0·(α + (1−α)·½(1 + cos(πt/T))).
    _check_alpha(c)
    return keras.optimizers.schedules.CosineDecay(lr, total, alpha=c["alpha"])


def _cosine_restarts(c: dict, lr: float, spe: int, total: int) -> _Schedule:
    # `cycles` equal cosine cycles over the run (snapshot ensembles: a snapshot per cycle).
    _check_alpha(c)
    cycles = c["cycles"]
    _require(isinstance(cycles, numbers.Integral) and 1 <= cycles <= total,
             f"schedule.cycles must be an integer in [1, {total}] (the decay steps), "
             f"got {cycles!r}")
    return keras.optimizers.schedules.CosineDecayRestarts(
        lr, total / int(cycles), t_mul=1.0, m_mul=1.0, alpha=c["alpha"])


def _constant(c: dict, lr: float, spe: int, total: int) -> _Schedule:
    return Constant(lr)


def _check_plateau(c: dict) -> None:
    _require(_is_number(c["plateau_factor"]) and 0 < c["plateau_factor"] < 1,
             f"schedule.plateau_factor must be in (0, 1), got {c['plateau_factor']!r}; "
             "try 0.5 or 0.1")
    p = c["plateau_patience"]
    _require(isinstance(p, numbers.Integral) and p >= 0,
             f"schedule.plateau_patience must be an integer >= 0 (epochs), got {p!r}")


_BUILDERS = {
    "constant": _constant,
    "step": _step,
    "epoch_decay": _epoch_decay,
    "exponential": _exponential,
    "inverse": _inverse,
    "inverse_sqrt": _inverse_sqrt,
    "linear": _linear,
    "sqrt_linear": _sqrt_linear,
    "cosine": _cosine,
    "cosine_restarts": _cosine_restarts,
}

NAMES: tuple[str, ...] = (*_BUILDERS, "plateau")
"""The registered schedule names (``plateau`` is a float plus a callback, no schedule)."""


def _fields(cfg: Any) -> dict[str, Any]:
    c = config_fields(cfg, "schedule")
    _require(c["name"] in NAMES,
             f"schedule.name={c['name']!r} is not a schedule; use one of {list(NAMES)}")
    return c


def get(cfg: Any, *, learning_rate: float, steps_per_epoch: int,
        epochs: int) -> _Schedule | float:
    """Returns the learning rate for the optimizer: a per-step schedule or a plain float.

    CS231n "Neural Networks 3", annealing the learning rate; warmup: Goyal et al. 2017.

    ``constant`` without warmup and ``plateau`` return the plain float ``learning_rate``, so
    that the optimizer keeps its learning rate in a variable that ``ReduceLROnPlateau``
    (from ``callbacks(cfg)``) and other callbacks can set; a schedule's rate cannot be set.
    ``plateau``'s warmup, if any, is a callback too (``callbacks(cfg)``). Every other case
    returns a serializable ``LearningRateSchedule`` of the step counter; with
    ``warmup_epochs > 0`` it is ``LinearWarmup`` around the decay, which then spans the
    steps left after warmup.

    Args:
        cfg: the ``schedule`` branch (ConfigDict or dict; missing fields take base.py's
            defaults), a bare name, or None (constant). A schedule is returned as it is.
        learning_rate: the initial (peak) learning rate η0, > 0.
        steps_per_epoch: optimizer steps per epoch, ≥ 1.
        epochs: the length of the run T in epochs, ≥ 1.

    Returns:
        A ``keras.optimizers.schedules.LearningRateSchedule``, or a float (see above).

    Raises:
        ValueError: an unknown name (the valid ones are listed) or a bad field value.
    """
    if isinstance(cfg, _Schedule):
        return cfg
    c = _fields(cfg)
    _require(_is_number(learning_rate) and learning_rate > 0,
             f"optimizer.learning_rate must be > 0, got {learning_rate!r}")
    _require(isinstance(steps_per_epoch, numbers.Integral) and steps_per_epoch >= 1,
             f"steps_per_epoch must be an integer >= 1, got {steps_per_epoch!r}")
    _require(isinstance(epochs, numbers.Integral) and epochs >= 1,
             f"train.epochs must be an integer >= 1, got {epochs!r}")
    warmup = c["warmup_epochs"]
    _require(_is_number(warmup) and 0 <= warmup < epochs,
             f"schedule.warmup_epochs must be in [0, train.epochs={epochs}), got {warmup!r}")
    lr, spe = float(learning_rate), int(steps_per_epoch)
    total = int(epochs) * spe
    warmup_steps = min(_steps(warmup, spe), total - 1) if warmup > 0 else 0
    if c["name"] == "plateau":
        _check_plateau(c)
        return lr
    if c["name"] == "constant" and warmup_steps == 0:
        return lr
    schedule = _BUILDERS[c["name"]](c, lr, spe, total - warmup_steps)
    return LinearWarmup(schedule, warmup_steps) if warmup_steps else schedule


def callbacks(cfg: Any, *, learning_rate: float | None = None,
              steps_per_epoch: int | None = None) -> list[keras.callbacks.Callback]:
    """Returns the callbacks a schedule needs: ``plateau``'s, none for the others.

    CS231n "Neural Networks 3": reduce the learning rate when the validation loss stops
    improving. Put them after ``LearningRateLogger`` so it logs the rate each epoch used.

    Args:
        cfg: the ``schedule`` branch, as for ``get``.
        learning_rate: η0 for ``plateau`` with warmup (None: the optimizer's rate at start).
        steps_per_epoch: for ``plateau`` with warmup (None: ``fit``'s ``params["steps"]``).

    Returns:
        ``[ReduceLROnPlateau(monitor="val_loss", factor=plateau_factor,
        patience=plateau_patience)]``, preceded by a ``LinearWarmupCallback`` when
        ``warmup_epochs > 0``, for ``plateau``; ``[]`` otherwise.
    """
    c = _fields(cfg)
    if c["name"] != "plateau":
        return []
    _check_plateau(c)
    out: list[keras.callbacks.Callback] = []
    if c["warmup_epochs"] > 0:
        out.append(LinearWarmupCallback(c["warmup_epochs"], learning_rate, steps_per_epoch))
    out.append(keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", factor=float(c["plateau_factor"]),
        patience=int(c["plateau_patience"])))
    return out
