"""Looking inside a model: its layers, activation statistics, a float64 copy.

Lecture: "Weight initialization" (the 10-layer net: per-layer mean and std of the
activations, and one histogram per layer) and "Babysitting the learning process" (dead ReLUs,
saturated tanh/sigmoid units).

The builders name every activation layer ``act_*`` (``models.blocks.ACT_PREFIX``); one probe
model with all those outputs reads every hidden layer's post-activation values in one pass.
:func:`walk` visits every layer (nested models, wrappers); :func:`custom_layers` names the
layers that are not Keras's own and :func:`as_float64` copies a model to float64, both for
the gradient check (CS231n "gradient check": compare in double precision).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import keras
import numpy as np

from models import activations
from models.blocks import ACT_PREFIX

# |tanh| > 0.99 and sigmoid outside [0.01, 0.99] sit where the gradient is under ~2% of its
# peak: the flat ends of the lecture's saturation plots.
SATURATION = 0.99


def walk(layer: Any, *, include_self: bool = False) -> Iterator[keras.layers.Layer]:
    """Every layer inside ``layer``, depth first: nested models' layers and wrapped layers.

    Args:
        layer: a model or layer.
        include_self: yield ``layer`` itself first.
    """
    if include_self:
        yield layer
    for child in getattr(layer, "layers", None) or ():
        yield from walk(child, include_self=True)
    inner = getattr(layer, "layer", None)  # wrappers (WeightNormalization)
    if isinstance(inner, keras.layers.Layer):
        yield from walk(inner, include_self=True)


@contextlib.contextmanager
def float64() -> Iterator[None]:
    """Builds layers in float64 inside the block (floatx and the dtype policy), then restores."""
    old_floatx, old_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        yield
    finally:
        keras.config.set_floatx(old_floatx)
        keras.config.set_dtype_policy(old_policy)


def custom_layers(model: keras.Model) -> list[str]:
    """Class names of the layers not from Keras (Maxout, WeightNormalization, user layers)."""
    names = []
    for layer in walk(model):
        if type(layer).__module__.split(".")[0] != "keras" and not isinstance(
                layer, keras.Model):
            names.append(type(layer).__name__)
    return sorted(set(names))


def _to_float64(value: Any) -> Any:
    """A serialized Keras object with every float32 dtype (and dtype policy) made float64."""
    if isinstance(value, Mapping):
        out = {k: _to_float64(v) for k, v in value.items()}
        if out.get("class_name") == "DTypePolicy" and isinstance(out.get("config"), Mapping):
            out["config"] = {**out["config"], "name": "float64"}
        for key in ("dtype", "batch_input_shape_dtype"):
            if out.get(key) in ("float32", "float16", "bfloat16"):
                out[key] = "float64"
        return out
    if isinstance(value, list):
        return [_to_float64(v) for v in value]
    return value


def as_float64(model: keras.Model) -> keras.Model:
    """A float64 copy of ``model`` with the same weights (through its serialized config)."""
    if all(w.dtype in ("float64", "bool", "int32", "int64") for w in model.weights):
        return model
    with float64():
        clone = keras.saving.deserialize_keras_object(
            _to_float64(keras.saving.serialize_keras_object(model)))
        if not clone.built:
            clone.build(model.input_shape)
    clone.set_weights([w.astype(np.float64) if np.issubdtype(w.dtype, np.floating) else w
                       for w in model.get_weights()])
    return clone


def activation_layers(model: keras.Model, prefix: str = ACT_PREFIX) -> list[keras.layers.Layer]:
    """Returns the model's hidden activation layers in graph order.

    The built-in networks name theirs ``prefix*``. A user's model has other names: then every
    layer but the last whose output is a nonlinearity counts — an activation layer (ReLU,
    Activation("tanh"), ...) or a Dense/Conv layer with a nonlinear ``activation``.
    """
    named = [layer for layer in model.layers if layer.name.startswith(prefix)]
    if named:
        return named
    hidden = list(model.layers)[:-1]  # the last layer makes the outputs, not hidden units
    return [layer for layer in hidden if _nonlinear(layer)]


def _nonlinear(layer: keras.layers.Layer) -> bool:
    """Whether a layer's output is a nonlinearity's (an activation layer or activation=...)."""
    if activations.name_of(layer) is not None and not hasattr(layer, "kernel"):
        return True
    fn = getattr(layer, "activation", None)
    name = getattr(fn, "__name__", "linear") if callable(fn) else "linear"
    return name not in ("linear", "identity")


def _saturated(kind: str | None, a: np.ndarray) -> float:
    # Fraction of all values (examples x units) in the flat ends; 0 for non-saturating units.
    if kind == "tanh":
        return float(np.mean(np.abs(a) > SATURATION))
    if kind == "sigmoid":
        return float(np.mean((a < 1.0 - SATURATION) | (a > SATURATION)))
    return 0.0


def _dead(kind: str | None, a: np.ndarray) -> float:
    # A unit (feature, or conv channel: every axis but the last is reduced) is dead when it
    # sits on the flat/negative side for every example: output == 0 for ReLU, <= 0 for the
    # leaky/ELU/GELU/SiLU relatives (their input was <= 0 everywhere).
    if kind not in activations.RECTIFIERS:
        return 0.0
    per_unit = a.reshape(-1, a.shape[-1])
    return float(np.mean(np.all(per_unit <= 0.0, axis=0)))


def activation_stats(
    model: keras.Model, x, *, bins: int = 30, training: bool = False, prefix: str = ACT_PREFIX
) -> list[dict]:
    """Measures every hidden layer's post-activation outputs on ``x``.

    Args:
        model: A model from ``models.build`` (or any model whose activation layers are named
            ``prefix*``).
        x: One batch of inputs, fed in a single call (keep it modest: a few thousand rows).
        bins: Histogram bins per layer.
        training: Run in training mode (BatchNorm uses the batch statistics, dropout is on).
        prefix: Name prefix of the activation layers.

    Returns:
        One dict per activation layer, in graph order: ``name``, ``activation`` (registry
        name or None), ``shape`` (output shape without batch), ``mean``, ``std``,
        ``saturated`` (fraction of values in tanh/sigmoid's flat ends; 0 otherwise), ``dead``
        (fraction of units never positive on ``x``, ReLU family; 0 otherwise) and ``hist``
        (``{"counts": [...], "edges": [...]}``). Plain Python types, JSON-ready.

    Raises:
        ValueError: if the model has no activation layers named ``prefix*``.
    """
    acts = activation_layers(model, prefix)
    if not acts:
        raise ValueError(f"model {model.name!r} has no activation layers named {prefix!r}*")
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    probe = keras.Model(inputs, [layer.output for layer in acts])
    outs = probe(x, training=training)
    outs = outs if isinstance(outs, list | tuple) else [outs]
    records = []
    for layer, out in zip(acts, outs):
        a = np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float64)
        kind = activations.name_of(layer)
        if kind is None and callable(getattr(layer, "activation", None)):
            kind = activations.name_of(layer.activation)  # Dense/Conv(activation="relu")
        counts, edges = np.histogram(a, bins=bins)
        records.append(
            {
                "name": layer.name,
                "activation": kind,
                "shape": [int(d) for d in a.shape[1:]],
                "mean": float(a.mean()),
                "std": float(a.std()),
                "saturated": _saturated(kind, a),
                "dead": _dead(kind, a),
                "hist": {"counts": counts.tolist(), "edges": edges.tolist()},
            }
        )
    return records


def plot_activation_stats(
    stats: Sequence[Mapping] | Mapping[str, Sequence[Mapping]], path: str | os.PathLike
) -> str:
    """Writes the lecture's figure: per-layer mean/std curves and per-layer histograms.

    Args:
        stats: One run's ``activation_stats`` list, or a mapping ``label -> list`` (one row
            of the figure per run, as in the initialization experiment).
        path: The PNG to write (atomically: a temporary file, then ``os.replace``).

    Returns:
        ``str(path)``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = dict(stats) if isinstance(stats, Mapping) else {"": list(stats)}
    n_cols = 1 + max(len(r) for r in runs.values())
    fig, axes = plt.subplots(
        len(runs), n_cols, figsize=(2.0 * n_cols + 1.5, 1.9 * len(runs)), squeeze=False
    )
    for row, (label, records) in zip(axes, runs.items()):
        layers = np.arange(1, len(records) + 1)
        row[0].plot(layers, [r["mean"] for r in records], "o-", ms=3, label="mean")
        row[0].plot(layers, [r["std"] for r in records], "s-", ms=3, label="std")
        row[0].set_title(label or "activations", fontsize=8)
        row[0].set_xlabel("layer", fontsize=7)
        row[0].legend(fontsize=6)
        row[0].tick_params(labelsize=6)
        for i, ax in enumerate(row[1:]):
            if i >= len(records):
                ax.axis("off")
                continue
            edges = np.asarray(records[i]["hist"]["edges"])
            ax.bar(edges[:-1], records[i]["hist"]["counts"], width=np.diff(edges), align="edge")
            ax.set_title(f"layer {i + 1}", fontsize=7)
            ax.tick_params(labelsize=5)
            ax.set_yticks([])
    fig.tight_layout()
    path = os.fspath(path)
    tmp = f"{path}.tmp"
    fig.savefig(tmp, format="png", dpi=72)
    plt.close(fig)
    os.replace(tmp, path)
    return path
