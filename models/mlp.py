"""Fully connected network: the lecture's "2-layer net" and its deeper cousins.

Lecture: "Neural networks" / "Training neural networks I" (Dense -> activation stacks; the
10-layer net of the initialization experiment). Reads top to bottom:

    input (H, W, C) or (D,)  -> Flatten -> (D,)
    for units in hidden:      Dense(units * pieces) [-> norm] -> act [-> norm] -> dropout
    logits:                   Dense(num_classes)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras

from models import blocks


def build(c: Mapping, input_shape: Sequence[int], num_classes: int) -> keras.Model:
    """Builds an MLP from a complete model config (plain dict); the model outputs logits.

    Args:
        c: The ``model`` config (every field present); uses ``hidden`` and the shared knobs.
        input_shape: One example's shape: ``(D,)`` vectors (e.g. PCA output) or NHWC images.
        num_classes: Number of logits.

    Returns:
        A functional ``keras.Model`` named ``mlp``.
    """
    k = blocks.Knobs.from_config(c)
    hidden = blocks.check_sizes(c, "hidden", allow_empty=True)  # () = a linear classifier
    inputs = keras.Input(tuple(input_shape), name="inputs")
    # Images become vectors: (H, W, C) -> (H*W*C,); vectors pass through.
    x = keras.layers.Flatten(name="flatten")(inputs) if len(input_shape) != 1 else inputs
    for i, units in enumerate(hidden):
        x = blocks.unit(x, units, k, str(i))  # (batch, units)
    return keras.Model(inputs, blocks.logits(x, num_classes, k), name="mlp")
