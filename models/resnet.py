"""CIFAR-style ResNet (depth 6n+2) with the five residual-unit variants of He et al. 2016.

He et al. 2016a, "Deep Residual Learning" (section 4.2, the 6n+2 CIFAR nets) and He et al.
2016b, "Identity Mappings in Deep Residual Networks", Fig. 4. Reads top to bottom:

    input (H, W, C)
    stem:    Conv3x3(width)  [-> norm -> act for a, b, c; d and e pre-activate in the blocks]
    3 stages of n blocks, widths (width, 2*width, 4*width); the first block of stages 2 and 3
             halves H and W (stride-2 conv1 and a stride-2 1x1 projection shortcut)
    d, e:    a final [norm ->] act, since their blocks end with a bare addition
    head:    GlobalAveragePooling2D -> (4*width,) -> Dense(num_classes)

Residual units (N = the configured norm, A = activation, C = 3x3 conv, x = shortcut):

    (a) original            C N A C N   (+x) A
    (b) BN after addition   C N A C     (+x) N A
    (c) ReLU before add     C N A C N A (+x)
    (d) ReLU-only pre-act   A C N A C N (+x)
    (e) full pre-act        N A C N A C (+x)

``norm_position`` swaps the N A pair between the two convolutions (and in the stem); the
variant fixes everything around the addition. Maxout needs its linear pieces right before the
max: where an activation has no conv in front of it (after the addition, on the block input,
and in the final activation of d/e) a 1x1 conv with ``pieces * channels`` outputs is inserted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras

from models import blocks, norms
from models.convnet import check_image_shape

VARIANTS = ("a", "b", "c", "d", "e")


def _act(x, k: blocks.Knobs, tag: str, *, after_linear: bool):
    # Maxout without a widened conv in front gets its own 1x1 linear pieces: (.., C) -> (.., kC).
    if not after_linear and blocks.pieces(k) > 1:
        x = blocks.linear(x, x.shape[-1] * blocks.pieces(k), k, f"pieces_{tag}", kernel_size=1)
    return blocks.dropout(blocks.activation(x, k, tag), k, tag)


def _conv(x, filters: int, k: blocks.Knobs, name: str, *, strides: int = 1, shifted=False,
          feeds_act=False):
    # A conv feeding an activation is widened for maxout; one feeding a shifting norm drops bias.
    width = filters * (blocks.pieces(k) if feeds_act else 1)
    return blocks.linear(x, width, k, name, kernel_size=3, strides=strides,
                         use_bias=not (shifted and k.norm in norms.SHIFTING))


def _block(x, filters: int, strides: int, variant: str, k: blocks.Knobs, tag: str):
    """One residual unit; ``x``: (batch, H, W, C_in) -> (batch, H/strides, W/strides, filters)."""
    def n(y, i):
        return blocks.norm(y, k, f"norm_{tag}_{i}")

    pre = x
    if variant == "d":
        pre = _act(x, k, f"{tag}_0", after_linear=False)
    elif variant == "e":
        pre = _act(n(x, 0), k, f"{tag}_0", after_linear=False)
    # Projection shortcut when the shape changes (option B); pre-activation variants project
    # the pre-activated input, as in the paper's code.
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = blocks.linear(pre, filters, k, f"proj_{tag}", kernel_size=1, strides=strides)

    # conv1 -> [N A | A N] -> conv2: norm_position decides the middle pair.
    y = _conv(pre, filters, k, f"conv_{tag}_1", strides=strides, shifted=k.before, feeds_act=True)
    if k.before:
        y = _act(n(y, 1), k, f"{tag}_1", after_linear=True)
    else:
        y = n(_act(y, k, f"{tag}_1", after_linear=True), 1)
    if variant in ("a", "d"):  # C N (+x)
        y = n(_conv(y, filters, k, f"conv_{tag}_2", shifted=True), 2)
    elif variant == "c":  # C N A (+x): conv2 feeds the activation through N
        y = _conv(y, filters, k, f"conv_{tag}_2", shifted=True, feeds_act=True)
        y = _act(n(y, 2), k, f"{tag}_2", after_linear=True)
    else:  # b, e: C (+x)
        y = _conv(y, filters, k, f"conv_{tag}_2")

    out = keras.layers.Add(name=f"add_{tag}")([y, shortcut])
    if variant == "a":
        out = _act(out, k, f"{tag}_2", after_linear=False)
    elif variant == "b":
        out = _act(n(out, 2), k, f"{tag}_2", after_linear=False)
    return out


def build(c: Mapping, input_shape: Sequence[int], num_classes: int, *,
          variable_size: bool = False) -> keras.Model:
    """Builds the ResNet from a complete model config (plain dict); outputs logits.

    Args:
        c: The ``model`` config; uses ``depth`` (6n+2), ``width``, ``variant`` and the shared
            knobs.
        input_shape: ``(H, W, C)``.
        num_classes: Number of logits.
        variable_size: Take images of any height and width (``keras.Input((None, None,
            C))``), e.g. for progressive resizing: every layer is size-agnostic (3x3 'same'
            convolutions, global average pooling head).

    Returns:
        A functional ``keras.Model`` named ``resnet``.
    """
    check_image_shape("resnet", input_shape)
    depth, width = blocks.check_integer(c, "depth", 8), blocks.check_integer(c, "width", 1)
    variant = str(c["variant"]).lower()
    if (depth - 2) % 6:
        raise ValueError(f"model.depth (resnet) must be 6n+2 with n >= 1 (8, 14, 20, ...), "
                         f"got {depth}")
    if variant not in VARIANTS:
        raise ValueError(f"model.variant (resnet) must be one of {VARIANTS}, got "
                         f"{c['variant']!r}")
    k = blocks.Knobs.from_config(c)
    n_blocks = (depth - 2) // 6

    shape = (None, None, input_shape[-1]) if variable_size else tuple(input_shape)
    inputs = keras.Input(shape, name="inputs")
    if variant in ("d", "e"):
        x = _conv(inputs, width, k, "conv_stem")  # (batch, H, W, width)
    else:
        x = _conv(inputs, width, k, "conv_stem", shifted=k.before, feeds_act=True)
        if k.before:
            x = _act(blocks.norm(x, k, "norm_stem"), k, "stem", after_linear=True)
        else:
            x = blocks.norm(_act(x, k, "stem", after_linear=True), k, "norm_stem")
    for s in range(3):
        for b in range(n_blocks):
            strides = 2 if (s > 0 and b == 0) else 1
            x = _block(x, width * 2**s, strides, variant, k, f"s{s}b{b}")
    if variant == "e":
        x = _act(blocks.norm(x, k, "norm_final"), k, "final", after_linear=False)
    elif variant == "d":
        x = _act(x, k, "final", after_linear=False)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)  # (batch, 4 * width)
    return keras.Model(inputs, blocks.logits(x, num_classes, k), name="resnet")
