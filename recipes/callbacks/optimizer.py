"""Optimizer-side callbacks: the learning rate used, and hyperparameters changed over a run.

Sections: learning rate (``LearningRateLogger``, with :func:`learning_rate_used`), optimizer
hyperparameters over the run (``MomentumSchedule``, ``MomentumCycle``, ``AveragedWeights``,
``SwitchOptimizer``). The monitors
(``recipes.callbacks.monitors``) read the learning rate through the public helpers here.

Keras quirk behind the last two: an optimizer's momentum (``SGD.momentum``,
``Adam.beta_1``) is a Python float, read when ``fit``'s train step is traced into a
``tf.function``, so it is a constant of the compiled step. Changing it, or replacing
``model.optimizer``, takes effect only once the train function is rebuilt:
``model.make_train_function(force=True)`` (``fit`` calls ``model.train_function`` afresh
every step, so a callback may swap it between epochs). Each rebuild costs one retrace.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from recipes import optimizers

__all__ = ["AveragedWeights", "LearningRateLogger", "MomentumCycle", "MomentumSchedule",
           "SwitchOptimizer", "inner_optimizer", "learning_rate_schedule", "learning_rate_used"]


def inner_optimizer(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """The optimizer doing the updates (the one a mixed-precision LossScaleOptimizer wraps)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def _build_optimizer(model: keras.Model,
                     optimizer: keras.optimizers.Optimizer | None = None) -> None:
    """Builds ``optimizer`` (default: the model's) on the model's weights if not built yet.

    Without a distribution strategy Keras builds the optimizer only when the first train
    step is traced, after ``on_train_begin``; a callback that reads or changes its slots
    must build it first (as Keras does itself under a strategy).
    """
    optimizer = optimizer if optimizer is not None else model.optimizer
    if optimizer.built:
        return
    if not model.built:
        raise ValueError(f"{type(model).__name__} is not built; give it an Input or call "
                         "model.build(input_shape) before fit")
    strategy = getattr(model, "distribute_strategy", None)  # TensorFlow backend only
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        optimizer.build(model.trainable_variables)


# -- learning rate -------------------------------------------------------------------------

def learning_rate_schedule(optimizer: keras.optimizers.Optimizer
                           ) -> keras.optimizers.schedules.LearningRateSchedule | None:
    """The optimizer's learning-rate schedule, or None when its rate is a float."""
    schedule = getattr(inner_optimizer(optimizer), "_learning_rate", None)  # Keras keeps it here
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return schedule
    return None


def learning_rate_used(optimizer: keras.optimizers.Optimizer) -> float:
    """Returns the learning rate of the optimizer's last step (its first, before training).

    A schedule is evaluated at ``iterations − 1``, the step just taken (Keras applies
    ``schedule(iterations)`` and then increments ``iterations``); a float learning rate is
    the value of the optimizer's variable.
    """
    opt = inner_optimizer(optimizer)
    schedule = learning_rate_schedule(opt)
    if schedule is not None:
        step = max(int(ops.convert_to_numpy(opt.iterations)) - 1, 0)
        return float(ops.convert_to_numpy(schedule(ops.convert_to_tensor(step, "int64"))))
    return float(ops.convert_to_numpy(opt.learning_rate))


class LearningRateLogger(keras.callbacks.Callback):
    """Writes the learning rate used into ``logs["lr"]`` at each epoch end.

    CS231n "Neural Networks 3", babysitting: plot the loss against the learning rate used.
    The value is that of the epoch's last step, whether the rate is a schedule or a float
    set by other callbacks. Put it before ``ReduceLROnPlateau``, which lowers the rate at
    the same epoch end, so that the row shows the rate the epoch ran with.
    """

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["lr"] = learning_rate_used(self.model.optimizer)


# -- optimizer hyperparameters over the run ------------------------------------------------

def _momentum_attr(opt: keras.optimizers.Optimizer, who: str) -> str:
    """``"beta_1"`` (Adam, AdamW) or ``"momentum"`` (SGD, RMSprop with a velocity).

    Raises:
        ValueError: the optimizer has neither, or was built with momentum 0 (no velocity).
    """
    if hasattr(opt, "beta_1"):
        return "beta_1"
    if not hasattr(opt, "momentum"):
        raise ValueError(f"{who}: {type(opt).__name__} has no momentum or beta_1; use sgd "
                         "momentum/nesterov, rmsprop, adam or adamw")
    # SGD keeps `momentums`, RMSprop `_momentums`: built only if momentum was > 0.
    if not (getattr(opt, "momentums", None) or getattr(opt, "_momentums", None)):
        raise ValueError(
            f"{who}: {type(opt).__name__} was built with momentum 0, so it keeps no velocity "
            "to schedule; use optimizer.name='momentum' or 'nesterov' (SGD with momentum > 0)")
    return "momentum"


class MomentumSchedule(keras.callbacks.Callback):
    """Ramps momentum (SGD, RMSprop) or ``beta_1`` (Adam, AdamW) linearly over the first epochs.

    CS231n "Neural Networks 3": momentum is sometimes annealed from 0.5 up to 0.99 over
    the first epochs. Epoch e (from 0) uses start + (end − start)·min(e/epochs, 1), written
    into ``logs["momentum"]``. The value is set at each epoch start and the train function
    is rebuilt when it changes (a momentum is a constant of the compiled step).

    Args:
        start: momentum of the first epoch, in [0, 1).
        end: momentum from epoch ``epochs`` on, in [0, 1).
        epochs: length of the ramp, ≥ 1.

    Raises:
        ValueError: at the start of training, an optimizer with no momentum, or SGD/RMSprop
            built with momentum 0 (Keras then keeps no velocity; use optimizer.name
            momentum or nesterov).
    """

    def __init__(self, start: float = 0.5, end: float = 0.9, epochs: int = 5):
        super().__init__()
        for field, v in (("start", start), ("end", end)):
            if not (isinstance(v, numbers.Real) and 0 <= v < 1):
                raise ValueError(f"MomentumSchedule: {field} must be in [0, 1), got {v!r}")
        if not (isinstance(epochs, numbers.Integral) and epochs >= 1):
            raise ValueError(f"MomentumSchedule: epochs must be an integer >= 1, got {epochs!r}")
        self.start, self.end, self.epochs = float(start), float(end), int(epochs)

    def value(self, epoch: int) -> float:
        """Returns the momentum of epoch ``epoch`` (from 0)."""
        return self.start + (self.end - self.start) * min(epoch / self.epochs, 1.0)

    def on_train_begin(self, logs: dict | None = None) -> None:
        # SGD makes its velocity slots at build time only if momentum > 0.
        _build_optimizer(self.model)
        self._attr = _momentum_attr(inner_optimizer(self.model.optimizer), "MomentumSchedule")

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if epoch > self.epochs:  # the ramp is over: leave the optimizer (maybe switched) alone
            return
        opt = inner_optimizer(self.model.optimizer)
        m = self.value(epoch)
        if float(getattr(opt, self._attr)) != m:
            setattr(opt, self._attr, m)
            self.model.make_train_function(force=True)  # retrace: the new value is a constant

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        opt = inner_optimizer(self.model.optimizer)
        attr = "beta_1" if hasattr(opt, "beta_1") else "momentum"  # a SwitchOptimizer may
        if logs is not None and hasattr(opt, attr):  # have replaced the optimizer meanwhile
            logs["momentum"] = float(getattr(opt, attr))


class _StepMomentum(keras.Variable):
    """A momentum the traced train step reads from a variable, so it may change every step.

    Keras's SGD asks ``momentum != 0`` (RMSprop ``momentum > 0``) in Python while tracing,
    to decide whether it keeps a velocity; a variable cannot answer that, so this one
    answers True against 0: the velocity is used whatever value the cycle takes (at 0 the
    update is plain SGD). Any other comparison is the variable's own (a tensor).
    """

    def __ne__(self, other: Any) -> Any:
        if isinstance(other, numbers.Real) and other == 0:
            return True
        return super().__ne__(other)

    def __gt__(self, other: Any) -> Any:
        if isinstance(other, numbers.Real) and other == 0:
            return True
        return super().__gt__(other)


class MomentumCycle(keras.callbacks.Callback):
    """Sets momentum (SGD) or ``beta_1`` (Adam, AdamW) before every step: ``values(t)``.

    Smith & Topin 2018, "Super-convergence": cycle the momentum opposite to the learning
    rate (``recipes.schedules.momentum_values`` gives one_cycle's and triangular's).
    Hand-written: Keras schedules only the learning rate. Retracing the train step for every
    new value (as ``MomentumSchedule`` does once per epoch) would cost a trace per step, so
    during each epoch the optimizer's attribute is a variable that the traced step reads and
    this callback assigns; at each epoch end the attribute is a float again (the last step's
    value, also ``logs["momentum"]``), so that checkpoints save a plain optimizer config.
    The variable is set outside the optimizer's tracking: it is no optimizer state, and
    ``iterations`` (restored with a backup) says where in the cycle a run is.

    Args:
        values: the momentum of optimizer step t (from 0), in [0, 1).

    Raises:
        ValueError: at the start of training, an optimizer with no momentum, or SGD built
            with momentum 0 (no velocity).
    """

    def __init__(self, values: Callable[[int], float]):
        super().__init__()
        if not callable(values):
            raise ValueError(f"MomentumCycle: values must be a callable of the step, got "
                             f"{values!r}; see recipes.schedules.momentum_values")
        self.values = values
        self._var: _StepMomentum | None = None
        self._opt: keras.optimizers.Optimizer | None = None
        self._t = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        _build_optimizer(self.model)
        self._attr = _momentum_attr(inner_optimizer(self.model.optimizer), "MomentumCycle")
        if self._var is None:
            strategy = getattr(self.model, "distribute_strategy", None)
            with strategy.scope() if strategy is not None else contextlib.nullcontext():
                self._var = _StepMomentum(float(self.values(0)), dtype="float32",
                                          trainable=False, name="momentum_cycle")

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._t = int(ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        opt = inner_optimizer(self.model.optimizer)
        if self._opt is not opt or getattr(opt, self._attr) is not self._var:
            object.__setattr__(opt, self._attr, self._var)  # untracked: not optimizer state
            self._opt = opt
        self._var.assign(float(self.values(self._t)))
        self._t += 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = self._put_float_back()
        if logs is not None and value is not None:
            logs["momentum"] = value

    def on_train_end(self, logs: dict | None = None) -> None:
        self._put_float_back()

    def _put_float_back(self) -> float | None:
        if self._opt is None or getattr(self._opt, self._attr) is not self._var:
            return None
        value = float(ops.convert_to_numpy(self._var))
        object.__setattr__(self._opt, self._attr, value)
        return value


class AveragedWeights(keras.callbacks.SwapEMAWeights):
    """Keras's ``SwapEMAWeights(swap_on_epoch=True)``, also right after an early stop or resume.

    Polyak & Juditsky 1992, averaging of the iterates. With ``optimizer.ema`` the optimizer
    keeps a moving average of the weights; this puts it into the model for each epoch's
    validation and from each epoch's end to the next epoch's start (the raw weights wait in
    the optimizer's average slots), so that the callbacks after it (``best.keras``, the
    backup) see the weights that were validated. Two cases Keras leaves wrong are set right:

    - a run stopped before its last epoch (``ExplosionGuard``, ``EarlyStopping``): ``fit``
      then writes the average slots, which hold the raw weights, into the model; here the
      averaged weights of the last epoch (a host copy taken at each epoch end) are put back
      in ``on_train_end``;
    - a run resumed from a backup (its first epoch > 0): the backup was written at an epoch
      end, with the average in the model, so it is swapped back before training goes on.
      Place it before the backup callback, as ``build_callbacks`` does.
    """

    def __init__(self) -> None:
        super().__init__(swap_on_epoch=True)
        self._first = True
        self._averaged: list[Any] | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._first, self._averaged = True, None
        self._ema_weights_in_model = False

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._first and epoch > 0:  # resumed: the backup holds the swapped weights
            self._ema_weights_in_model = True
        self._first = False
        super().on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch, logs)  # the average into the model; finalized at the end
        last = epoch == self.params["epochs"] - 1
        self._averaged = None if last else [ops.convert_to_numpy(v)
                                            for v in self.model.trainable_weights]

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._averaged is None:  # the last epoch ran: Keras finalized the average
            return
        opt = inner_optimizer(self.model.optimizer)  # stopped early: fit wrote the raw ones
        for v, a in zip(self.model.trainable_weights, self._averaged, strict=True):
            v.assign(a)
        for v, a in zip(opt._model_variables_moving_average, self._averaged, strict=True):
            v.assign(a)
        self._averaged = None


class SwitchOptimizer(keras.callbacks.Callback):
    """Replaces the optimizer at the start of epoch ``epoch``, keeping the weights.

    Keskar & Socher 2017, "Improving generalization by switching from Adam to SGD": Adam
    early, SGD with momentum from epoch k. The new optimizer is built on the model's
    trainable variables with fresh slots (velocity, moments), continues the step counter
    (so a schedule, TensorBoard and ``LearningRateLogger`` go on from where they were),
    becomes ``model.optimizer`` (and the compile config, so ``model.save`` records it), and
    the train function is rebuilt to use it.

    A run resumed by ``BackupAndRestore`` after the switch restarts the new optimizer's
    slots (the model is compiled with the first optimizer again).

    Args:
        epoch: the first epoch (from 0) to train with the new optimizer, ≥ 1.
        to_cfg: the new ``optimizer`` branch (ConfigDict, dict or name), as for
            ``recipes.optimizers.get``.
        learning_rate: overrides ``to_cfg.learning_rate``: a float or a schedule.
        keep_iterations: continue the step counter (True) or start it at 0. Note that Adam's
            bias correction reads the counter: switching *to* Adam with True takes its fresh
            moments as warm.
    """

    def __init__(self, epoch: int, to_cfg: Any, learning_rate: Any = None,
                 keep_iterations: bool = True):
        super().__init__()
        if not (isinstance(epoch, numbers.Integral) and epoch >= 1):
            raise ValueError(f"SwitchOptimizer: epoch must be an integer >= 1, got {epoch!r}; "
                             "to start with an optimizer, compile with it")
        optimizers.get(to_cfg, learning_rate=learning_rate)  # validate the config now
        self.epoch, self.to_cfg = int(epoch), to_cfg
        self.learning_rate, self.keep_iterations = learning_rate, keep_iterations
        self._new: keras.optimizers.Optimizer | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._switched = self._new is not None and self.model.optimizer is self._new

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._switched or epoch < self.epoch:
            return
        old = self.model.optimizer
        new = optimizers.get(self.to_cfg, learning_rate=self.learning_rate)
        if isinstance(old, keras.optimizers.LossScaleOptimizer):
            new = keras.optimizers.LossScaleOptimizer(new)
        _build_optimizer(self.model, new)
        if self.keep_iterations:
            new.iterations.assign(old.iterations)
        self.model.optimizer = new
        compile_config = getattr(self.model, "_compile_config", None)  # what .keras files save
        if compile_config is not None:
            compile_config.config["optimizer"] = new
        self.model.make_train_function(force=True)  # the traced step holds the old optimizer
        self._new, self._switched = new, True
