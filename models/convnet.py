"""Plain convolutional network: stages of 3x3 conv units, each stage ending in 2x2 max pooling.

Lecture: "Convolutional neural networks" ([CONV -> RELU]*N -> POOL]*M -> FC, with the
VGG-style 3x3 convolutions). Reads top to bottom:

    input (H, W, C)
    for stage s, width w in widths:
        blocks_per_stage x  Conv3x3(w * pieces) [-> norm] -> act [-> norm] -> dropout
        MaxPool2x2          (H, W) -> (H/2, W/2); skipped once the map is 1 pixel wide
                            (planned from the configured (H, W), also with ``variable_size``)
    head: global_pool (GlobalAveragePooling2D -> (w_last,)) or flatten (-> (H' * W' * w_last,))
    logits: Dense(num_classes)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras

from models import blocks

HEADS = ("global_pool", "flatten")


def pooled_stages(height: int, width: int, stages: int) -> list[bool]:
    """Which stages end in 2x2 max pooling for (height, width) inputs.

    A stage pools while its map is at least 2 pixels on each side ('valid' pooling floors).
    """
    plan = []
    for _ in range(int(stages)):
        plan.append(min(height, width) >= 2)
        if plan[-1]:
            height, width = height // 2, width // 2
    return plan


def check_image_shape(arch: str, input_shape: Sequence[int]) -> None:
    """Raises ValueError unless ``input_shape`` is one NHWC image, ``(H, W, C)``."""
    if len(input_shape) != 3:
        raise ValueError(
            f"model.arch={arch} needs rank-3 (H, W, C) image inputs, got input_shape="
            f"{tuple(input_shape)}; use model.arch=mlp for flat vectors (e.g. PCA output) or "
            "reshape the data"
        )


def build(c: Mapping, input_shape: Sequence[int], num_classes: int, *,
          variable_size: bool = False) -> keras.Model:
    """Builds the convnet from a complete model config (plain dict); outputs logits.

    Args:
        c: The ``model`` config; uses ``widths``, ``blocks_per_stage``, ``head`` and the
            shared knobs.
        input_shape: ``(H, W, C)``.
        num_classes: Number of logits.
        variable_size: Take images of any height and width (``keras.Input((None, None,
            C))``), e.g. for progressive resizing; pooling is still planned for (H, W).

    Returns:
        A functional ``keras.Model`` named ``convnet``.

    Raises:
        ValueError: a bad field; ``variable_size`` with ``head="flatten"``.
    """
    check_image_shape("convnet", input_shape)
    if c["head"] not in HEADS:
        raise ValueError(f"model.head must be one of {HEADS}, got {c['head']!r}")
    if variable_size and c["head"] == "flatten":
        raise ValueError("model.head=flatten: a flatten head fixes the input size, so the "
                         "convnet cannot take images of several sizes; use "
                         "model.head=global_pool")
    widths = blocks.check_sizes(c, "widths", allow_empty=False)
    blocks.check_integer(c, "blocks_per_stage", 1)
    k = blocks.Knobs.from_config(c)
    height, width_px, channels = (int(d) for d in input_shape)
    shape = (None, None, channels) if variable_size else (height, width_px, channels)
    inputs = keras.Input(shape, name="inputs")
    x = inputs
    plan = pooled_stages(height, width_px, len(widths))
    for s, width in enumerate(widths):
        for b in range(int(c["blocks_per_stage"])):
            x = blocks.unit(x, width, k, f"s{s}b{b}", kernel_size=3)  # (batch, H, W, width)
        if plan[s]:
            x = keras.layers.MaxPooling2D(2, name=f"pool_s{s}")(x)  # (batch, H/2, W/2, width)
    if c["head"] == "global_pool":
        x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)  # (batch, width)
    else:
        x = keras.layers.Flatten(name="flatten")(x)  # (batch, H' * W' * width)
    return keras.Model(inputs, blocks.logits(x, num_classes, k), name="convnet")
