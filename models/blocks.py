"""The pieces every architecture shares: linear layer, norm, activation, head.

One place decides the lecture's ordering rules, so mlp, convnet and resnet agree:

* ``unit``: linear -> norm -> activation -> dropout (``before_activation``, Ioffe & Szegedy
  2015) or linear -> activation -> norm -> dropout (``after_activation``).
* A linear layer directly followed by a norm with its own shift (batch/layer/group/instance)
  drops its bias: the norm's beta does that job (Ioffe & Szegedy 2015, section 3.2).
* ``norm="weight"`` wraps the linear layer (``layers.WeightNormalization``) instead of adding a
  following layer.
* Maxout widens the linear layer by ``pieces`` so the norm (if before) sees every piece.
* Every activation layer is named ``act_<tag>`` so ``models.inspect`` can find it; dropout
  (inverted, ``keras.layers.Dropout``) follows each hidden activation (and its norm, if after).
* Every Dense/Conv, the logits included, gets the same ``L1L2`` regularizer and ``MaxNorm``
  constraint on its incoming weights.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping

import keras

from models import activations, initializers, norms

ACT_PREFIX = "act_"
POSITIONS = ("before_activation", "after_activation")


@dataclasses.dataclass(frozen=True)
class Knobs:
    """The ``model`` config fields every architecture honours, validated once."""

    activation: str
    activation_kw: Mapping
    init: str
    init_scale: float
    head_init_scale: float
    bias_init: float
    norm: str
    norm_position: str
    groups: int
    dropout: float
    l1: float
    l2: float
    max_norm: float

    @classmethod
    def from_config(cls, c: Mapping) -> Knobs:
        """Picks and checks the shared fields of a (complete, plain-dict) model config.

        Raises:
            ValueError: naming the bad field (``model.dropout``, ...) and its valid range.
        """
        kw_given = c["activation_kw"] or {}
        if not isinstance(kw_given, Mapping):
            raise ValueError(f"model.activation_kw must be a dict of the activation's "
                             f"arguments (e.g. {{'alpha': 0.1}}), got {kw_given!r}")
        _named("model.activation", activations.canonical_name, c["activation"])
        _named("model.activation_kw", lambda: activations.get(c["activation"], **kw_given))
        _named("model.init", initializers.canonical_name, c["init"])
        _named("model.norm", norms.canonical_name, c["norm"])
        if c["norm_position"] not in POSITIONS:
            raise ValueError(f"model.norm_position must be one of {POSITIONS}, got "
                             f"{c['norm_position']!r}")
        check_number(c, "dropout", lambda v: 0.0 <= v < 1.0, "a number in [0, 1) (0 = off)")
        check_number(c, "l1", lambda v: v >= 0.0, "a number >= 0 (0 = off)")
        check_number(c, "l2", lambda v: v >= 0.0, "a number >= 0 (0 = off)")
        check_number(c, "max_norm", lambda v: v >= 0.0, "a number >= 0 (0 = off)")
        check_number(c, "init_scale", lambda v: v > 0.0, "a number > 0 (init=small's std)")
        check_number(c, "head_init_scale", lambda v: v > 0.0, "a number > 0 (1 = hidden init)")
        check_number(c, "bias_init", lambda v: True, "a finite number")
        check_integer(c, "groups", 1)
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: c[k] for k in fields}
        kw["activation_kw"] = dict(kw_given)
        kw["norm"] = norms.canonical_name(c["norm"])
        return cls(**kw)

    @property
    def before(self) -> bool:
        return self.norm_position == "before_activation"


def _named(field: str, check, *args) -> None:
    """Runs a factory's check, prefixing its error with the config field it came from."""
    try:
        check(*args)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{field}: {e}") from e


def check_number(c: Mapping, field: str, ok, rule: str) -> float:
    """Returns ``c[field]`` as a float; ValueError ``model.FIELD must be RULE`` unless ``ok``."""
    v = c[field]
    if (isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v)
            or not ok(float(v))):
        raise ValueError(f"model.{field} must be {rule}, got {v!r}")
    return float(v)


def check_integer(c: Mapping, field: str, low: int) -> int:
    """Returns ``c[field]`` as an int; ValueError unless it is an integer ``>= low``."""
    v = c[field]
    if not _is_int(v) or v < low:
        raise ValueError(f"model.{field} must be an integer >= {low}, got {v!r}")
    return int(v)


def check_sizes(c: Mapping, field: str, *, allow_empty: bool) -> list[int]:
    """Returns ``c[field]`` as a list of layer sizes; ValueError unless all are ints >= 1."""
    v = c[field]
    ok = isinstance(v, (tuple, list)) and all(_is_int(u) and u >= 1 for u in v)
    if not ok or not (v or allow_empty):
        empty = "" if allow_empty else "non-empty "
        raise ValueError(f"model.{field} must be a {empty}tuple of integers >= 1, e.g. "
                         f"--config.model.{field}='(64, 32)', got {v!r}")
    return [int(u) for u in v]


def _is_int(v) -> bool:
    return (isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
            and float(v).is_integer())


def kernel_initializer(k: Knobs) -> keras.initializers.Initializer:
    """A fresh kernel initializer; ``init_scale`` is the std of ``small``."""
    # `large` is N(0, 1) by definition and the others take their variance from the fans.
    if initializers.canonical_name(k.init) == "small":
        return initializers.get(k.init, scale=k.init_scale)
    return initializers.get(k.init)


def _regularizer(k: Knobs):
    return keras.regularizers.L1L2(l1=k.l1, l2=k.l2) if (k.l1 or k.l2) else None


def _constraint(k: Knobs, rank: int):
    # MaxNorm over each output unit's incoming weights: every kernel axis but the last.
    axis = 0 if rank == 2 else list(range(rank - 1))
    return keras.constraints.MaxNorm(k.max_norm, axis=axis) if k.max_norm > 0 else None


def linear(x, units: int, k: Knobs, name: str, *, kernel_size: int = 0, strides: int = 1,
           use_bias: bool = True):
    """Dense (``kernel_size=0``) or 'same'-padded Conv2D, weight-normalized if norm=weight."""
    common = dict(
        use_bias=use_bias,
        kernel_initializer=kernel_initializer(k),
        bias_initializer=keras.initializers.Constant(k.bias_init),
        kernel_regularizer=_regularizer(k),
    )
    if kernel_size:
        layer = keras.layers.Conv2D(units, kernel_size, strides=strides, padding="same",
                                    kernel_constraint=_constraint(k, 4), name=name, **common)
    else:
        layer = keras.layers.Dense(units, kernel_constraint=_constraint(k, 2), name=name, **common)
    if k.norm in norms.WRAPPERS:
        layer = norms.get(k.norm, name=f"wn_{name}")(layer)
    return layer(x)


def norm(x, k: Knobs, name: str):
    """Applies the configured following norm (identity for none and weight)."""
    if k.norm == "none" or k.norm in norms.WRAPPERS:
        return x
    channels = x.shape[-1]
    if k.norm == "group" and channels % k.groups:
        raise ValueError(
            f"model.groups={k.groups}: group norm at {name!r} has {channels} channels, not "
            "divisible by it; choose model.groups dividing every layer width"
        )
    return norms.get(k.norm, rank=len(x.shape), groups=k.groups, name=name)(x)


def activation(x, k: Knobs, tag: str):
    """Applies the activation, named ``act_<tag>``."""
    kw = dict(k.activation_kw)
    if len(x.shape) == 4 and activations.canonical_name(k.activation) == "prelu":
        kw.setdefault("shared_axes", (1, 2))  # one slope per channel, as He et al. 2015
    return activations.get(k.activation, name=f"{ACT_PREFIX}{tag}", **kw)(x)


def dropout(x, k: Knobs, tag: str):
    """Inverted dropout (``keras.layers.Dropout``) after a hidden activation; off at 0."""
    return keras.layers.Dropout(k.dropout, name=f"drop_{tag}")(x) if k.dropout > 0 else x


def pieces(k: Knobs) -> int:
    """Width factor of the linear layer feeding an activation (maxout's k, else 1)."""
    return activations.width_factor(activations.get(k.activation, **k.activation_kw))


def shifted(k: Knobs) -> bool:
    """True when a shifting norm directly follows the linear layer (so it drops its bias)."""
    return k.norm in norms.SHIFTING and k.before


def unit(x, units: int, k: Knobs, tag: str, *, kernel_size: int = 0, strides: int = 1):
    """One hidden unit: linear -> norm -> activation (or linear -> act -> norm) -> dropout.

    ``x``: ``(batch, features)`` for Dense units, ``(batch, H, W, C)`` for conv units
    (``kernel_size > 0``); returns ``(batch, units)`` or ``(batch, H', W', units)``.
    """
    x = linear(x, units * pieces(k), k, f"{'conv' if kernel_size else 'dense'}_{tag}",
               kernel_size=kernel_size, strides=strides, use_bias=not shifted(k))
    if k.before:
        x = norm(x, k, f"norm_{tag}")
    x = activation(x, k, tag)
    if not k.before:
        x = norm(x, k, f"norm_{tag}")
    return dropout(x, k, tag)


def logits(x, num_classes: int, k: Knobs):
    """The classifier: a plain Dense, regularized and constrained, never normalized.

    Under a mixed dtype policy it computes in its variables' dtype, float32 (Keras's
    mixed-precision guide: the outputs feeding the softmax and the loss stay in float32);
    under any other policy (float64 for the gradient check) it follows the policy.
    """
    policy = keras.config.dtype_policy()
    mixed = policy.compute_dtype != policy.variable_dtype
    return keras.layers.Dense(
        num_classes,
        dtype=policy.variable_dtype if mixed else None,
        kernel_initializer=initializers.Scaled(kernel_initializer(k), k.head_init_scale),
        kernel_regularizer=_regularizer(k),
        kernel_constraint=_constraint(k, 2),
        name="logits",
    )(x)
