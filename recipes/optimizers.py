"""The lectures' update rules as ``keras.optimizers`` objects: ``get(cfg.optimizer)``.

CS231n "Neural Networks 3", parameter updates: vanilla SGD, momentum, Nesterov momentum,
Adagrad, RMSprop, Adam (Kingma & Ba 2015) and AdamW (Loshchilov & Hutter 2019, decoupled
weight decay; L2 in the loss stays available as ``model.l2`` so the two can be compared).

Every optimizer is Keras's own; this module only maps the config branch onto it, with the
papers' defaults and argument checks that name the bad field. ``optimizer.ema`` > 0 turns on
Keras's own weight averaging (Polyak & Juditsky 1992; ``use_ema``, ``ema_momentum``): the
optimizer keeps an exponential moving average of the weights, which ``fit`` writes into the
model when it ends (``ema_overwrite_frequency=None``), and which
``recipes.callbacks.AveragedWeights`` swaps in for each epoch's validation and checkpoints.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import keras

from recipes.configs import config_fields

__all__ = ["NAMES", "get"]


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _sgd(c: dict[str, Any], **kw: Any) -> keras.optimizers.Optimizer:
    # Vanilla SGD: x -= lr * dx, momentum 0 whatever cfg.momentum says.
    return keras.optimizers.SGD(momentum=0.0, **kw)


def _momentum(c: dict[str, Any], **kw: Any) -> keras.optimizers.Optimizer:
    # v = mu * v - lr * dx; x += v.
    return keras.optimizers.SGD(momentum=float(c["momentum"]), **kw)


def _nesterov(c: dict[str, Any], **kw: Any) -> keras.optimizers.Optimizer:
    # Keras's form of Nesterov: x += mu * v - lr * dx after the velocity update.
    return keras.optimizers.SGD(momentum=float(c["momentum"]), nesterov=True, **kw)


def _adagrad(c: dict[str, Any], **kw: Any) -> keras.optimizers.Optimizer:
    # cache += dx**2; x -= lr * dx / sqrt(cache + eps). The lecture's cache starts at 0
    # (Keras's default accumulator of 0.1 is a TF1 leftover).
    return keras.optimizers.Adagrad(initial_accumulator_value=0.0,
                                    epsilon=float(c["epsilon"]), **kw)


def _rmsprop(c: dict[str, Any], **kw: Any) -> keras.optimizers.Optimizer:
    # cache = rho * cache + (1 - rho) * dx**2; x -= lr * dx / sqrt(cache + eps).
    return keras.optimizers.RMSprop(rho=float(c["rho"]), epsilon=float(c["epsilon"]), **kw)


def _adam(c: dict[str, Any], **kw: Any) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(beta_1=float(c["beta_1"]), beta_2=float(c["beta_2"]),
                                 epsilon=float(c["epsilon"]), **kw)


def _adamw(c: dict[str, Any], **kw: Any) -> keras.optimizers.Optimizer:
    # Decoupled: x -= lr * weight_decay * x, separately from the Adam step.
    return keras.optimizers.AdamW(weight_decay=float(c["weight_decay"]),
                                  beta_1=float(c["beta_1"]), beta_2=float(c["beta_2"]),
                                  epsilon=float(c["epsilon"]), **kw)


_BUILDERS: dict[str, Callable[..., keras.optimizers.Optimizer]] = {
    "sgd": _sgd,
    "momentum": _momentum,
    "nesterov": _nesterov,
    "adagrad": _adagrad,
    "rmsprop": _rmsprop,
    "adam": _adam,
    "adamw": _adamw,
}
_ALIASES = {"vanilla": "sgd", "sgd_momentum": "momentum", "nag": "nesterov"}

NAMES: tuple[str, ...] = tuple(_BUILDERS)
"""The registered optimizer names, in the lecture's order."""


def _real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _check(c: dict[str, Any]) -> None:
    name = c["name"]
    for field in ("momentum", "rho", "beta_1", "beta_2"):
        v = c[field]
        _require(_real(v) and 0.0 <= v < 1.0,
                 f"optimizer.{field} must be in [0, 1), got {v!r}; typical values are 0.9 "
                 "(momentum, rho, beta_1) and 0.999 (beta_2)")
    _require(_real(c["epsilon"]) and c["epsilon"] > 0,
             f"optimizer.epsilon must be > 0, got {c['epsilon']!r}; the Adam paper uses 1e-8")
    _require(_real(c["weight_decay"]) and c["weight_decay"] >= 0,
             f"optimizer.weight_decay must be >= 0, got {c['weight_decay']!r}")
    _require(c["weight_decay"] == 0 or name == "adamw",
             f"optimizer.weight_decay={c['weight_decay']!r} is decoupled weight decay and "
             f"applies to optimizer.name='adamw' only, got optimizer.name={name!r}; set "
             "optimizer.weight_decay=0 and use model.l2 for L2 in the loss, or use adamw")
    _require(_real(c["clipnorm"]) and c["clipnorm"] >= 0,
             f"optimizer.clipnorm must be >= 0 (0 = off), got {c['clipnorm']!r}")
    _require(_real(c["ema"]) and 0.0 <= c["ema"] < 1.0,
             f"optimizer.ema must be in [0, 1) (the weight average's momentum; 0 = off), got "
             f"{c['ema']!r}; try 0.99, or 0.999 for runs of many thousand steps")


def get(cfg: Any, learning_rate: float | keras.optimizers.schedules.LearningRateSchedule
        | None = None) -> keras.optimizers.Optimizer:
    """Returns the Keras optimizer that the ``optimizer`` config branch names.

    CS231n "Neural Networks 3": SGD, momentum, Nesterov, Adagrad, RMSprop, Adam; plus AdamW;
    with ``ema`` > 0, Keras's moving average of the weights (``use_ema=True``).

    Args:
        cfg: the ``optimizer`` branch (ConfigDict or dict; missing fields take base.py's
            defaults), a bare name, or None for base.py's default (Adam). An optimizer
            instance is returned as it is.
        learning_rate: overrides ``cfg.learning_rate``; a float or a
            ``LearningRateSchedule`` such as ``recipes.schedules.get`` returns.

    Returns:
        A new, unbuilt ``keras.optimizers.Optimizer``.

    Raises:
        ValueError: an unknown name (the valid ones are listed) or a bad field value.
    """
    if isinstance(cfg, keras.optimizers.Optimizer):
        return cfg
    c = config_fields(cfg, "optimizer")
    name = _ALIASES.get(c["name"], c["name"]) if isinstance(c["name"], str) else c["name"]
    _require(isinstance(name, str) and name in _BUILDERS,
             f"optimizer.name={c['name']!r} is not an optimizer; use one of {list(NAMES)}")
    c["name"] = name
    _check(c)
    lr = c["learning_rate"] if learning_rate is None else learning_rate
    if not isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        _require(_real(lr) and lr > 0,
                 f"optimizer.learning_rate must be > 0, got {lr!r}; try 1e-3 for adam, "
                 "1e-2 to 1e-1 for sgd/momentum")
        lr = float(lr)
    kw: dict[str, Any] = {"learning_rate": lr}
    if c["clipnorm"] > 0:
        kw["clipnorm"] = float(c["clipnorm"])
    if c["ema"] > 0:  # fit writes the average into the model at its end (overwrite: None)
        kw.update(use_ema=True, ema_momentum=float(c["ema"]), ema_overwrite_frequency=None)
    return _BUILDERS[name](c, **kw)
