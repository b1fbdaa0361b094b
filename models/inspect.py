"""Activation statistics per hidden layer, and the lecture's plot of them.

Lecture: "Weight initialization" (the 10-layer net: per-layer mean and std of the
activations, and one histogram per layer) and "Babysitting the learning process" (dead ReLUs,
saturated tanh/sigmoid units).

The builders name every activation layer ``act_*`` (``models.blocks.ACT_PREFIX``); one probe
model with all those outputs reads every hidden layer's post-activation values in one pass.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import keras
import numpy as np

from models import activations
from models.blocks import ACT_PREFIX

# |tanh| > 0.99 and sigmoid outside [0.01, 0.99] sit where the gradient is under ~2% of its
# peak: the flat ends of the lecture's saturation plots.
SATURATION = 0.99


def activation_layers(model: keras.Model, prefix: str = ACT_PREFIX) -> list[keras.layers.Layer]:
    """Returns the model's activation layers (named ``prefix*``) in graph order."""
    return [layer for layer in model.layers if layer.name.startswith(prefix)]


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
