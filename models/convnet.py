"""Plain convolutional network: stages of 3x3 conv units, each stage ending in 2x2 max pooling.

Lecture: "Convolutional neural networks" ([CONV -> RELU]*N -> POOL]*M -> FC, with the
VGG-style 3x3 convolutions). Reads top to bottom:

    input (H, W, C)
    for stage s, width w in widths:
        blocks_per_stage x  Conv3x3(w * pieces) [-> norm] -> act [-> norm] -> dropout
        MaxPool2x2          (H, W) -> (H/2, W/2); skipped once the map is 1 pixel wide
    head: global_pool (GlobalAveragePooling2D -> (w_last,)) or flatten (-> (H' * W' * w_last,))
    logits: Dense(num_classes)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras

from models import blocks

HEADS = ("global_pool", "flatten")


def check_image_shape(arch: str, input_shape: Sequence[int]) -> None:
    """Raises ValueError unless ``input_shape`` is one NHWC image, ``(H, W, C)``."""
    if len(input_shape) != 3:
        raise ValueError(
            f"model.arch={arch} needs rank-3 (H, W, C) image inputs, got input_shape="
            f"{tuple(input_shape)}; use model.arch=mlp for flat vectors (e.g. PCA output) or "
            "reshape the data"
        )


def build(c: Mapping, input_shape: Sequence[int], num_classes: int) -> keras.Model:
    """Builds the convnet from a complete model config (plain dict); outputs logits.

    Args:
        c: The ``model`` config; uses ``widths``, ``blocks_per_stage``, ``head`` and the
            shared knobs.
        input_shape: ``(H, W, C)``.
        num_classes: Number of logits.

    Returns:
        A functional ``keras.Model`` named ``convnet``.
    """
    check_image_shape("convnet", input_shape)
    if c["head"] not in HEADS:
        raise ValueError(f"model.head must be one of {HEADS}, got {c['head']!r}")
    widths = blocks.check_sizes(c, "widths", allow_empty=False)
    blocks.check_integer(c, "blocks_per_stage", 1)
    k = blocks.Knobs.from_config(c)
    inputs = keras.Input(tuple(input_shape), name="inputs")
    x = inputs
    for s, width in enumerate(widths):
        for b in range(int(c["blocks_per_stage"])):
            x = blocks.unit(x, width, k, f"s{s}b{b}", kernel_size=3)  # (batch, H, W, width)
        if min(x.shape[1], x.shape[2]) >= 2:
            x = keras.layers.MaxPooling2D(2, name=f"pool_s{s}")(x)  # (batch, H/2, W/2, width)
    if c["head"] == "global_pool":
        x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)  # (batch, width)
    else:
        x = keras.layers.Flatten(name="flatten")(x)  # (batch, H' * W' * width)
    return keras.Model(inputs, blocks.logits(x, num_classes, k), name="convnet")
