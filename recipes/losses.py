"""Data losses on (one-hot labels, logits): ``get(cfg.loss, num_classes)``.

CS231n "Linear classification": the softmax classifier's cross-entropy and the multiclass
SVM's hinge loss L_i = Σ_{j≠y_i} max(0, s_j − s_{y_i} + Δ) (Weston & Watkins 1999); label
smoothing (Szegedy et al. 2016, "Rethinking the Inception Architecture") for softmax.

Labels reaching the loss are always one-hot float32 (or soft: label smoothing, MixUp,
CutMix), and models output logits (scores), so every loss here takes ``(y_true, logits)``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import keras
from keras import ops

from recipes.configs import config_fields

__all__ = ["NAMES", "MulticlassHinge", "get"]


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@keras.saving.register_keras_serializable(package="babysit")
class MulticlassHinge(keras.losses.Loss):
    """The multiclass SVM loss Σ_{j≠y} max(0, s_j − s_y + Δ) (Weston–Watkins), on logits.

    CS231n "Linear classification", multiclass SVM loss. Unlike Keras's ``CategoricalHinge``
    (Crammer–Singer: max(0, max_{j≠y} s_j − s_y + 1), the worst wrong class only), every
    wrong class inside the margin Δ contributes.

    Soft labels y (label mixtures from MixUp/CutMix) give the expectation over the true
    class, L = Σ_k y_k Σ_{j≠k} max(0, s_j − s_k + Δ): one-hot labels give the lecture's loss
    exactly, and, like cross-entropy, the loss is linear in y, so a MixUp label
    λ·y_a + (1−λ)·y_b gives λ·L(y_a) + (1−λ)·L(y_b). (An argmax would drop the mixture.)
    The cost is O(batch · classes²) memory, small for ≤ 1000 classes.

    Args:
        margin: Δ > 0; the lecture sets Δ = 1 (only its ratio to the weight scale matters).
        reduction: as for every ``keras.losses.Loss``.
        name: the loss's name.
        dtype: the computation dtype.
    """

    def __init__(self, margin: float = 1.0, reduction: str = "sum_over_batch_size",
                 name: str = "multiclass_hinge", dtype: Any = None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        _require(isinstance(margin, numbers.Real) and math.isfinite(margin) and margin > 0,
                 f"loss.svm_margin must be > 0, got {margin!r}; the lecture uses 1.0")
        self.margin = float(margin)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        s = ops.convert_to_tensor(y_pred)
        y = ops.cast(y_true, s.dtype)
        # margins[b, k, j] = max(0, s_j − s_k + Δ): the loss terms if k were the true class.
        margins = ops.relu(s[:, None, :] - s[:, :, None] + self.margin)
        off_diagonal = 1.0 - ops.eye(ops.shape(s)[-1], dtype=s.dtype)
        per_true_class = ops.sum(margins * off_diagonal, axis=-1)  # (batch, classes)
        return ops.sum(y * per_true_class, axis=-1)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"margin": self.margin})
        return config


def _softmax(c: dict[str, Any]) -> keras.losses.Loss:
    return keras.losses.CategoricalCrossentropy(from_logits=True,
                                                label_smoothing=float(c["label_smoothing"]))


def _svm(c: dict[str, Any]) -> keras.losses.Loss:
    _require(c["label_smoothing"] == 0,
             f"loss.label_smoothing={c['label_smoothing']!r} applies to loss.name='softmax' "
             "only, got loss.name='svm'; set loss.label_smoothing=0 or use softmax")
    return MulticlassHinge(margin=c["svm_margin"])


_BUILDERS = {"softmax": _softmax, "svm": _svm}
_ALIASES = {"cross_entropy": "softmax", "crossentropy": "softmax", "hinge": "svm"}

NAMES: tuple[str, ...] = tuple(_BUILDERS)
"""The registered loss names."""


def get(cfg: Any, num_classes: int) -> keras.losses.Loss:
    """Returns the loss that the ``loss`` config branch names, on (one-hot labels, logits).

    CS231n "Linear classification": softmax cross-entropy or the multiclass SVM hinge.

    Args:
        cfg: the ``loss`` branch (ConfigDict or dict; missing fields take base.py's
            defaults), a bare name, or None (softmax). A Loss instance is returned as it is.
        num_classes: the number of classes C ≥ 2 (the labels' last dimension).

    Returns:
        ``CategoricalCrossentropy(from_logits=True, label_smoothing=ε)`` for ``softmax``,
        ``MulticlassHinge(margin=Δ)`` for ``svm``.

    Raises:
        ValueError: an unknown name (the valid ones are listed) or a bad field value.
    """
    if isinstance(cfg, keras.losses.Loss):
        return cfg
    c = config_fields(cfg, "loss")
    name = _ALIASES.get(c["name"], c["name"])
    _require(name in _BUILDERS, f"loss.name={c['name']!r} is not a loss; use one of "
             f"{list(NAMES)}")
    _require(isinstance(num_classes, numbers.Integral) and num_classes >= 2,
             f"num_classes must be an integer >= 2, got {num_classes!r}")
    eps = c["label_smoothing"]
    _require(isinstance(eps, numbers.Real) and 0 <= eps < 1,
             f"loss.label_smoothing must be in [0, 1), got {eps!r}; try 0.1")
    return _BUILDERS[name](c)
