"""Normalization factory: ``get(name_or_obj, *, rank, groups, **kw)``.

Lecture: "Batch normalization" (Ioffe & Szegedy 2015) and its relatives: layer (Ba et al.
2016), group (Wu & He 2018), instance (Ulyanov et al. 2016) and weight normalization
(Salimans & Kingma 2016).

Two kinds of result, both documented here so builders treat them uniformly:

* ``none`` -> ``None``.
* batch / layer / group / instance -> a fresh Keras layer that *follows* the linear layer.
  All of them learn a shift (``center=True``), which is why a linear layer directly followed
  by one drops its bias (``SHIFTING``).
* ``weight`` -> a *wrapper*: a callable ``wrap(layer) -> layers.WeightNormalization(layer)``
  applied to the Dense/Conv itself, since weight norm reparameterizes the kernel instead of
  normalizing activations (``WRAPPERS``).

Per input rank (2 = ``(batch, features)``, 4 = NHWC): ``layer`` on images normalizes each
example over (H, W, C) with a per-channel scale and shift, i.e. ``GroupNormalization(groups=1)``;
``instance`` on vectors has no spatial axes to normalize over, so each example is normalized
over its features (the same computation as ``layer``); on images it is
``GroupNormalization(groups=-1)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import keras

from models import layers as layers_lib

NAMES = ("none", "batch", "layer", "group", "instance", "weight")
ALIASES = {
    "bn": "batch",
    "batchnorm": "batch",
    "batch_norm": "batch",
    "ln": "layer",
    "layernorm": "layer",
    "layer_norm": "layer",
    "gn": "group",
    "group_norm": "group",
    "in": "instance",
    "instance_norm": "instance",
    "wn": "weight",
    "weight_norm": "weight",
}
SHIFTING = ("batch", "layer", "group", "instance")  # followers with a learned shift (beta)
WRAPPERS = ("weight",)


def canonical_name(name: str | None) -> str:
    """Returns the registry name for ``name`` or an alias; ValueError listing NAMES if unknown."""
    if name is None:
        return "none"
    key = str(name).lower().strip()
    key = ALIASES.get(key, key)
    if key not in NAMES:
        raise ValueError(
            f"Unknown norm {name!r}; valid names: {', '.join(NAMES)} "
            f"(aliases: {', '.join(f'{a}={b}' for a, b in ALIASES.items())})"
        )
    return key


def get(
    identifier=None, *, rank: int = 2, groups: int = 8, **kw
) -> keras.layers.Layer | Callable[[keras.layers.Layer], keras.layers.Layer] | None:
    """Returns a normalization layer, a weight-norm wrapper, or None.

    Args:
        identifier: ``None`` or ``"none"`` (None), a registry name or alias, a dict
            (``{"name": "group", "groups": 4}`` or a serialized Keras layer with
            ``class_name``), or a layer (returned as is).
        rank: Rank of the tensor being normalized, batch included (2 dense, 4 conv).
        groups: Number of groups for ``group``.
        **kw: Passed to the Keras layer (``name``, ``epsilon``, ``momentum`` for batch, ...) or,
            for ``weight``, to ``WeightNormalization`` (``data_init``, ``name``).

    Returns:
        None, a fresh ``keras.layers.Layer``, or a callable wrapping a Dense/Conv layer.
    """
    if isinstance(identifier, keras.layers.Layer):
        return identifier
    if isinstance(identifier, Mapping):
        if "class_name" in identifier:
            return keras.layers.deserialize(dict(identifier))
        spec = dict(identifier)
        name = spec.pop("name")
        rank = spec.pop("rank", rank)
        groups = spec.pop("groups", groups)
        return get(name, rank=rank, groups=groups, **{**spec, **kw})
    key = canonical_name(identifier)
    if key == "none":
        return None
    if key == "weight":
        return functools.partial(layers_lib.WeightNormalization, **kw)
    if key == "batch":
        return keras.layers.BatchNormalization(**kw)
    if key == "group":
        return keras.layers.GroupNormalization(groups=int(groups), **kw)
    if rank == 2:  # layer, and instance on vectors: normalize each example over its features
        return keras.layers.LayerNormalization(**kw)
    return keras.layers.GroupNormalization(groups=1 if key == "layer" else -1, **kw)
