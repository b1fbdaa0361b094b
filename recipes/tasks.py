"""What a classifier predicts and what its loss wants, read from the labels, the model and the loss.

Users write their outputs many ways: logits or probabilities (a softmax or sigmoid last
layer), one unit per class, one sigmoid unit for a yes/no question, several sigmoid units for
multi-label tags; and they compile sparse or one-hot losses. Keras reads none of this for
you, so a run that feeds one-hot targets to a sparse loss fails, and one that treats
probabilities as logits trains on the wrong loss. :func:`infer` reads it once, from

* the labels (``num_classes`` classes, or ``multilabel`` 0/1 targets): what the task *is*;
* the model's last layer (its units, and its activation: :func:`output_activation`);
* the loss, if the user compiled one (sparse or not, ``from_logits`` or not);

and returns a :class:`Task` that the pipeline (the targets' form), the loss, the accuracy
metric and the initial-loss check (the loss of outputs at their bias: ln C for C classes,
ln 2 per sigmoid unit) all follow. Written by hand: neither Keras nor KerasTuner has it.

Layer 2: imports keras and numpy only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

MULTICLASS, BINARY, MULTILABEL = "multiclass", "binary", "multilabel"
#: The targets' form, as the loss receives them: class ids (B,), one-hot (B, C), the 0/1
#: label of one sigmoid unit (B, 1), or 0/1 tags (B, K).
LABEL_FORMS = ("onehot", "sparse", "binary", "multilabel")
PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid")


@dataclasses.dataclass(frozen=True)
class Task:
    """A classification task as one model sees it."""

    kind: str  # multiclass | binary | multilabel
    num_classes: int  # C classes (2 for binary), or K tags for multilabel
    outputs: int  # units of the model's last layer
    activation: str  # the last layer's activation: softmax | sigmoid | linear | another name
    label_form: str  # one of LABEL_FORMS

    @property
    def from_logits(self) -> bool:
        """Whether the outputs are scores (no softmax/sigmoid on the last layer)."""
        return self.activation not in PROBABILITY_ACTIVATIONS

    def describe(self) -> str:
        """One line for a report: ``multiclass, 10 classes, softmax probabilities, one-hot``."""
        what = {MULTICLASS: f"{self.num_classes} classes", BINARY: "one output unit, 0/1 labels",
                MULTILABEL: f"{self.num_classes} independent 0/1 labels"}[self.kind]
        outs = "logits" if self.from_logits else f"{self.activation} probabilities"
        return f"{self.kind}, {what}, {outs}, {self.label_form} targets"


def output_layer(model: keras.Model) -> Any:
    """The operation that makes the model's (first) output: the last layer of a Sequential."""
    if isinstance(model, keras.Sequential) and model.layers:
        return model.layers[-1]
    try:
        return model.outputs[0]._keras_history.operation
    except (AttributeError, IndexError, ValueError, TypeError):
        return model.layers[-1] if getattr(model, "layers", None) else None


def output_activation(model: keras.Model) -> str:
    """The last layer's activation name (``linear`` when it has none)."""
    layer = output_layer(model)
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    op = type(layer).__name__.lower()  # keras.ops.softmax(x) / sigmoid(x): an op, no layer
    if op in PROBABILITY_ACTIVATIONS:
        return op
    act = getattr(layer, "activation", None)
    if act is None:
        return "linear"
    name = getattr(act, "__name__", None) or type(act).__name__
    return {"softmax_v2": "softmax", "identity": "linear"}.get(name, name)


def output_units(model: keras.Model) -> int:
    """Units of the model's output (its last axis)."""
    return int(model.outputs[0].shape[-1]) if getattr(model, "outputs", None) else int(
        model.output_shape[-1])


def loss_name(loss: Any) -> str:
    """A serialized Keras loss (string, class config or function) as its snake_case name."""
    if isinstance(loss, str):
        return loss.lower()
    if isinstance(loss, dict):
        return str(loss.get("config", {}).get("name") or loss.get("class_name", "")).lower()
    name = getattr(loss, "name", None) or getattr(loss, "__name__", None)
    return str(name or type(loss).__name__).lower()


def is_sparse_loss(loss: Any) -> bool:
    """Whether a (serialized) loss takes class ids rather than targets shaped like the output."""
    return "sparse" in loss_name(loss)


def loss_from_logits(loss: Any) -> bool | None:
    """A serialized loss's ``from_logits`` (False for a string name; None when it has none)."""
    if isinstance(loss, str):
        return False
    if isinstance(loss, dict):
        return loss.get("config", {}).get("from_logits")
    return getattr(loss, "from_logits", None)


def infer(model: keras.Model, *, num_classes: int, multilabel: bool = False,
          loss: Any = None, units: int | None = None) -> Task:
    """The task of ``model`` on labels of ``num_classes`` classes (or ``multilabel`` tags).

    Decided from the labels, not the loss: a classifier compiled with a regression loss (MSE
    on one-hot targets) is still a classifier, and the diagnosis names the mismatch.

    Args:
        model: the (built) model.
        num_classes: C, the classes of the labels (K tags when ``multilabel``).
        multilabel: the labels are (N, K) 0/1 tags.
        loss: the user's compiled loss (serialized or an object), or None for the config's.
        units: the output's width when known from a forward pass (a subclassed model has no
            symbolic outputs); default read from the model.

    Returns:
        The Task; its ``label_form`` is ``sparse`` only for a sparse loss.

    Raises:
        ValueError: the output units fit neither C classes nor one sigmoid unit.
    """
    units = output_units(model) if units is None else int(units)
    act = output_activation(model)
    if multilabel:
        kind, form = MULTILABEL, "multilabel"
        if units != num_classes:
            raise ValueError(f"model: {units} output units, but the labels are "
                             f"{num_classes} 0/1 tags; give the last layer {num_classes} "
                             "units (sigmoid or logits)")
    elif units == 1 and num_classes == 2:
        kind, form = BINARY, "binary"
    elif units == num_classes:
        kind, form = MULTICLASS, "onehot"
    else:
        fix = " or 1 unit (binary, sigmoid)" if num_classes == 2 else ""
        raise ValueError(f"model: outputs of shape ({units},) per example, but the data has "
                         f"{num_classes} classes; give the last layer {num_classes} units"
                         f"{fix}")
    if loss is not None and is_sparse_loss(loss):
        if kind != MULTICLASS:
            raise ValueError(f"model: the compiled loss {loss_name(loss)} takes class ids, but "
                             f"the task is {kind} with {units} output unit(s); compile with "
                             "binary_crossentropy")
        form = "sparse"
    return Task(kind, int(num_classes), units, act, form)


def accuracy_metric(task: Task) -> keras.metrics.Metric:
    """The accuracy that matches the targets' form, always named ``accuracy``."""
    if task.label_form == "sparse":
        return keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    if task.kind == MULTICLASS:
        return keras.metrics.CategoricalAccuracy(name="accuracy")
    # One 0/1 decision per unit: probabilities cut at 0.5, logits at 0.
    return keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0 if task.from_logits
                                        else 0.5)


def probabilities(task: Task, outputs: np.ndarray) -> np.ndarray:
    """The model's outputs as probabilities: softmax/sigmoid of logits, else unchanged."""
    z = np.asarray(outputs, dtype=np.float64)
    if not task.from_logits:
        return z
    if task.kind == MULTICLASS:
        z = np.exp(z - z.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-z))


def binary_entropy(p: np.ndarray) -> float:
    """Mean over units of −p ln p − (1−p) ln(1−p): the loss of predicting each unit's prior."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return float(np.mean(-p * np.log(p) - (1 - p) * np.log(1 - p)))
