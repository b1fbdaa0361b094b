"""The classifier's head: which layer makes the logits, and initializing its bias well.

Karpathy 2019, "A recipe for training neural networks", *init well*: with the logits' bias
at the log class priors the untrained network already predicts the label frequencies, so
the initial loss is their entropy and the first steps are not spent learning the bias.
"""

from __future__ import annotations

import keras
import numpy as np

from models.inspect import walk

IMBALANCE_RATIO = 1.5  # largest / smallest class prior above which the bias is set


def logits_layer(model: keras.Model) -> keras.layers.Layer | None:
    """The layer producing the logits: the one named ``logits``, else the last Dense."""
    layers = list(walk(model))
    for layer in layers:
        if layer.name == "logits" and getattr(layer, "bias", None) is not None:
            return layer
    dense = [layer for layer in layers if isinstance(layer, keras.layers.Dense)
             and getattr(layer, "bias", None) is not None]
    return dense[-1] if dense else None


def class_prior_entropy(y: np.ndarray, num_classes: int) -> float:
    """The entropy −Σ p_c ln p_c of the label frequencies: the loss of predicting the priors.

    Karpathy 2019, "init well": with the logits' bias at ln p_c and tiny weights, the
    initial softmax loss is this number (ln C for balanced classes).
    """
    p = priors(y, num_classes)
    nz = p[p > 0]
    return float(-np.sum(nz * np.log(nz)))


def priors(y: np.ndarray, num_classes: int) -> np.ndarray:
    """The label frequencies p_c of classes 0..C-1 (zeros for an absent class)."""
    counts = np.bincount(np.asarray(y, dtype=np.int64).ravel(), minlength=num_classes)
    return counts[:num_classes] / max(counts.sum(), 1)


def init_output_bias(model: keras.Model, y_train: np.ndarray, num_classes: int, *,
                     min_ratio: float = IMBALANCE_RATIO) -> bool:
    """Sets the logits' bias to the log class priors when the classes are imbalanced.

    Karpathy 2019, "init well": with b_c = ln p_c the untrained softmax predicts the label
    frequencies, so the initial loss is already their entropy (:func:`class_prior_entropy`)
    and the first steps are not spent learning the bias (the "hockey stick").

    Args:
        model: a model whose logits layer (named ``logits``, else the last Dense) has a bias.
        y_train: the training labels (class ids).
        num_classes: C.
        min_ratio: act only when the largest prior is at least this times the smallest.

    Returns:
        True if the bias was changed; False for balanced classes or no logits bias.
    """
    layer = logits_layer(model)
    if layer is None or tuple(layer.bias.shape) != (num_classes,):
        return False
    p = priors(y_train, num_classes)
    if p.max() < min_ratio * p.min() and p.min() > 0:
        return False
    log_p = np.log(np.maximum(p, 1e-6))  # an absent class: ln 1e-6 ≈ −13.8, not −inf
    layer.bias.assign((log_p - log_p.mean()).astype(layer.bias.dtype))
    return True
