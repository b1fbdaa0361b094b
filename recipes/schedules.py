"""Learning-rate schedules computed per step: ``get(cfg.schedule, learning_rate=, ...)``.

CS231n "Neural Networks 3", annealing the learning rate: step decay, exponential decay
η0·e^(−kt), 1/t decay η0/(1+kt); plus linear, √linear ("poly" 0.5, BVLC GoogLeNet), cosine
(Loshchilov & Hutter 2017, SGDR, also with restarts for snapshot ensembles), 1/√t, GoogLeNet's
×0.96-per-epoch staircase, ReduceLROnPlateau, and a linear warmup in front of any of them
(Goyal et al. 2017, "Accurate, Large Minibatch SGD").

``t`` is the optimizer's step counter; fields given in epochs (``step_epochs``, the epoch
``k`` of exponential/inverse, ``warmup_epochs``) are converted with ``steps_per_epoch``. Keras's
own schedule classes are used wherever one exists; written here are only ``Constant``,
``InverseSqrtDecay``, ``OneCycle``, ``Triangular`` (Keras has no cyclical schedule) and the
generic ``LinearWarmup`` wrapper, all serializable in safe mode. The cyclical schedules'
momentum cycle is a callable of the step (``momentum_values``) that
``recipes.callbacks.MomentumCycle`` writes into the optimizer before each step.

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
- one_cycle: η0/div → η0 (cosine) over the first pct_start·T steps, then → η0/(div·div_final)
  (cosine); momentum the other way, optimizer.momentum → momentum_low → back (``OneCycle``;
  Smith & Topin 2018, fastai's ``fit_one_cycle``)
- triangular: linear η0/div → η0 → η0/div, ``cycles`` times (``Triangular``; Smith 2017)
- plateau: η0, × plateau_factor when val_loss stalls (a float + ReduceLROnPlateau)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from recipes.configs import config_fields

__all__ = ["CYCLIC", "DEFAULT_DIV", "NAMES", "Constant", "InverseSqrtDecay", "LinearWarmup",
           "LinearWarmupCallback", "OneCycle", "Triangular", "callbacks", "get",
           "momentum_values", "one_cycle_value", "triangular_value"]

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


# -- cyclical schedules (Keras has none) ---------------------------------------------

def one_cycle_value(step: Any, total_steps: float, pct_start: float, start: float,
                    peak: float, end: float) -> Any:
    """The one-cycle shape at ``step``: cosine start → peak, then cosine peak → end.

    Smith & Topin 2018, "Super-convergence"; the shape of fastai's ``fit_one_cycle``: the
    first ``pct_start·total_steps`` steps go from ``start`` to ``peak``, the rest from
    ``peak`` to ``end``, each half a cosine; ``step`` is clipped to [0, total_steps]. Written
    as ``end + (peak − end)·sin²(π/2·(T − t)/(T − U))`` rather than with ``1 + cos``, so that
    float32 keeps its relative precision near the tiny final rate.

    Args:
        step: the optimizer step t (a tensor or a number).
        total_steps: T > 0; ``end`` is reached at t = T.
        pct_start: the fraction of T spent going up, in (0, 1).
        start: the value at t = 0.
        peak: the value at t = U = pct_start·T.
        end: the value at t = T.

    Returns:
        A float32 tensor, the value at ``step``.
    """
    total = float(total_steps)
    up = pct_start * total
    t = ops.clip(ops.cast(step, "float32"), 0.0, total)
    half_pi = math.pi / 2
    rise = start + (peak - start) * ops.square(ops.sin(half_pi * ops.minimum(t / up, 1.0)))
    fall = end + (peak - end) * ops.square(
        ops.sin(half_pi * ops.minimum((total - t) / (total - up), 1.0)))
    return ops.where(t < up, rise, fall)


def triangular_value(step: Any, period: float, start: float, peak: float) -> Any:
    """The triangle wave at ``step``: linear start → peak over half a period, then back.

    Smith 2017, "Cyclical Learning Rates for Training Neural Networks", the ``triangular``
    policy (its "stepsize" is half the period here).

    Args:
        step: the optimizer step t (a tensor or a number), ≥ 0.
        period: steps of one cycle, > 0.
        start: the value at the start (and end) of each cycle.
        peak: the value in the middle of each cycle.

    Returns:
        A float32 tensor, ``start + (peak − start)·(1 − |2x − 1|)`` with x = frac(t / period).
    """
    u = ops.cast(step, "float32") / float(period)
    x = u - ops.floor(u)
    return start + (peak - start) * (1.0 - ops.abs(2.0 * x - 1.0))


def _check_one_cycle(pct_start: Any, div: Any, div_final: Any, where: str) -> None:
    _require(_is_number(pct_start) and 0 < pct_start < 1,
             f"{where}pct_start must be in (0, 1) (the fraction of the run spent warming up), "
             f"got {pct_start!r}; fastai uses 0.25")
    _check_div(div, where)
    _require(_is_number(div_final) and div_final >= 1,
             f"{where}div_final must be >= 1 (the final rate is learning_rate/(div·div_final)), "
             f"got {div_final!r}; fastai uses 1e5")


def _check_div(div: Any, where: str) -> None:
    _require(_is_number(div) and div >= 1,
             f"{where}div must be >= 1 (the lowest rate is learning_rate/div), got {div!r}; "
             "fastai's one cycle uses 25, Smith's triangular 3 to 4 (schedule.div=0 takes "
             "those)")


@_register
class OneCycle(_Schedule):
    """One-cycle learning rate: η0/div → η0 → η0/(div·div_final), two half cosines.

    Smith & Topin 2018, "Super-convergence"; fastai's ``fit_one_cycle`` (defaults
    ``pct_start=0.25, div=25, div_final=1e5``). Hand-written: Keras has no one-cycle
    schedule. Step t uses :func:`one_cycle_value`; t ≥ ``total_steps`` keeps the final rate.

    Args:
        max_learning_rate: η0, the peak, > 0.
        total_steps: T, the steps of the run, ≥ 2.
        pct_start: the fraction of T spent warming up, in (0, 1).
        div: the first rate is η0/div, ≥ 1.
        div_final: the last rate is η0/(div·div_final), ≥ 1.
        name: the name scope of the computation.
    """

    def __init__(self, max_learning_rate: float, total_steps: int, pct_start: float = 0.25,
                 div: float = 25.0, div_final: float = 1e5, name: str = "OneCycle"):
        super().__init__()
        _require(_is_number(max_learning_rate) and max_learning_rate > 0,
                 f"OneCycle: max_learning_rate must be > 0, got {max_learning_rate!r}")
        _require(isinstance(total_steps, numbers.Integral) and total_steps >= 2,
                 f"OneCycle: total_steps must be an integer >= 2, got {total_steps!r}")
        _check_one_cycle(pct_start, div, div_final, "OneCycle: ")
        self.max_learning_rate, self.total_steps = float(max_learning_rate), int(total_steps)
        self.pct_start, self.div, self.div_final = float(pct_start), float(div), float(div_final)
        self.name = name

    def __call__(self, step: Any) -> Any:
        with keras.name_scope(self.name):
            peak = self.max_learning_rate
            return one_cycle_value(step, self.total_steps, self.pct_start, peak / self.div,
                                   peak, peak / (self.div * self.div_final))

    def get_config(self) -> dict[str, Any]:
        return {"max_learning_rate": self.max_learning_rate, "total_steps": self.total_steps,
                "pct_start": self.pct_start, "div": self.div, "div_final": self.div_final,
                "name": self.name}


@_register
class Triangular(_Schedule):
    """Cyclical learning rate, Smith's ``triangular`` policy: η0/div ↔ η0, linear.

    Smith 2017, "Cyclical Learning Rates for Training Neural Networks". Each of ``cycles``
    cycles of T/cycles steps goes linearly up from η0/div to η0 and back down
    (:func:`triangular_value`). Hand-written: Keras has no cyclical schedule.

    Args:
        max_learning_rate: η0, the peak, > 0.
        total_steps: T, the steps of the run, ≥ 1.
        cycles: the number of cycles in T, an integer in [1, T].
        div: the lowest rate is η0/div, ≥ 1.
        name: the name scope of the computation.
    """

    def __init__(self, max_learning_rate: float, total_steps: int, cycles: int = 1,
                 div: float = 4.0, name: str = "Triangular"):
        super().__init__()
        _require(_is_number(max_learning_rate) and max_learning_rate > 0,
                 f"Triangular: max_learning_rate must be > 0, got {max_learning_rate!r}")
        _require(isinstance(total_steps, numbers.Integral) and total_steps >= 1,
                 f"Triangular: total_steps must be an integer >= 1, got {total_steps!r}")
        _require(isinstance(cycles, numbers.Integral) and 1 <= cycles <= total_steps,
                 f"Triangular: cycles must be an integer in [1, {total_steps}], got {cycles!r}")
        _check_div(div, "Triangular: ")
        self.max_learning_rate, self.total_steps = float(max_learning_rate), int(total_steps)
        self.cycles, self.div, self.name = int(cycles), float(div), name

    def __call__(self, step: Any) -> Any:
        with keras.name_scope(self.name):
            return triangular_value(step, self.total_steps / self.cycles,
                                    self.max_learning_rate / self.div, self.max_learning_rate)

    def get_config(self) -> dict[str, Any]:
        return {"max_learning_rate": self.max_learning_rate, "total_steps": self.total_steps,
                "cycles": self.cycles, "div": self.div, "name": self.name}


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
    cycles = _check_cycles(c, total)
    return keras.optimizers.schedules.CosineDecayRestarts(
        lr, total / cycles, t_mul=1.0, m_mul=1.0, alpha=c["alpha"])


def _check_cycles(c: dict, total: int) -> int:
    cycles = c["cycles"]
    _require(isinstance(cycles, numbers.Integral) and not isinstance(cycles, bool)
             and 1 <= cycles <= total,
             f"schedule.cycles must be an integer in [1, {total}] (the decay steps), "
             f"got {cycles!r}")
    return int(cycles)


#: ``schedule.div = 0`` takes the schedule's own default: fastai's 25, Smith's 4.
DEFAULT_DIV = {"one_cycle": 25.0, "triangular": 4.0}


def _div(c: dict) -> Any:
    d = c["div"]
    return DEFAULT_DIV[c["name"]] if _is_number(d) and d == 0 else d


def _one_cycle(c: dict, lr: float, spe: int, total: int) -> _Schedule:
    # η0/div → η0 over pct_start of the run, then → η0/(div·div_final); cosine both ways.
    _check_one_cycle(c["pct_start"], _div(c), c["div_final"], "schedule.")
    _require(total >= 2, f"one_cycle needs at least 2 steps (train.epochs × steps per epoch), "
             f"got {total}")
    return OneCycle(lr, total, c["pct_start"], _div(c), c["div_final"])


def _triangular(c: dict, lr: float, spe: int, total: int) -> _Schedule:
    # η0/div ↔ η0, linear, `cycles` times over the run.
    _check_div(_div(c), "schedule.")
    return Triangular(lr, total, _check_cycles(c, total), _div(c))


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
    "one_cycle": _one_cycle,
    "triangular": _triangular,
}

NAMES: tuple[str, ...] = (*_BUILDERS, "plateau")
"""The registered schedule names (``plateau`` is a float plus a callback, no schedule)."""

CYCLIC: tuple[str, ...] = ("one_cycle", "triangular")
"""The schedules that warm up by themselves and cycle the momentum (``momentum_values``)."""


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
    _require(warmup == 0 or c["name"] not in CYCLIC,
             f"schedule.warmup_epochs={warmup!r} with schedule.name={c['name']!r}: a cyclical "
             "schedule starts low by itself (one_cycle: schedule.pct_start is its warmup); "
             "set schedule.warmup_epochs=0")
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
    (The cyclical schedules' momentum cycle is ``recipes.callbacks.MomentumCycle`` over
    :func:`momentum_values`, a layer above this module.)

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


def momentum_values(cfg: Any, *, momentum: float, steps_per_epoch: int,
                    epochs: int) -> Callable[[int], float] | None:
    """Returns the momentum of each step for a cyclical schedule, or None for no cycle.

    Smith & Topin 2018, "Super-convergence" (and Smith 2018, "A disciplined approach to
    neural network hyper-parameters"): cycle the momentum opposite to the learning rate.
    ``one_cycle`` goes from ``momentum`` down to ``schedule.momentum_low`` while the rate
    warms up, then back up (fastai's moms=(0.95, 0.85, 0.95), same two half cosines);
    ``triangular`` goes linearly down while the rate goes up, ``cycles`` times.

    Args:
        cfg: the ``schedule`` branch, as for ``get``.
        momentum: the high momentum (``optimizer.momentum``, or ``beta_1`` for Adam), in
            (``momentum_low``, 1).
        steps_per_epoch: optimizer steps per epoch, ≥ 1.
        epochs: the length of the run in epochs, ≥ 1.

    Returns:
        ``values(t) -> float``, the momentum for step t; None unless ``schedule.name`` is
        cyclical and ``schedule.momentum_cycle`` is on.

    Raises:
        ValueError: ``momentum_low`` not in [0, momentum), or a bad schedule field.
    """
    c = _fields(cfg)
    if c["name"] not in CYCLIC or not c["momentum_cycle"]:
        return None
    low = c["momentum_low"]
    _require(_is_number(momentum) and 0 < momentum < 1,
             f"the momentum cycle needs a high momentum in (0, 1) (optimizer.momentum, or "
             f"beta_1 for adam), got {momentum!r}; or set schedule.momentum_cycle=False")
    _require(_is_number(low) and 0 <= low < momentum,
             f"schedule.momentum_low must be in [0, {momentum}) (below the optimizer's "
             f"momentum, the top of the cycle), got {low!r}; fastai uses 0.85 under 0.95, or "
             "set schedule.momentum_cycle=False")
    total = int(epochs) * int(steps_per_epoch)
    high, low = float(momentum), float(low)
    if c["name"] == "one_cycle":
        _check_one_cycle(c["pct_start"], _div(c), c["div_final"], "schedule.")
        pct = float(c["pct_start"])
        return lambda t: float(one_cycle_value(t, total, pct, high, low, high))
    period = total / _check_cycles(c, total)
    return lambda t: float(triangular_value(t, period, high, low))
