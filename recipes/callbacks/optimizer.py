"""Optimizer-side callbacks: the learning rate used, and hyperparameters changed over a run.

Sections: learning rate (``LearningRateLogger``, with :func:`learning_rate_used`), optimizer
hyperparameters over the run (``MomentumSchedule``, ``SwitchOptimizer``). The monitors
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
from typing import Any

import keras
from keras import ops

from recipes import optimizers

__all__ = ["LearningRateLogger", "MomentumSchedule", "SwitchOptimizer", "inner_optimizer",
           "learning_rate_schedule", "learning_rate_used"]


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
        opt = inner_optimizer(self.model.optimizer)
        if hasattr(opt, "beta_1"):
            self._attr = "beta_1"
        elif hasattr(opt, "momentum"):
            self._attr = "momentum"
            # SGD keeps `momentums`, RMSprop `_momentums`: built only if momentum was > 0.
            if not (getattr(opt, "momentums", None) or getattr(opt, "_momentums", None)):
                raise ValueError(
                    f"MomentumSchedule: {type(opt).__name__} was built with momentum 0, so it "
                    "keeps no velocity to schedule; use optimizer.name='momentum' or "
                    "'nesterov' (SGD with momentum > 0)")
        else:
            raise ValueError(f"MomentumSchedule: {type(opt).__name__} has no momentum or "
                             "beta_1; use sgd momentum/nesterov, rmsprop, adam or adamw")

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
