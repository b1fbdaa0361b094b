"""Weight-initialization factory: ``get(name_or_obj, **kw) -> keras.initializers.Initializer``.

Lecture: "Weight initialization" (small random numbers, Xavier, He) and the 10-layer
activation-statistics experiment (``recipes.experiments.init_stats``). Every name maps onto a
``keras.initializers`` class; where the lecture writes ``np.random.randn`` (a Gaussian) the
distribution is an *untruncated* normal:

=============  =============================================  ==================================
name           variance of each weight                        Keras class
=============  =============================================  ==================================
small          ``scale**2`` (scale default 0.01: 0.01*randn)  ``RandomNormal(0, scale)``
large          ``scale**2`` (scale default 1.0: randn)        ``RandomNormal(0, scale)``
xavier         ``1 / fan_in`` (the lecture's                  ``VarianceScaling(1, "fan_in",
               ``randn(fan_in, fan_out) / sqrt(fan_in)``;      "untruncated_normal")``
               this is LeCun normal, not Glorot's formula)
glorot         ``2 / (fan_in + fan_out)`` (Glorot & Bengio)   ``GlorotNormal`` (truncated,
                                                              variance-corrected)
he             ``2 / fan_in`` (He et al. 2015; the lecture's  ``VarianceScaling(2, "fan_in",
               ``randn / sqrt(fan_in / 2)``)                   "untruncated_normal")``
lecun          ``1 / fan_in``                                 ``LecunNormal`` (truncated,
                                                              variance-corrected)
orthogonal     rows/columns orthonormal, times ``gain``       ``Orthogonal(gain)``
=============  =============================================  ==================================

So ``xavier`` and ``lecun`` share a variance and differ only in the tails (Gaussian vs
truncated at 2 std). For convolutions fan_in = kernel_h * kernel_w * in_channels.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras

NAMES = ("small", "large", "xavier", "glorot", "he", "lecun", "orthogonal")
ALIASES = {
    "normal": "small",
    "randn": "large",
    "lecun_normal": "lecun",
    "glorot_normal": "glorot",
    "he_normal": "he",
    "kaiming": "he",
    "msra": "he",
}
_DEFAULTS = {
    "small": {"scale": 0.01},
    "large": {"scale": 1.0},
    "orthogonal": {"gain": 1.0},
}


def canonical_name(name: str) -> str:
    """Returns the registry name for ``name`` or an alias; ValueError listing NAMES if unknown."""
    key = str(name).lower().strip()
    key = ALIASES.get(key, key)
    if key not in NAMES:
        raise ValueError(
            f"Unknown initializer {name!r}; valid names: {', '.join(NAMES)} "
            f"(aliases: {', '.join(f'{a}={b}' for a, b in ALIASES.items())})"
        )
    return key


def get(identifier=None, **kw) -> keras.initializers.Initializer | None:
    """Returns a fresh Keras initializer.

    Args:
        identifier: ``None`` (returns None, as ``keras.initializers.get``), a registry name or
            alias, a dict (``{"name": "small", "scale": 0.1}`` or a serialized Keras
            initializer with ``class_name``), or an ``Initializer`` (returned as is).
        **kw: ``seed`` for every name; ``scale`` (the std) for small and large; ``gain`` for
            orthogonal. Other arguments raise ``ValueError``.

    Returns:
        A ``keras.initializers.Initializer`` or None.
    """
    if identifier is None:
        return None
    if isinstance(identifier, keras.initializers.Initializer):
        return identifier
    if isinstance(identifier, Mapping):
        if "class_name" in identifier:
            return keras.initializers.get(dict(identifier))
        spec = dict(identifier)
        return get(spec.pop("name"), **{**spec, **kw})
    key = canonical_name(identifier)
    allowed = {**_DEFAULTS.get(key, {}), "seed": None}
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise ValueError(f"Initializer {key!r} takes {sorted(allowed)}; got {unknown}")
    args = {**allowed, **kw}
    seed = args["seed"]
    if key in ("small", "large"):
        return keras.initializers.RandomNormal(0.0, float(args["scale"]), seed=seed)
    if key == "xavier":
        return keras.initializers.VarianceScaling(1.0, "fan_in", "untruncated_normal", seed=seed)
    if key == "he":
        return keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal", seed=seed)
    if key == "glorot":
        return keras.initializers.GlorotNormal(seed=seed)
    if key == "lecun":
        return keras.initializers.LecunNormal(seed=seed)
    return keras.initializers.Orthogonal(gain=float(args["gain"]), seed=seed)


@keras.saving.register_keras_serializable(package="babysit")
class Scaled(keras.initializers.Initializer):
    """Another initializer's values times ``factor`` (Keras has no such wrapper).

    Used for the classifier, which should start small so the initial loss is ln(C)
    (CS231n "check the initial loss"; timm's ``head_init_scale``).

    Args:
        initializer: the initializer to scale (an instance, a name of this registry, or a
            serialized Keras initializer).
        factor: the multiplier, > 0.
    """

    def __init__(self, initializer, factor: float = 1.0):
        self.initializer = initializer if isinstance(
            initializer, keras.initializers.Initializer) else (
            keras.initializers.deserialize(initializer) if isinstance(initializer, Mapping)
            else get(initializer))
        if not float(factor) > 0:
            raise ValueError(f"Scaled: factor must be > 0, got {factor!r}")
        self.factor = float(factor)

    def __call__(self, shape, dtype=None):
        return self.initializer(shape, dtype=dtype) * self.factor

    def get_config(self):
        return {"initializer": keras.initializers.serialize(self.initializer),
                "factor": self.factor}
