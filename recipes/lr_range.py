"""Finding the learning rate: short range runs across decades, and the exponential sweep.

CS231n lecture 6, "Babysitting the learning process": try learning rates from 1e-6 to 1e6
with small regularization for a few epochs — "loss barely changing: learning rate is
probably too low"; "cost: NaN almost always means high learning rate"; "rough range for
learning rate we should be cross-validating is somewhere [1e-3 … 1e-5]".

Two tools, one per need:

* :func:`run` (the lecture's way): one short training per learning rate (``babysit.lr_min``
  … ``babysit.lr_max``, ``babysit.lr_points`` log-spaced points, ``babysit.lr_epochs``
  epochs each, the same initial weights), each per-step loss curve classified by the pure
  :func:`classify` and the range narrowed by the pure :func:`recommend`. Robust: it compares
  whole short trainings, so noise, Adam's warm-up and delayed divergence all show; the cost
  is ``lr_points`` short runs. The better tool for small/medium models and for the search's
  first (coarse) range.
* :func:`find` (Smith 2017, "Cyclical Learning Rates", §3.3; fastai's ``lr_find``): ONE run
  whose learning rate grows exponentially every step, stopped once the smoothed loss
  exceeds 4× its minimum; suggestion = the steepest descent of the smoothed loss. Cheap
  (one run, ~100 steps), so the better tool for large models where several runs cost too
  much; but each lr is seen for one step on weights trained at smaller lrs, so it reads
  the curve's shape, not what training at that lr would reach.

``plot(result, path)`` draws either result to a PNG. Results have ``to_dict()`` for JSON.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from recipes import data, io, pipeline, sanity
from recipes.callbacks.monitors import (  # noqa: F401 - recipes.lr_range.BatchLossRecorder too
    EXPLOSION_FACTOR,
    BatchLossRecorder,
)

EXPLODE_FACTOR = EXPLOSION_FACTOR  # lecture: "cost > 3 * original cost → break out early"
END_FRACTION = 0.2  # a run's end loss = mean of its last 20 % of steps (batch noise)
MIN_DROP = 0.05  # end < 5 % below the initial loss: "loss barely changing" → too low
RISE_TOL = 0.1  # end > 10 % above the initial loss: the loss goes up → too high
KEEP_PROGRESS = 0.5  # recommend good lrs that made >= half the best run's loss drop
RANGE_L2 = 1e-6  # lecture: "small regularization" (reg = 0.000001) for the range runs
LABELS = ("too_low", "good", "too_high")
COLORS = {"too_low": "tab:blue", "good": "tab:green", "too_high": "tab:red"}


# --- pure rules ------------------------------------------------------------------------------


def _end(losses: np.ndarray) -> float:
    k = max(1, math.ceil(len(losses) * END_FRACTION))
    return float(np.mean(losses[-k:]))


def explain(losses: Sequence[float], initial_loss: float,
            reference: Sequence[float] | None = None) -> tuple[str, str]:
    """:func:`classify`'s label and the one-line reason with the numbers."""
    y = np.asarray(losses, dtype=np.float64)
    if y.size == 0:
        raise ValueError("classify: no losses recorded")
    if not np.isfinite(y).all():
        return "too_high", f"NaN/inf loss at step {int(np.argmin(np.isfinite(y))) + 1}"
    if y.max() > EXPLODE_FACTOR * initial_loss:
        step = int(np.argmax(y > EXPLODE_FACTOR * initial_loss)) + 1
        return "too_high", (f"loss {y.max():.3g} > {EXPLODE_FACTOR:g}× initial "
                            f"{initial_loss:.3g} at step {step}")
    end, start = _end(y), initial_loss
    if reference is not None:  # the untrained loss on the very batches the end averages
        ref = np.asarray(reference, dtype=np.float64)[: len(y)]
        if len(ref) == len(y) and np.isfinite(ref).all():
            start = _end(ref)
    change = (end - start) / start
    if change > RISE_TOL:
        return "too_high", f"loss rose {start:.3g} → {end:.3g} ({change:+.0%})"
    if -change < MIN_DROP:
        return "too_low", (f"loss barely moved {start:.3g} → {end:.3g} ({change:+.1%}, "
                           f"needs ≤ −{MIN_DROP:.0%})")
    return "good", f"loss fell {start:.3g} → {end:.3g} ({change:+.0%})"


def classify(losses: Sequence[float], initial_loss: float,
             reference: Sequence[float] | None = None) -> str:
    """Classifies one short run's per-step loss curve: ``too_low``, ``good`` or ``too_high``.

    Lecture 6, "Babysitting the learning process": ``too_high`` = a NaN/inf loss, a loss
    above 3× the initial one (the 1e6 run), or an end loss more than 10 % above the start
    (the loss goes up: the 3e-3 run before its NaN); ``too_low`` = the end loss (mean of the
    last 20 % of steps) less than 5 % below the start ("loss barely changing", the 1e-6
    run); ``good`` otherwise.

    Args:
        losses: the run's per-step training losses.
        initial_loss: the loss of the untrained network.
        reference: optional per-step losses of the untrained network on the same batches;
            the end is then compared with the reference on the same steps, which removes
            the batch-to-batch noise (~5 % on 4 batches of digits) from the comparison.

    Returns:
        One of ``LABELS``.
    """
    return explain(losses, initial_loss, reference)[0]


def recommend(lrs: Sequence[float], labels: Sequence[str], final_losses: Sequence[float],
              initial_loss: float) -> tuple[float, float] | None:
    """The learning-rate range to search: good lrs narrowed toward the lowest final loss.

    Rule: among the ``good`` runs take the best (lowest final loss); keep the good runs
    that made at least half of its loss drop, (initial − final) ≥ 0.5·(initial − best);
    the range spans the kept lrs. A single kept lr widens to its good grid neighbours, if
    any. Lecture 6: "rough range for learning rate we should be cross-validating".

    Args:
        lrs: the learning rates, any order.
        labels: :func:`classify`'s label of each.
        final_losses: each run's end loss.
        initial_loss: the untrained network's loss.

    Returns:
        ``(low, high)``, or None when no run was good.
    """
    order = np.argsort(lrs)
    lr = np.asarray(lrs, dtype=np.float64)[order]
    lab = [labels[i] for i in order]
    fin = np.asarray(final_losses, dtype=np.float64)[order]
    good = [i for i, name in enumerate(lab) if name == "good" and math.isfinite(fin[i])]
    if not good:
        return None
    best = min(good, key=lambda i: fin[i])
    drop = initial_loss - fin[best]
    kept = [i for i in good if initial_loss - fin[i] >= KEEP_PROGRESS * drop]
    lo, hi = min(kept), max(kept)
    if lo == hi:
        lo = lo - 1 if lo - 1 in good else lo
        hi = hi + 1 if hi + 1 in good else hi
    return float(lr[lo]), float(lr[hi])


def smooth(losses: Sequence[float], beta: float = 0.98) -> np.ndarray:
    """The debiased exponential moving average: a_k = β·a_{k−1} + (1−β)·l_k, / (1−β^k)."""
    out, avg = [], 0.0
    for k, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**k))
    return np.asarray(out, dtype=np.float64)


def suggest(lrs: Sequence[float], smoothed: Sequence[float]) -> dict[str, float]:
    """The finder's suggestions from its smoothed curve (fastai v2's ``steep`` and ``minimum``).

    ``steep``: the lr of the steepest descent d loss / d ln lr, looked for between the first
    10 % of steps (the moving average's warm-up) and the minimum; ``min_over_10``: the lr at
    the minimum divided by 10. Smith 2017, §3.3; fastai ``lr_find``.

    Returns:
        ``{"steep": lr, "min_over_10": lr, "minimum": lr}`` (NaN entries for < 3 points).
    """
    lr = np.asarray(lrs, dtype=np.float64)
    y = np.asarray(smoothed, dtype=np.float64)
    finite = np.isfinite(y)
    lr, y = lr[finite], y[finite]
    if len(y) < 3:
        return {"steep": math.nan, "min_over_10": math.nan, "minimum": math.nan}
    i_min = int(np.argmin(y))
    start = min(len(y) // 10, max(i_min - 2, 0))
    seg = slice(start, max(i_min + 1, start + 3))
    slope = np.gradient(y[seg], np.log(lr[seg]))
    return {"steep": float(lr[seg][int(np.argmin(slope))]),
            "min_over_10": float(lr[i_min] / 10), "minimum": float(lr[i_min])}


# --- the range runs ---------------------------------------------------------------------------


def _finite(values: Any) -> Any:
    return io.json_ready(values)


@dataclasses.dataclass(frozen=True)
class LRRangeResult:
    """The short runs of :func:`run`, their classes and the recommended range."""

    lrs: list[float]
    labels: list[str]
    reasons: list[str]
    final_losses: list[float]
    val_accuracies: list[float]
    curves: list[list[float]]  # per-step training losses of each run
    initial_loss: float  # the untrained network's mean loss over a run's batches
    reference: list[float]  # its per-step losses on those batches
    steps: int  # steps per run (fewer where a run was stopped early)
    optimizer: str
    range: tuple[float, float] | None
    best_lr: float | None
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite numbers become None)."""
        return _finite(dataclasses.asdict(self))


def default_lrs(config: Any) -> list[float]:
    """``babysit.lr_points`` log-spaced rates from ``babysit.lr_min`` to ``babysit.lr_max``."""
    b = sanity.configure(config).babysit
    if not (0 < b.lr_min < b.lr_max) or b.lr_points < 2:
        raise ValueError(f"babysit.lr_min={b.lr_min!r} < lr_max={b.lr_max!r} (both > 0) and "
                         f"lr_points={b.lr_points!r} >= 2 are needed")
    return [float(v) for v in np.logspace(math.log10(b.lr_min), math.log10(b.lr_max),
                                          int(b.lr_points))]


def run(config: Any, *, splits: data.Splits | None = None, lrs: Sequence[float] | None = None,
        epochs: float | None = None, l2: float = RANGE_L2, verbose: bool = False,
        model: Any = None, data: Any = None) -> LRRangeResult:
    """Short trainings at learning rates spanning decades, each classified; the range to search.

    Lecture 6: "small regularization, a few epochs, learning rates 1e-6 … 1e6". Every run
    starts from the same initial weights and sees the same batches; the learning rate is
    constant; the optimizer is the config's. A run stops early on NaN/inf or when the loss
    passes 3× the initial loss.

    Args:
        config: a full or partial config tree.
        splits: already-loaded data.
        lrs: the learning rates (default :func:`default_lrs`).
        epochs: length of each run in epochs, fractions allowed (default
            ``babysit.lr_epochs``).
        l2: the small L2 strength of the runs (``model.l2``); dropout stays as configured.
        verbose: print one line per learning rate.
        model: the user's network (see ``recipes.prepare.prepare``); every run starts from
            the same fresh copy of it.
        data: the user's data (``recipes.data.from_user``'s forms); default ``splits``.

    Returns:
        An :class:`LRRangeResult`; ``range`` follows :func:`recommend`.
    """
    s = sanity.setup(config, data if data is not None else splits,
                     {"model.l1": 0.0, "model.l2": float(l2)}, model=model)
    cfg = s.config
    lrs = [float(v) for v in (default_lrs(cfg) if lrs is None else lrs)]
    n_epochs = float(cfg.babysit.lr_epochs if epochs is None else epochs)
    steps = max(1, round(n_epochs * _steps_per_epoch(s)))
    model, reset = _resettable(s, lrs[0])
    train = s.splits.train

    def batches() -> Any:  # the same batches, in the same order, for every run
        return s.dataset(train.x, train.y, training=True).repeat()

    ref = BatchLossRecorder()
    model.evaluate(batches(), steps=steps, callbacks=[ref], verbose=0)
    initial = float(np.mean(ref.losses))
    val = s.splits.val if len(s.splits.val) else train
    val_ds = s.dataset(val.x, val.y, training=False)
    labels, reasons, finals, accs, curves = [], [], [], [], []
    for lr in lrs:
        reset(lr)
        rec = BatchLossRecorder(initial)
        model.fit(batches(), steps_per_epoch=steps, epochs=1, callbacks=[rec], verbose=0,
                  shuffle=False)
        label, reason = explain(rec.losses, initial, ref.losses)
        final = _end(np.asarray(rec.losses)) if not rec.stopped else rec.losses[-1]
        acc = (float(model.evaluate(val_ds, verbose=0, return_dict=True)["accuracy"])
               if math.isfinite(rec.losses[-1]) else math.nan)
        labels.append(label)
        reasons.append(reason)
        finals.append(float(final))
        accs.append(acc)
        curves.append([float(v) for v in rec.losses])
        if verbose:
            print(f"lr {lr:.1e}: {label:<8} {reason}; val accuracy {acc:.1%}")
    span = recommend(lrs, labels, finals, initial)
    good = [i for i, name in enumerate(labels) if name == "good"]
    best = min(good, key=lambda i: finals[i]) if good else None
    opt = cfg.optimizer.name
    if span is None:
        verdict = (f"lr range ({opt}, {steps} steps/run): no learning rate trained well "
                   f"({', '.join(f'{v:.0e} {c}' for v, c in zip(lrs, labels))}); widen "
                   "babysit.lr_min/lr_max or run longer (babysit.lr_epochs)")
    else:
        verdict = (f"lr range ({opt}, {steps} steps/run): search lr in [{span[0]:.0e}, "
                   f"{span[1]:.0e}]; best {lrs[best]:.0e} (loss {initial:.3f} → "
                   f"{finals[best]:.3f}, val accuracy {accs[best]:.1%})")
    return LRRangeResult(lrs, labels, reasons, finals, accs, curves, initial,
                         [float(v) for v in ref.losses], steps, opt,
                         span, None if best is None else lrs[best], verdict)


def _steps_per_epoch(s: sanity.Setup) -> int:

    return pipeline.steps_per_epoch(len(s.splits.train), s.config)


def _resettable(s: sanity.Setup, lr: float) -> tuple[keras.Model, Any]:
    """One compiled model and ``reset(lr)`` restoring its initial weights and optimizer state.

    Reusing one model (instead of building one per lr) traces the train step once: the runs
    are identical to fresh ones (same weights, zeroed optimizer slots, new lr).
    """
    model = s.model(learning_rate=lr)
    model.optimizer.build(model.trainable_variables)
    weights = model.get_weights()
    slots = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]

    def reset(new_lr: float) -> None:
        model.set_weights(weights)
        for v, value in zip(model.optimizer.variables, slots):
            v.assign(value)
        model.optimizer.learning_rate = float(new_lr)
        model.stop_training = False

    return model, reset


# --- the exponential sweep --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LRFinderResult:
    """The single exponential sweep of :func:`find` and its suggestions."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float  # the steepest descent
    min_over_10: float
    minimum: float
    start: float
    end: float
    stopped: str
    optimizer: str
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite numbers become None)."""
        return _finite(dataclasses.asdict(self))


class _ExponentialLR(keras.callbacks.Callback):
    """Multiplies the lr every step (start → end over ``steps``); stops at 4× the min loss."""

    def __init__(self, start: float, end: float, steps: int, recorder: BatchLossRecorder,
                 beta: float, stop_factor: float):
        super().__init__()
        self.start, self.end, self.steps = start, end, steps
        self.recorder, self.beta, self.stop_factor = recorder, beta, stop_factor
        self.lrs: list[float] = []
        self.stopped = ""

    def on_train_batch_begin(self, batch, logs=None):
        lr = self.start * (self.end / self.start) ** (batch / max(self.steps - 1, 1))
        self.model.optimizer.learning_rate = lr
        self.lrs.append(lr)

    def on_train_batch_end(self, batch, logs=None):
        y = smooth(self.recorder.losses, self.beta)
        if self.recorder.stopped:
            self.stopped = self.recorder.stopped
        elif len(y) > 1 and y[-1] > self.stop_factor * y.min():
            self.stopped = f"smoothed loss > {self.stop_factor:g}× its minimum"
            self.model.stop_training = True


def find(config: Any, *, splits: data.Splits | None = None, start: float = 1e-7,
         end: float = 10.0, steps: int = 100, beta: float = 0.98, stop_factor: float = 4.0,
         l2: float = RANGE_L2, model: Any = None, data: Any = None) -> LRFinderResult:
    """One run with an exponentially growing learning rate (the lr finder).

    Smith 2017, "Cyclical Learning Rates for Training Neural Networks", §3.3 (the "LR range
    test"), as fastai's ``lr_find``: lr_k = start·(end/start)^(k/(steps−1)), the loss
    smoothed by a debiased moving average, stopped at 4× its minimum or NaN; suggestion =
    the steepest descent (also min/10). One run: use it when :func:`run`'s several short
    trainings cost too much (large models); prefer :func:`run` otherwise.

    Args:
        config: a full or partial config tree.
        splits: already-loaded data.
        start: first learning rate.
        end: last learning rate.
        steps: steps of the sweep (the data repeats as needed).
        beta: smoothing of the loss.
        stop_factor: stop once the smoothed loss exceeds this times its minimum.
        l2: small L2 strength, as in :func:`run`.
        model: the user's network, as in :func:`run`.
        data: the user's data, as in :func:`run`.

    Returns:
        An :class:`LRFinderResult`.
    """
    if not 0 < start < end:
        raise ValueError(f"find: need 0 < start < end, got start={start!r}, end={end!r}")
    s = sanity.setup(config, data if data is not None else splits,
                     {"model.l1": 0.0, "model.l2": float(l2)}, model=model)
    model = s.model(learning_rate=start)
    rec = BatchLossRecorder()
    sweep = _ExponentialLR(start, end, int(steps), rec, beta, stop_factor)
    model.fit(s.dataset(s.splits.train.x, s.splits.train.y, training=True).repeat(),
              steps_per_epoch=int(steps), epochs=1, callbacks=[rec, sweep], verbose=0,
              shuffle=False)
    n = len(rec.losses)
    lrs, y = sweep.lrs[:n], smooth(rec.losses, beta)
    sug = suggest(lrs, y)
    stopped = sweep.stopped or "completed"
    verdict = (f"lr finder ({s.config.optimizer.name}, {n} steps {start:.0e} → "
               f"{lrs[-1]:.0e}, {stopped}): steepest descent at {sug['steep']:.1e}, "
               f"minimum at {sug['minimum']:.1e} (min/10 = {sug['min_over_10']:.1e})")
    return LRFinderResult(list(lrs), [float(v) for v in rec.losses], [float(v) for v in y],
                          sug["steep"], sug["min_over_10"], sug["minimum"], float(start),
                          float(end), stopped, s.config.optimizer.name, verdict)


# --- plots ------------------------------------------------------------------------------------


def plot(result: LRRangeResult | LRFinderResult, path: str) -> str:
    """Writes a PNG: final loss vs lr for range runs, the sweep's loss vs lr for the finder.

    Range runs: one mark per learning rate on a log axis, coloured by class (diverged runs
    drawn at the top as ×), the recommended range shaded. Finder: raw and smoothed loss vs
    lr with the suggestions marked.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        if isinstance(result, LRRangeResult):
            _plot_range(ax, result)
        else:
            _plot_finder(ax, result)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.grid(True, which="major", alpha=0.3)
        fig.tight_layout()
        with io.atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path


def _plot_range(ax: Any, r: LRRangeResult) -> None:
    top = 1.1 * EXPLODE_FACTOR * r.initial_loss  # diverged runs are drawn here, as ×
    for label in LABELS:
        pts = [(lr, v) for lr, v, c in zip(r.lrs, r.final_losses, r.labels) if c == label]
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ys = [min(p[1], top) if math.isfinite(p[1]) else top for p in pts]
        ax.scatter(xs, ys, c=COLORS[label], label=label, s=40,
                   marker="x" if label == "too_high" else "o")
    ax.axhline(r.initial_loss, color="gray", ls="--", lw=1, label="initial loss")
    if r.range:
        ax.axvspan(r.range[0], r.range[1], color="tab:green", alpha=0.15,
                   label=f"range [{r.range[0]:.0e}, {r.range[1]:.0e}]")
    ax.set_ylim(0, top * 1.05)
    ax.set_ylabel(f"final training loss ({r.steps} steps; × = diverged)")
    ax.set_title(f"learning-rate range ({r.optimizer})")
    ax.legend(fontsize=8)


def _plot_finder(ax: Any, r: LRFinderResult) -> None:
    ax.plot(r.lrs, r.losses, color="tab:blue", alpha=0.3, lw=1, label="loss")
    ax.plot(r.lrs, r.smoothed, color="tab:blue", lw=2, label="smoothed")
    for value, name, color in ((r.suggestion, "steepest", "tab:green"),
                               (r.min_over_10, "min/10", "tab:orange")):
        if math.isfinite(value):
            ax.axvline(value, color=color, ls="--", label=f"{name} {value:.1e}")
    finite = [v for v in r.smoothed if math.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) * 0.9, min(max(finite), 4 * min(finite)) * 1.1)
    ax.set_ylabel("training loss")
    ax.set_title(f"lr finder ({r.optimizer})")
    ax.legend(fontsize=8)
