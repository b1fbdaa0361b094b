"""Building networks: ``build(cfg, input_shape, num_classes)`` and ``default_config()``.

Lecture: "Training neural networks" (activation functions, weight initialization, batch
normalization, regularization), applied to three architecture families, one per module:
``mlp``, ``convnet`` and ``resnet``. Their shared knobs (activation, init, norm and its
position, dropout, L1/L2, max-norm) are applied in one place, ``models.blocks``; the factories
``models.activations``, ``models.initializers`` and ``models.norms`` map config names onto
Keras objects; ``models.layers`` holds the two layers Keras lacks (Maxout,
WeightNormalization); ``models.inspect`` measures activation statistics.

The user's own networks join by name (``models.registry``): ``@models.register("tiny_cnn")``
(timm's ``register_model``), or ``model.arch="package.module:function"`` /
``"path/to/file.py:function"``; ``model.kwargs`` become the builder's keyword arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import ml_collections
from ml_collections import config_dict

from models import convnet, mlp, registry, resnet
from models.registry import is_user_arch, register, registered, unregister

__all__ = ["ARCHS", "VARIABLE_SIZE_ARCHS", "build", "default_config", "is_user_arch", "names",
           "register", "registered", "resolve_config", "unregister"]

#: The built-in architectures (``registry.BUILTIN``); ``names()`` adds the registered ones.
ARCHS = {"mlp": mlp.build, "convnet": convnet.build, "resnet": resnet.build}

#: The fields each built-in reads besides the shared knobs (for the model.kwargs error).
_OWN_FIELDS = {"mlp": ("hidden",), "convnet": ("widths", "blocks_per_stage", "head"),
               "resnet": ("depth", "width", "variant")}

#: The built-ins that take images of any height and width (``build(..., variable_size=True)``).
VARIABLE_SIZE_ARCHS = ("convnet", "resnet")


def names() -> list[str]:
    """The architecture names ``model.arch`` takes: the built-ins, then the registered ones.

    (Besides these, ``"package.module:function"`` and ``"path/to/file.py:function"``.)
    """
    return [*ARCHS, *registered()]


def default_config() -> ml_collections.ConfigDict:
    """Returns the ``model`` branch of the config tree with every field at its default.

    The same fields and defaults as ``recipes/configs/base.py``'s ``model`` branch (a test
    checks they agree).
    """
    c = ml_collections.ConfigDict()
    c.arch = "mlp"  # mlp | convnet | resnet | a registered name | "module:function" | "file.py:fn"
    # Keyword arguments for a user's builder (model.arch="module:function" or a registered
    # name); searchable by dotted path, e.g. model.kwargs.width=int:16:128.
    c.kwargs = ml_collections.ConfigDict()
    c.hidden = (50,)  # mlp hidden sizes
    c.widths = (32, 64)  # convnet stage widths
    c.blocks_per_stage = 1  # convnet
    c.head = "global_pool"  # convnet: global_pool | flatten
    c.depth = 20  # resnet: 6n+2
    c.width = 16  # resnet: first stage width
    c.variant = "a"  # resnet residual block, He et al. 2016 Fig. 4 (a..e)
    c.activation = "relu"  # models.activations.NAMES
    # Placeholders (None = the activation's default) so a locked config still takes
    # --config.model.activation_kw.alpha=0.1 from the command line.
    c.activation_kw = ml_collections.ConfigDict({
        "alpha": config_dict.placeholder(float),  # leaky_relu slope (0.01), elu alpha (1.0)
        "pieces": config_dict.placeholder(int),  # maxout pieces (2)
    })
    c.init = "he"  # models.initializers.NAMES
    c.init_scale = 0.01  # std of the `small` init
    # The classifier starts this many times smaller than `init` makes it, so logits start
    # near 0 and the initial loss near ln(C) (CS231n "check the initial loss"; timm's
    # ConvNeXt head_init_scale). 1.0 = the same init as the hidden layers.
    c.head_init_scale = 0.1
    c.bias_init = 0.0
    c.norm = "none"  # models.norms.NAMES
    c.norm_position = "before_activation"  # before_activation | after_activation
    c.groups = 8  # group norm
    c.dropout = 0.0
    c.l1 = 0.0
    c.l2 = 0.0
    c.max_norm = 0.0  # 0 = off
    return c


def resolve_config(cfg: Mapping | ml_collections.ConfigDict | None) -> dict:
    """Returns ``cfg`` as a complete plain dict: missing fields take the defaults.

    Raises:
        ValueError: naming any field ``default_config()`` does not have.
    """
    c = default_config().to_dict()
    if isinstance(cfg, ml_collections.ConfigDict):
        given = cfg.to_dict()
    elif cfg is None or isinstance(cfg, Mapping):
        given = dict(cfg or {})
    else:
        raise ValueError(f"the model config must be the model branch (a ConfigDict or dict) "
                         f"or None, got {type(cfg).__name__}: {cfg!r:.80}")
    unknown = sorted(set(given) - set(c))
    if unknown:
        raise ValueError(f"unknown model field(s) {unknown}; valid fields of model: {sorted(c)}")
    c.update(given)
    kw = c["activation_kw"]  # a ConfigDict in the config tree, a plain dict for the builders
    kw = kw.to_dict() if isinstance(kw, ml_collections.ConfigDict) else kw
    # None means "the activation's default", so a recipe may declare placeholders such as
    # activation_kw.alpha = None that a locked config still lets the CLI override.
    if isinstance(kw, Mapping) or kw is None:  # anything else: Knobs names the field
        c["activation_kw"] = {key: v for key, v in dict(kw or {}).items() if v is not None}
    c["kwargs"] = _kwargs(c["kwargs"])
    return c


def _kwargs(kw: Any) -> dict:
    """``model.kwargs`` as a plain dict of keyword arguments (nested ConfigDicts too)."""
    kw = kw.to_dict() if isinstance(kw, ml_collections.ConfigDict) else kw
    if kw is None:
        return {}
    if not isinstance(kw, Mapping):
        raise ValueError(f"model.kwargs must be a dict of keyword arguments for your builder "
                         f"(e.g. {{'width': 32}}), got {type(kw).__name__}: {kw!r:.80}")
    bad = [k for k in kw if not (isinstance(k, str) and k.isidentifier())]
    if bad:
        raise ValueError(f"model.kwargs: {bad!r} cannot be keyword argument names; use "
                         "Python identifiers such as width")
    return dict(kw)


def build(
    cfg: Mapping | ml_collections.ConfigDict | None,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    variable_size: bool = False,
) -> keras.Model:
    """Builds the network ``cfg`` describes: a built-in, a registered or a user's builder.

    Args:
        cfg: The ``model`` branch of the config tree (ConfigDict, dict or None); missing
            fields take the defaults of ``default_config()``. ``model.arch`` is mlp, convnet,
            resnet, a name from ``models.register``, ``"package.module:function"`` or
            ``"path/to/file.py:function"``; a user's builder is called as
            ``fn(cfg, input_shape, num_classes, **model.kwargs)`` with ``cfg`` the complete
            branch as a plain dict.
        input_shape: One example's shape, no batch axis: ``(H, W, C)`` images or ``(D,)``
            vectors (mlp only).
        num_classes: Number of output logits.
        variable_size: Build the network to take images of any height and width (a
            ``(None, None, C)`` input; ``input_shape`` still plans the layers), as progressive
            resizing needs; only ``VARIABLE_SIZE_ARCHS`` can.

    Returns:
        A ``keras.Model`` mapping inputs to ``(batch, num_classes)``: the built-ins' are
        functional, uncompiled and output logits; a user's builder's model is returned as
        it was built (compiled or not).

    Raises:
        ValueError: unknown fields, unknown names (listing the valid ones), a conv
            architecture on non-image inputs, an invalid value, model.kwargs on a built-in,
            or a user's builder that cannot be found, raises or returns no keras.Model.
    """
    c = resolve_config(cfg)
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    shape = tuple(int(d) for d in input_shape)
    arch = str(c["arch"]).strip()
    if variable_size and arch.lower() not in VARIABLE_SIZE_ARCHS:
        raise ValueError(f"model.arch={c['arch']!r} cannot take images of several sizes; "
                         f"use one of {', '.join(VARIABLE_SIZE_ARCHS)}")
    if arch.lower() in ARCHS:
        if c["kwargs"]:
            raise ValueError(_kwargs_on_builtin(arch.lower(), c["kwargs"]))
        if variable_size:
            return ARCHS[arch.lower()](c, shape, int(num_classes), variable_size=True)
        return ARCHS[arch.lower()](c, shape, int(num_classes))
    fn = registry.resolve(arch)
    if fn is None:
        listed = ", ".join(names())
        raise ValueError(f"model.arch={c['arch']!r} is not an architecture; use one of "
                         f"{listed}, or your own builder as 'package.module:function' or "
                         "'path/to/file.py:function'")
    return registry.call_builder(fn, arch, c, shape, int(num_classes), c["kwargs"])


def _kwargs_on_builtin(arch: str, kwargs: Mapping) -> str:
    own = ", ".join(f"model.{f}" for f in _OWN_FIELDS[arch])
    return (f"model.kwargs is for a user's builder; the built-in {arch} (model.arch="
            f"{arch!r}) takes {own} and the "
            f"shared fields (model.activation, model.init, model.norm, model.dropout, "
            f"model.l2, ...); got model.kwargs={kwargs!r}: remove it or set model.arch to "
            "your builder")
