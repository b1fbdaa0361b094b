"""Activation factory: ``get(name_or_obj, **kw) -> keras.layers.Layer``.

Lecture: "Activation functions" (sigmoid, tanh, ReLU, Leaky ReLU, PReLU, ELU, Maxout), plus
GELU and SiLU. Shaped like ``keras.activations.get``, but it returns a *layer*, because PReLU
(a learned slope) and maxout (a max over pieces) carry state or change the width, and a layer
gives every activation a name the inspector can find (the builders name them ``act_*``).

Maxout is the max half of a maxout unit (``layers.MaxoutActivation``): it divides the last
axis by ``pieces``, so a builder that uses it widens the preceding Dense/Conv by
``pieces(layer)``; a norm can then sit between the linear layer and the max.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import keras

from models import layers as layers_lib

NAMES = ("sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu", "maxout", "gelu", "silu")
ALIASES = {
    "logistic": "sigmoid",
    "lrelu": "leaky_relu",
    "leakyrelu": "leaky_relu",
    "swish": "silu",
}
# Units that flatten out at both ends (inspect counts their saturated fraction) and units
# with a flat or negative side where a unit can die (inspect counts their dead fraction).
SATURATING = ("sigmoid", "tanh")
RECTIFIERS = ("relu", "leaky_relu", "prelu", "elu", "gelu", "silu")

# name -> (allowed keyword arguments with their defaults, factory)
_PLAIN = {"sigmoid", "tanh", "relu", "gelu", "silu"}
_DEFAULTS = {
    "leaky_relu": {"alpha": 0.01},  # the lecture's max(0.01x, x)
    "prelu": {"alpha": 0.25, "shared_axes": None},  # He et al. 2015 start at 0.25
    "elu": {"alpha": 1.0},
    "maxout": {"pieces": 2},
}


def canonical_name(name: str) -> str:
    """Returns the registry name for ``name`` or an alias; ValueError listing NAMES if unknown."""
    key = str(name).lower().strip()
    key = ALIASES.get(key, key)
    if key not in NAMES:
        raise ValueError(
            f"Unknown activation {name!r}; valid names: {', '.join(NAMES)} "
            f"(aliases: {', '.join(f'{a}={b}' for a, b in ALIASES.items())})"
        )
    return key


def width_factor(layer: keras.layers.Layer) -> int:
    """How many times the preceding linear layer must be widened: maxout's pieces, else 1."""
    return layer.pieces if isinstance(layer, layers_lib.MaxoutActivation) else 1


def get(identifier=None, **kw) -> keras.layers.Layer:
    """Returns an activation layer.

    Args:
        identifier: ``None`` (a linear ``Activation``), a registry name or alias, a dict
            (``{"name": "leaky_relu", "alpha": 0.1}`` or a serialized Keras layer with
            ``class_name``), a callable activation function, or a layer (returned as is).
        **kw: ``name`` (the layer name) and the activation's own arguments: ``alpha`` for
            leaky_relu (default 0.01), prelu (initial slope, 0.25) and elu (1.0);
            ``shared_axes`` for prelu (e.g. ``(1, 2)``: one slope per channel);
            ``pieces`` for maxout (2). Other arguments raise ``ValueError``.

    Returns:
        A fresh ``keras.layers.Layer``.
    """
    if isinstance(identifier, keras.layers.Layer):
        return identifier
    if identifier is None:
        return keras.layers.Activation("linear", **kw)
    if isinstance(identifier, Mapping):
        if "class_name" in identifier:
            return keras.layers.deserialize(dict(identifier))
        spec = dict(identifier)
        return get(spec.pop("name"), **{**spec, **kw})
    if callable(identifier) and not isinstance(identifier, str):
        return keras.layers.Activation(identifier, **kw)
    key = canonical_name(identifier)
    layer_name = kw.pop("name", None)
    allowed = _DEFAULTS.get(key, {})
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise ValueError(
            f"Activation {key!r} takes {sorted(allowed) or 'no arguments'}; got {unknown}"
        )
    args = {**allowed, **kw}
    return _make(key, args, layer_name)


def _make(key: str, args: dict, name: str | None) -> keras.layers.Layer:
    if key in _PLAIN:
        return keras.layers.Activation(key, name=name)
    if key == "leaky_relu":
        return keras.layers.LeakyReLU(negative_slope=float(args["alpha"]), name=name)
    if key == "prelu":
        shared = args["shared_axes"]
        return keras.layers.PReLU(
            alpha_initializer=keras.initializers.Constant(float(args["alpha"])),
            shared_axes=list(shared) if shared else None,
            name=name,
        )
    if key == "elu":
        return keras.layers.ELU(alpha=float(args["alpha"]), name=name)
    return layers_lib.MaxoutActivation(pieces=int(args["pieces"]), name=name)


_BY_CLASS: dict[type, str] = {
    keras.layers.ReLU: "relu",
    keras.layers.LeakyReLU: "leaky_relu",
    keras.layers.PReLU: "prelu",
    keras.layers.ELU: "elu",
    layers_lib.MaxoutActivation: "maxout",
}


def name_of(layer: keras.layers.Layer | Callable) -> str | None:
    """Maps an activation layer (or function) back to its registry name; None if not one."""
    for cls, key in _BY_CLASS.items():
        if isinstance(layer, cls):
            return key
    fn = layer.activation if isinstance(layer, keras.layers.Activation) else layer
    if not callable(fn):
        return None
    fn_name = getattr(fn, "__name__", "")
    fn_name = ALIASES.get(fn_name, fn_name)
    return fn_name if fn_name in NAMES else None
