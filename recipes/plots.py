"""Small pure plotting helpers for the report: one figure per function, each returns its path.

CS231n "Training Neural Networks" (babysitting the learning process): look at the data as
the network sees it, the loss on a log scale, train/val accuracy, the learning rate, the
update/weight ratio (~1e-3) per layer and the learning-rate range runs. Every function takes
plain numbers (lists, numpy arrays), draws with matplotlib's Agg backend, closes its figure
and writes the PNG atomically (``recipes.io``), so a killed run never leaves half a PNG.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from recipes import io

__all__ = ["image_grid", "loss_curve", "accuracy_curve", "lr_curve", "update_ratios",
           "lr_range", "activation_stats", "display_images", "smooth", "styled",
           "is_constant"]

DPI = 96
#: Figure widths in inches: at ``DPI`` a wide figure is ~1000 px, legible on a 1280 px page.
WIDE, NARROW = 10.5, 7.0
#: Font sizes (points) for the report's figures: at 96 dpi, 11 pt is ~15 px.
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "xtick.labelsize": 10,
         "ytick.labelsize": 10, "legend.fontsize": 9, "legend.title_fontsize": 9}
#: The lecture's "update / weight magnitude ~ 1e-3" guide and its healthy decade either side.
RATIO_GUIDE, RATIO_BAND = 1e-3, (1e-4, 1e-2)
#: Colours for the lr-range classes; unknown classes cycle through matplotlib's defaults.
CLASS_COLORS = {"too_low": "tab:blue", "low": "tab:blue", "slow": "tab:blue",
                "good": "tab:green", "ok": "tab:green", "fast": "tab:orange",
                "too_high": "tab:red", "high": "tab:red", "diverged": "black",
                "explode": "black", "exploded": "black", "nan": "black"}


def pyplot() -> Any:
    """matplotlib.pyplot, on the Agg backend (no display needed) unless one is already chosen.

    A notebook (ipykernel's inline backend) or a script that imported pyplot first keeps
    its backend, so figures still show inline.
    """
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules and "ipykernel" not in sys.modules \
            and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def styled(fn: Callable[..., str]) -> Callable[..., str]:
    """Draws ``fn``'s figure with the report's legible fonts (:data:`STYLE`), locally.

    ``rc_context`` leaves the caller's (a notebook's) settings as they were.
    """
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> str:
        with pyplot().rc_context(STYLE):
            return fn(*args, **kwargs)
    return wrapper


def save_figure(fig: Any, path: str | os.PathLike) -> str:
    """Writes ``fig`` as PNG to ``path`` atomically and closes it."""
    plt = pyplot()
    path = os.fspath(path)
    try:
        fig.tight_layout()
        with io.atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return path


def _log_y(ax: Any) -> None:
    """Log y axis labelled with plain numbers (``0.6``, ``2``, ``1e-05``), not ``6×10⁻¹``."""
    from matplotlib import ticker

    class Plain(ticker.LogFormatter):
        def __call__(self, x: float, pos: Any = None) -> str:
            return f"{x:g}" if super().__call__(x, pos) else ""

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(Plain())
    ax.yaxis.set_minor_formatter(Plain(labelOnlyBase=False))


def _epoch_x(ax: Any) -> None:
    """An x axis of whole epochs."""
    from matplotlib import ticker

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))


def _legend_above(ax: Any, ncol: int = 4) -> None:
    """The legend in a row above the axes, where it never hides a curve."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=ncol, frameon=False,
                  borderaxespad=0.0, handlelength=1.8)


def _positive(y: Any) -> np.ndarray:
    """``y`` as float64 with non-finite and non-positive values as NaN (for log axes)."""
    a = np.asarray(y, dtype=np.float64).ravel()
    return np.where(np.isfinite(a) & (a > 0), a, np.nan)


def smooth(y: Sequence[float], window: int | None = None) -> np.ndarray:
    """Trailing running mean over ``window`` points (default ~2 % of the curve), NaN-aware."""
    a = np.asarray(y, dtype=np.float64)
    w = window or max(1, len(a) // 50)
    ok = np.isfinite(a)
    s = np.cumsum(np.where(ok, a, 0.0))
    n = np.cumsum(ok)
    s = s - np.concatenate([np.zeros(w), s[:-w]])
    n = n - np.concatenate([np.zeros(w), n[:-w]])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def display_images(x: Any, image_shape: Sequence[int] | None = None) -> np.ndarray:
    """Images as (n, H, W, C) with each image rescaled to [0, 1] on its own, for display.

    Network inputs are standardized, PCA-whitened or augmented, so their values are not
    pixels; each image's own min maps to black and its max to white (a constant image shows
    grey). Accepts (n, H, W, C), (n, H, W), or flat (n, D) with ``image_shape`` or a square D.
    """
    a = np.asarray(x, dtype=np.float64)
    if image_shape is not None:
        a = a.reshape((len(a), *image_shape))
    elif a.ndim == 2:
        side = math.isqrt(a.shape[1])
        if side * side != a.shape[1]:
            raise ValueError(f"flat inputs of {a.shape[1]} values are not square images; "
                             "pass images['image_shape']")
        a = a.reshape(len(a), side, side, 1)
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4:
        raise ValueError(f"images must be (n, H, W, C), got shape {a.shape}")
    if a.shape[-1] not in (1, 3):
        a = a[..., :1]  # show the first channel of anything that is not grey or RGB
    a = np.where(np.isfinite(a), a, 0.0)
    lo = a.min(axis=(1, 2, 3), keepdims=True)
    span = a.max(axis=(1, 2, 3), keepdims=True) - lo
    return np.where(span > 0, (a - lo) / np.where(span > 0, span, 1.0), 0.5)


def _label(y: np.ndarray, class_names: Sequence[str]) -> str:
    """One image's label: its class name, or the two largest parts of a soft (mixed) label."""
    def name(i: int) -> str:
        return str(class_names[i]) if i < len(class_names) else str(i)
    if y.ndim == 0:
        return name(int(y))
    order = np.argsort(-y)
    if y[order[0]] >= 0.999 or len(y) < 2:
        return name(int(order[0]))
    return f"{name(int(order[0]))} {y[order[0]]:.2f}/{name(int(order[1]))} {y[order[1]]:.2f}"


@styled
def image_grid(x: Any, y: Any, class_names: Sequence[str], path: str | os.PathLike, *,
               max_images: int = 48, columns: int = 8,
               image_shape: Sequence[int] | None = None) -> str:
    """A grid of training images exactly as they enter the network, titled by label.

    Args:
        x: the images after preprocessing and augmentation (see :func:`display_images`).
        y: int labels or one-hot / soft labels (MixUp, CutMix), or None.
        class_names: names for the label indices (indices are shown when short).
        path: the PNG to write.
        max_images: the first this many images are shown.
        columns: images per row.
        image_shape: (H, W, C) for flat inputs.

    Returns:
        ``str(path)``.
    """
    plt = pyplot()
    imgs = display_images(np.asarray(x)[:max_images], image_shape)
    labels = None if y is None else np.asarray(y)[: len(imgs)]
    n = len(imgs)
    cols = max(1, min(columns, n))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.35 * rows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= n:
            continue
        img = imgs[i]
        if img.shape[-1] == 1:
            ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(img, vmin=0, vmax=1, interpolation="nearest")
        if labels is not None:
            ax.set_title(_label(labels[i], class_names), fontsize=9)
    return save_figure(fig, path)


@styled
def loss_curve(epochs: Sequence[float], loss: Sequence[float], path: str | os.PathLike, *,
               val_loss: Sequence[float] | None = None,
               batch_losses: Sequence[float] | None = None) -> str:
    """The loss on a log y axis: per epoch (train, val) and per step (raw and smoothed).

    Per-step losses are placed at fractional epochs (step k of K over E epochs at
    (k + 1) E / K), so both curves share the x axis.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(WIDE, 3.8))
    e = np.asarray(epochs, dtype=np.float64)
    if batch_losses is not None and len(batch_losses):
        b = _positive(batch_losses)
        span = e.max() if len(e) else 1.0
        t = (np.arange(len(b)) + 1) * span / len(b)
        ax.plot(t, b, color="tab:blue", alpha=0.25, lw=0.7, label="train, per step")
        ax.plot(t, smooth(b), color="tab:blue", lw=1.4, label="train, per step, smoothed")
    if len(loss):
        ax.plot(e, _positive(loss), "o-", color="navy", ms=4,
                label="train (epoch mean, dropout/augmentation on)")
    if val_loss is not None and len(val_loss):
        ax.plot(e[: len(val_loss)], _positive(val_loss), "s-", color="tab:orange", ms=4,
                label="validation (end of epoch)")
    _log_y(ax)
    _epoch_x(ax)
    ax.set_ylabel("loss (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    _legend_above(ax, ncol=2)
    return save_figure(fig, path)


@styled
def accuracy_curve(epochs: Sequence[float], path: str | os.PathLike, *,
                   accuracy: Sequence[float] | None = None,
                   val_accuracy: Sequence[float] | None = None,
                   chance: float | None = None) -> str:
    """Train and validation accuracy per epoch; the gap between them reads overfitting."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(WIDE, 3.4))
    e = np.asarray(epochs, dtype=np.float64)
    for values, style, label in ((accuracy, "o-", "train (epoch mean)"),
                                 (val_accuracy, "s-", "validation")):
        if values is not None and len(values):
            ax.plot(e[: len(values)], np.asarray(values, dtype=np.float64), style, ms=4,
                    label=label)
    if chance:
        ax.axhline(chance, color="grey", ls=":", lw=1, label=f"chance {chance:.2f}")
    _epoch_x(ax)
    ax.set_ylabel("accuracy (fraction correct)")
    ax.grid(True, alpha=0.3)
    _legend_above(ax)
    return save_figure(fig, path)


def is_constant(values: Sequence[float], rtol: float = 1e-6) -> bool:
    """True when every finite value equals the first (a flat curve is a sentence, not a plot)."""
    a = np.asarray(values, dtype=np.float64).ravel()
    a = a[np.isfinite(a)]
    return len(a) > 0 and bool(np.allclose(a, a[0], rtol=rtol, atol=0.0))


@styled
def lr_curve(epochs: Sequence[float], lr: Sequence[float], path: str | os.PathLike) -> str:
    """The learning rate actually used per epoch (log y when all values are positive)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(WIDE, 3.0))
    a = np.asarray(lr, dtype=np.float64)
    ax.plot(np.asarray(epochs, dtype=np.float64)[: len(a)], a, "o-", ms=4, color="tab:purple")
    finite = a[np.isfinite(a)]
    if len(finite) and np.all(finite > 0):
        _log_y(ax)
    _epoch_x(ax)
    ax.set_ylabel("learning rate (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    return save_figure(fig, path)


def _short(name: str, width: int = 32) -> str:
    """A tensor path shortened from the left (``…dense_1/kernel``)."""
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _ratio_guides(ax: Any) -> None:
    ax.axhspan(*RATIO_BAND, color="tab:green", alpha=0.08, label="healthy band 1e-4..1e-2")
    ax.axhline(RATIO_GUIDE, color="tab:green", ls="--", lw=1.2, label="1e-3 guide")


@styled
def update_ratios(records: Sequence[Mapping[str, Any]], path: str | os.PathLike, *,
                  max_legend: int = 12, xlabel: str = "training step (batch)") -> str:
    """‖Δw‖/‖w‖ per tensor over steps on a log y axis, with the lecture's 1e-3 guide.

    A single record (one sample) is drawn as one point per tensor, named on the x axis,
    rather than as points on a meaningless step axis.

    Args:
        records: ``UpdateRatioMonitor.records``: ``{"step", "ratios": {tensor: ratio}}``.
        path: the PNG to write.
        max_legend: legend entries shown (all tensors are drawn).
        xlabel: what ``step`` counts (``"epoch"`` for history rows).

    Returns:
        ``str(path)``.
    """
    plt = pyplot()
    names: list[str] = []
    for r in records:
        names += [k for k in r.get("ratios", {}) if k not in names]
    steps = np.asarray([float(r.get("step", i)) for i, r in enumerate(records)])
    fig, ax = plt.subplots(figsize=(WIDE, 3.8))
    _ratio_guides(ax)
    if len(records) == 1:
        y = _positive([records[0]["ratios"].get(n, np.nan) for n in names])
        ax.plot(np.arange(len(names)), y, "o", ms=8, color="tab:blue",
                label=f"{xlabel.split(' (')[0]} {steps[0]:g}")
        ax.set_xticks(np.arange(len(names)), [_short(n) for n in names],
                      rotation=30 if len(names) > 3 else 0, ha="right" if len(names) > 3
                      else "center")
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_xlabel("trainable tensor (one sample)")
    else:
        for i, name in enumerate(names):
            y = _positive([r.get("ratios", {}).get(name, np.nan) for r in records])
            ax.plot(steps, y, "-", marker="." if len(steps) < 30 else None, lw=1.2,
                    label=_short(name) if i < max_legend else None)
        ax.set_xlabel(xlabel)
    _log_y(ax)
    ax.set_ylabel("‖Δw‖ / ‖w‖ per update (log)")
    ax.grid(True, which="both", alpha=0.3)
    _legend_above(ax, ncol=4)
    return save_figure(fig, path)


def _class_colors(plt: Any, runs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    cycle = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4)
    colors: dict[str, str] = {}
    for r in runs:
        cls = str(r.get("classification", ""))
        if cls not in colors:
            colors[cls] = CLASS_COLORS.get(cls.lower(), None) or next(cycle)
    return colors


@styled
def lr_range(runs: Sequence[Mapping[str, Any]], path: str | os.PathLike, *,
             recommended: Sequence[float] | None = None) -> str:
    """Final loss against learning rate (log x), coloured by each run's classification.

    Non-finite final losses (diverged runs) are drawn as crosses along the top edge. When
    runs carry ``losses`` a second panel shows each run's curve in the same colours.
    """
    plt = pyplot()
    with_curves = any(len(r.get("losses") or []) for r in runs)
    fig, axes = plt.subplots(1, 2 if with_curves else 1,
                             figsize=(WIDE if with_curves else NARROW, 3.8), squeeze=False)
    ax = axes[0, 0]
    colors = _class_colors(plt, runs)
    lrs = np.asarray([float(r["lr"]) for r in runs])
    final = _positive([r.get("final_loss", np.nan) for r in runs])
    top = np.nanmax(final) * 1.5 if np.any(np.isfinite(final)) else 10.0
    if recommended is not None and len(recommended) == 2:
        ax.axvspan(float(recommended[0]), float(recommended[1]), color="tab:green", alpha=0.12,
                   label=f"recommended {recommended[0]:.1e}..{recommended[1]:.1e}")
    ax.plot(lrs, final, "-", color="grey", lw=0.8, alpha=0.6)
    for cls, color in colors.items():
        pick = np.asarray([str(r.get("classification", "")) == cls for r in runs])
        ok = pick & np.isfinite(final)
        bad = pick & ~np.isfinite(final)
        if ok.any():
            ax.scatter(lrs[ok], final[ok], color=color, s=36, zorder=3, label=cls or "?")
        if bad.any():
            ax.scatter(lrs[bad], np.full(bad.sum(), top), color=color, marker="x", s=48,
                       zorder=3, clip_on=False, label=None if ok.any() else cls or "?")
    ax.set_xscale("log")
    _log_y(ax)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("final training loss (log; × = diverged)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if with_curves:
        ax2 = axes[0, 1]
        for r in runs:
            losses = _positive(r.get("losses") or [])
            if len(losses):
                ax2.plot(losses, lw=1.2, color=colors[str(r.get("classification", ""))],
                         label=f"{float(r['lr']):.0e}")
        _log_y(ax2)
        ax2.set_xlabel("training step (batch)")
        ax2.set_ylabel("training loss (log)")
        ax2.grid(True, which="both", alpha=0.3)
        ax2.legend(ncol=2, title="learning rate")
    return save_figure(fig, path)


def _pick(names: Sequence[str], k: int) -> list[str]:
    """At most ``k`` of ``names``, evenly spaced, first and last included."""
    if len(names) <= k:
        return list(names)
    return [names[int(round(i))] for i in np.linspace(0, len(names) - 1, k)]


def _mean_std_panel(ax: Any, runs: Mapping[str, Sequence[Mapping[str, Any]]],
                    names: Sequence[str], colors: Sequence[str]) -> None:
    """Per-layer mean (solid) and std (dashed) on a categorical axis of layer names."""
    x = np.arange(len(names))
    for (label, layers), color in zip(runs.items(), colors):
        by = {str(s.get("name", i)): s for i, s in enumerate(layers)}
        for key, style in (("mean", "o-"), ("std", "s--")):
            y = [float(by[n][key]) if n in by and key in by[n] else np.nan for n in names]
            ax.plot(x, y, style, ms=6, color=color, label=f"{label} {key}".strip())
    step = max(1, math.ceil(len(names) / 12))  # at most ~12 names under the axis
    ax.set_xticks(x[::step], [_short(n, 16) for n in names][::step],
                  rotation=30 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_xlabel("layer")
    ax.set_ylabel("activation value")
    ax.set_title("mean and std per layer")
    ax.grid(True, alpha=0.3)
    ax.legend()


def _histogram_panel(ax: Any, name: str, runs: Mapping[str, Sequence[Mapping[str, Any]]],
                     colors: Sequence[str], legend: bool = True) -> None:
    """One layer's histogram per run: % of values per bin, log y (dead ReLUs pile at 0)."""
    activation = ""
    for (label, layers), color in zip(runs.items(), colors):
        s = next((s for i, s in enumerate(layers) if str(s.get("name", i)) == name), None)
        if not s or not s.get("hist"):
            continue
        activation = s.get("activation") or activation
        counts = np.asarray(s["hist"]["counts"], dtype=np.float64)
        edges = np.asarray(s["hist"]["edges"], dtype=np.float64)
        pct = _positive(100 * counts / max(counts.sum(), 1))
        ax.step(edges, np.append(pct, pct[-1:]), where="post", lw=1.5, color=color,
                label=label or None)
    _log_y(ax)
    ax.set_title(f"{_short(name, 24)}" + (f" ({activation})" if activation else ""))
    ax.set_xlabel("activation value")
    ax.set_ylabel("% of values (log)")
    ax.grid(True, which="both", alpha=0.3)
    if legend and len(runs) > 1:
        ax.legend()


@styled
def activation_stats(stats: Mapping[str, Sequence[Mapping[str, Any]]]
                     | Sequence[Mapping[str, Any]], path: str | os.PathLike, *,
                     max_layers: int = 11) -> str:
    """Per-layer mean/std of the activations and one histogram per layer, named as in tables.

    CS231n "Weight initialization": the 10-layer net's per-layer mean/std and histograms.
    Layers sit on a categorical axis named by their ``name`` (``act_0``), so a single layer
    is one labelled point, not a point on a 0.96..1.04 axis.

    Args:
        stats: ``models.inspect.activation_stats`` output (one run), or label -> such a list
            (e.g. ``{"epoch 1": ..., "epoch 30": ...}``), drawn in one colour per label.
        path: the PNG to write.
        max_layers: histograms drawn (evenly spaced layers when there are more).

    Returns:
        ``str(path)``.
    """
    plt = pyplot()
    runs = dict(stats) if isinstance(stats, Mapping) else {"": list(stats)}
    names: list[str] = []
    for layers in runs.values():
        names += [n for n in (str(s.get("name", i)) for i, s in enumerate(layers))
                  if n not in names]
    shown = _pick(names, max_layers)
    colors = (plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4)[: len(runs)]
    if len(shown) <= 3:  # one row: the mean/std panel beside each layer's histogram
        fig, axes = plt.subplots(1, len(shown) + 1, figsize=(WIDE + 0.5, 3.6), squeeze=False)
        top, hists = axes[0, 0], list(axes[0, 1:])
    else:  # the mean/std panel across the top, four histograms a row below it
        rows = math.ceil(len(shown) / 4)
        fig = plt.figure(figsize=(WIDE + 0.5, 3.4 * (rows + 1)))
        grid = fig.add_gridspec(rows + 1, 4)
        top = fig.add_subplot(grid[0, :])
        hists = [fig.add_subplot(grid[1 + i // 4, i % 4]) for i in range(len(shown))]
    _mean_std_panel(top, runs, names, colors)
    for i, (ax, name) in enumerate(zip(hists, shown)):
        _histogram_panel(ax, name, runs, colors, legend=i == 0)
    return save_figure(fig, path)
