"""Reads a run's recorded curves and says what went wrong: ``diagnose(history) -> [Finding]``.

CS231n lecture 6: babysitting the learning process — each rule is a pure function of
recorded numbers (the lecture's loss/accuracy-curve pictures turned into measurements), with
named thresholds that say why. ``history`` is ``keras.callbacks.History.history`` (or the
rows of ``history.csv`` as columns); per-step losses, when given, judge the curve's shape.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from recipes import causes, io
from recipes.callbacks import EXPLOSION_FACTOR
from recipes.causes import SEVERITIES, Context, Finding
from recipes.ranges import EDGE_MARGIN, edge_position, edge_side

__all__ = ["Finding", "Context", "SEVERITIES", "CODES", "diagnose", "to_dict",
           "format_findings", "cause_of", "read_run"]
CODES = ("diverged", "loss_increasing", "not_training", "too_linear", "noisy", "slow_start",
         "not_converged", "overfitting", "underfitting", "cyclic", "update_ratio", "dead_units",
         "saturated_units", "best_at_search_edge", "gradients", "short_run")
END_FRACTION = 0.1  # start/end of a curve = mean of its first/last 10 %: one epoch of ten
EXPLODE_FACTOR = EXPLOSION_FACTOR  # lecture: "cost > 3 * original cost → break out early"
INCREASE_TOL = 0.1  # ends 10 % above its start: more than batch noise, the update is wrong
FLAT_DROP = 0.01  # < 1 % relative drop over the whole run: the lecture's "loss not going down"
CHANCE_TOL = 0.05  # end loss within 5 % of ln(C) (or above): still predicting uniformly
LINEAR_R2 = 0.8  # a straight line must explain >= 80 % of the (smoothed) curve's variance ...
LINEAR_GAIN = 0.03  # ... and an exponential decay no more than 3 points of R² better
NOISE_BAND = 0.1  # per-step σ around the trend > 10 % of the start loss (healthy digits: ~3 %)
PLATEAU_TOL = 0.05  # a plateau = the smoothed loss within 5 % of where it started ...
PLATEAU_FRACTION = 0.1  # ... for >= 10 % of the run, which is long for a good init
PLATEAU_THEN_DROP = 0.25  # ... and then falling by >= 25 %: the init, not the lr, held it
PLATEAU_CONTRAST = 3.0  # ... at least 3× faster than on the plateau (a line falls evenly)
CONVERGED_DROP = 0.05  # last 20 % of the run still took >= 5 % off the (val) loss
TOO_FEW_SHARE = 0.1  # ... and made >= 10 % of the run's whole descent: stopped mid-way
OVERFIT_GAP = 0.1  # train − val accuracy > 10 points: memorizing, not generalizing
OVERFIT_VAL_RISE = 0.1  # val loss 10 % above its minimum while train loss keeps falling
UNDERFIT_GAP = 0.05  # train ≈ val (gap < 5 points) ...
UNDERFIT_SCORE = 0.75  # ... and train accuracy < 75 % of the way from chance to the target
CYCLIC_ACF = 0.4  # autocorrelation of the detrended per-step loss at the epoch lag; shuffled ≈ 0
UPDATE_RATIO_LO, UPDATE_RATIO_HI = 1e-4, 1e-2  # lecture: ‖Δw‖/‖w‖ ≈ 1e-3, one decade either side
DEAD_MAX = 0.4  # lecture: "as much as 40 % of your network can be dead" (a healthy digits
#                 MLP measured 20 % in one layer on a 256-image probe; a dying one 100 %)
SATURATED_MAX = 0.25  # > 25 % of tanh/sigmoid outputs on the flat ends: gradients vanish there
MIN_POINTS = 3  # shape rules need at least three points (epochs, or steps when given)
MIN_SETTLED = 5  # "converged and still poor" needs 5 epochs: fewer cannot show the plateau
SMOOTH_MAX = 101  # running-median window (5 % of a curve) capped: cheap on 1e5 steps
MAX_LAG = 512  # without steps_per_epoch, look for periods up to 512 steps (cost ∝ n · lags)


def to_dict(findings: Sequence[Finding]) -> list[dict[str, Any]]:
    """Findings as JSON-ready dicts (for ``summary.json`` and reports)."""
    return [f.to_dict() for f in findings]


def format_findings(findings: Sequence[Finding]) -> str:
    """A plain-text table: severity, cause and evidence, with the remedy (or advice) under."""
    if not findings:
        return "no findings: the curves look healthy"
    width = max(len(f.cause or f.code) for f in findings)
    lines = [f"{'severity':<8}  {'cause':<{width}}  evidence"]
    for f in findings:
        lines.append(f"{f.severity:<8}  {f.cause or f.code:<{width}}  {f.evidence}")
        if f.explained_by:
            lines.append(f"{'':<10}→ explained by {f.explained_by}")
        elif f.remedies:
            r = f.remedies[0]
            lines.append(f"{'':<10}→ {r.text}" + (f"  ({r.flags()})" if r.change else ""))
        else:
            lines.append(f"{'':<10}→ {f.advice}")
    return "\n".join(lines)


def _floats(values: Any) -> np.ndarray:
    """Any sequence as float64; empty cells (``history.csv`` strings) are dropped, junk → NaN."""
    def num(v: Any) -> float:
        try:
            return float(v)
        except (TypeError, ValueError):
            return math.nan
    cells = np.ravel(values if values is not None else [])
    return np.array([num(v) for v in cells if v is not None and v != ""], dtype=np.float64)


def _column(history: Mapping[str, Any], key: str) -> np.ndarray:
    """``history[key]`` as float64; a missing key gives an empty array."""
    return _floats(history.get(key))


def _ends(y: np.ndarray) -> tuple[float, float]:
    """Mean of the first and of the last END_FRACTION of ``y``."""
    k = max(1, round(len(y) * END_FRACTION))
    return float(np.mean(y[:k])), float(np.mean(y[-k:]))


def _smooth(y: np.ndarray) -> np.ndarray:
    """Centred running median over ~5 % of the curve (identity on short epoch curves)."""
    w = min(max(1, len(y) // 20), SMOOTH_MAX) | 1
    if w == 1:
        return y
    pad = np.pad(y, w // 2, mode="reflect")  # "edge" would let one noisy end value weigh half
    return np.median(np.lib.stride_tricks.sliding_window_view(pad, w), axis=1)


def _r2(y: np.ndarray, fit: np.ndarray) -> float:
    total = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - fit) ** 2)) / total if total > 0 else 1.0


def _detrend(y: np.ndarray, d: int) -> np.ndarray:
    """``y`` minus its d-point running mean, twice: keeps a period-d cycle, drops the trend.

    A d-point mean has no period-d component, so subtracting it keeps the cycle whole; the
    second pass removes what a curved trend leaves. Output index k is ``y``'s k + 2·((d−1)//2).
    """
    h = (d - 1) // 2
    for _ in range(2):
        c = np.cumsum(np.r_[0.0, y])
        y = y[h:h + len(y) - d + 1] - (c[d:] - c[:-d]) / d
    return y


def _check_diverged(loss: np.ndarray, exploded: np.ndarray, unit: str) -> Finding | None:
    bad = np.flatnonzero(~np.isfinite(loss))
    y = _smooth(loss) if len(loss) and not len(bad) else np.array([math.nan])
    start, peak = float(y[0]), float(np.max(y))  # smoothed: one spiky batch is not divergence
    if len(bad):
        evidence = f"loss became {loss[bad[0]]} at {unit} {bad[0] + 1} of {len(loss)}"
    elif np.nansum(exploded) > 0:
        evidence = f"the explosion guard fired in {int(np.nansum(exploded > 0))} epoch(s)"
    elif start > 0 and peak > EXPLODE_FACTOR * start:
        evidence = (f"loss rose to {peak:.4g}, {peak / start:.3g}× its start {start:.4g} "
                    f"(> {EXPLODE_FACTOR:g}×)")
    else:
        return None
    return Finding("diverged", "error", evidence,
                   "learning rate too high (lower it ×10) or numerical instability "
                   "(log of 0, division by 0, unnormalized inputs)",
                   {"first_bad": int(bad[0]) if len(bad) else None, "start": start, "peak": peak})


def _check_loss_increasing(loss: np.ndarray) -> Finding | None:
    start, end = _ends(loss)
    if len(loss) < 2 or not start > 0 or end <= start * (1 + INCREASE_TOL):
        return None
    return Finding("loss_increasing", "error",
                   f"loss {start:.4g} → {end:.4g} over {len(loss)} points "
                   f"(+{100 * (end / start - 1):.1f} %, > {100 * INCREASE_TOL:.0f} %)",
                   "the update goes uphill: check the gradient sign and the update rule "
                   "(gradient check), or lower the learning rate",
                   {"start": start, "end": end})


def _check_not_training(loss: np.ndarray, num_classes: int | None) -> Finding | None:
    start, end = _ends(loss)
    drop = (start - end) / start if start > 0 else math.nan
    chance = math.log(num_classes) if num_classes and num_classes > 1 else math.nan
    if len(loss) >= 2 and drop < FLAT_DROP:
        evidence = (f"loss {start:.4g} → {end:.4g} over {len(loss)} points "
                    f"({100 * drop:.1f} % drop, < {100 * FLAT_DROP:.0f} %)")
    elif end >= (1 - CHANCE_TOL) * chance:
        evidence = f"loss ends at {end:.4g}, still at chance ln({num_classes}) = {chance:.4g}"
    else:
        return None
    return Finding("not_training", "error", evidence,
                   "loss not going down: learning rate too low (raise it ×10) or "
                   "regularization too strong; check that gradients reach the weights",
                   {"start": start, "end": end, "drop": drop, "chance_loss": chance})


def _check_too_linear(t: np.ndarray, loss: np.ndarray) -> Finding | None:
    y = _smooth(loss)
    start, end = _ends(y)
    if len(y) < 5 or not start > 0 or (start - end) / start < FLAT_DROP:
        return None
    s = (t - t[0]) / (t[-1] - t[0])
    r2_lin = _r2(y, np.polyval(np.polyfit(s, y, 1), s))
    r2_exp = -math.inf  # best of a + b·exp(−s/τ) over a grid of τ (b > 0: a decay)
    for tau in np.logspace(-2, 2, 41):
        basis = np.stack([np.ones_like(s), np.exp(-s / tau)], axis=1)
        coef = np.linalg.lstsq(basis, y, rcond=None)[0]
        if coef[1] > 0:
            r2_exp = max(r2_exp, _r2(y, basis @ coef))
    if r2_lin < LINEAR_R2 or r2_exp - r2_lin >= LINEAR_GAIN:
        return None
    return Finding("too_linear", "warning",
                   f"loss {start:.4g} → {end:.4g} falls in a straight line: R² {r2_lin:.3f} "
                   f"vs {r2_exp:.3f} for an exponential decay (gain < {LINEAR_GAIN})",
                   "linear decay = learning rate too low: raise it until the curve bends",
                   {"start": start, "end": end, "r2_linear": r2_lin, "r2_exponential": r2_exp})


def _check_noisy(loss: np.ndarray) -> Finding | None:
    if len(loss) < 10 * MIN_POINTS:
        return None
    trend = _smooth(loss)
    start, tail = float(trend[0]), (loss - trend)[len(loss) // 2:]  # the second half's band
    sigma = 1.4826 * float(np.median(np.abs(tail - np.median(tail))))
    if not start > 0 or sigma <= NOISE_BAND * start:
        return None
    return Finding("noisy", "warning",
                   f"per-step loss band σ {sigma:.3g} around the trend = "
                   f"{100 * sigma / start:.0f} % of the start loss {start:.4g} "
                   f"(> {100 * NOISE_BAND:.0f} %)",
                   "wide loss band: increase the batch size or lower the learning rate",
                   {"sigma": sigma, "start": start})


def _check_slow_start(loss: np.ndarray) -> Finding | None:
    y = _smooth(loss)
    if len(y) < 5 or not y[0] > 0:
        return None
    left = np.flatnonzero(np.abs(y - y[0]) > PLATEAU_TOL * y[0])
    k = int(left[0]) if len(left) else len(y)
    end, low = _ends(y)[1], int(np.argmin(y))
    if k < max(2, PLATEAU_FRACTION * len(y)) or (y[0] - end) / y[0] < PLATEAU_THEN_DROP:
        return None
    during = max(float(y[0] - y[k - 1]) / k, 0.0)  # drop per point on the plateau ...
    after = float(y[k - 1] - y[low]) / max(low - k + 1, 1)  # ... and after it
    if after <= PLATEAU_CONTRAST * during:  # a straight line leaves the band too, evenly
        return None
    return Finding("slow_start", "warning",
                   f"loss stayed at {y[0]:.4g} (± {100 * PLATEAU_TOL:.0f} %) for the first {k} "
                   f"of {len(y)} points ({100 * k / len(y):.0f} %), then fell to {end:.4g}",
                   "plateau then drop = bad initialization: use He/Xavier init or batch norm",
                   {"plateau": k, "points": len(y), "start": float(y[0]), "end": end})


def _check_not_converged(loss: np.ndarray, name: str, start: float = math.nan
                         ) -> Finding | None:
    """Still falling at the end; a warning when the run's tail made a large share of its descent.

    ``start`` is the loss before training (ln C for a softmax classifier) when known: a val
    curve's first point already has one epoch's fall behind it.
    """
    y = _smooth(loss)
    k = max(2, round(0.2 * len(y)))  # the last 20 % of the run, in intervals
    if len(y) <= 2 * k or not y[-k - 1] > 0:
        return None
    drop = (y[-k - 1] - y[-1]) / y[-k - 1]
    if drop < CONVERGED_DROP:
        return None
    top = max(float(y[0]), start) if math.isfinite(start) else float(y[0])
    share = (y[-k - 1] - y[-1]) / (top - y[-1]) if top > y[-1] else 0.0
    return Finding("not_converged", "warning" if share >= TOO_FEW_SHARE else "info",
                   f"{name} still falling at the end: {y[-k - 1]:.4g} → {y[-1]:.4g} over the "
                   f"last {k} of {len(y)} points ({100 * drop:.1f} %, ≥ "
                   f"{100 * CONVERGED_DROP:.0f} %; {100 * share:.0f} % of the whole descent)",
                   "not converged: train longer, or raise the learning rate",
                   {"series": name, "from": float(y[-k - 1]), "to": float(y[-1]), "drop": drop,
                    "share": float(share)})


SHORT_RUN = 50  # optimizer steps: fewer, and an SGD-style run has barely started
FIT_ACCURACY = 0.95  # ... unless it already fits its training set


def _check_short_run(epochs: int, steps_per_epoch: int | None, acc: np.ndarray
                     ) -> Finding | None:
    """A run of a handful of optimizer steps that does not fit its training set yet."""
    if not steps_per_epoch or not epochs:
        return None
    steps = int(epochs * steps_per_epoch)
    train = float(acc[-1]) if len(acc) else math.nan
    if steps >= SHORT_RUN or not train < FIT_ACCURACY:
        return None
    return Finding("short_run", "warning",
                   f"only {steps} optimizer steps ({epochs} epoch(s) of {steps_per_epoch}), "
                   f"train accuracy {train:.3f}: the run stopped before it started",
                   "train for more epochs (a few hundred steps at the least)",
                   {"steps": steps, "train_accuracy": train})


def _check_overfitting(acc: np.ndarray, val_acc: np.ndarray, loss: np.ndarray,
                       val_loss: np.ndarray, num_val: int = 0) -> Finding | None:
    train, val = (float(np.median(a[-3:])) if len(a) else math.nan for a in (acc, val_acc))
    gap, rise = train - val, math.nan  # medians of the last 3 epochs: one lucky epoch is noise
    # A gap is a gap only beyond the val accuracy's sampling noise: 3 binomial standard
    # errors (12 val examples at 83 %: ±0.32, so 14 points say nothing).
    noise = 3 * math.sqrt(max(val * (1 - val), 0.0) / num_val) if num_val else 0.0
    if gap > max(OVERFIT_GAP, noise):
        evidence = f"train accuracy {train:.3f} vs val {val:.3f}: gap {gap:.3f} (> {OVERFIT_GAP})"
    elif (len(val_loss) >= 2 * MIN_POINTS and len(loss) == len(val_loss)
          and np.isfinite(val_loss).all() and val_loss.min() > 0):
        best, end = int(np.argmin(val_loss)), float(np.median(val_loss[-3:]))
        rise = end / val_loss[best] - 1
        if not (rise > OVERFIT_VAL_RISE and best < len(val_loss) - 3 and loss[-1] < loss[best]):
            return None
        evidence = (f"val loss rose {val_loss[best]:.4g} → {end:.4g} (+{100 * rise:.0f} %) after "
                    f"epoch {best + 1} while train loss fell {loss[best]:.4g} → {loss[-1]:.4g}")
    else:
        return None
    best_epoch = int(np.argmin(val_loss)) + 1 if len(val_loss) and np.isfinite(val_loss).all() \
        else (int(np.argmax(val_acc)) + 1 if len(val_acc) else 0)
    return Finding("overfitting", "warning", evidence,
                   "big gap = overfitting: increase regularization (L2, dropout), "
                   "get more data or augment it",
                   {"gap": gap, "val_loss_rise": rise, "best_epoch": best_epoch})


def _check_underfitting(acc: np.ndarray, val_acc: np.ndarray, num_classes: int | None,
                        target: float) -> Finding | None:
    if len(acc) < MIN_SETTLED or len(val_acc) != len(acc):
        return None
    chance = 1 / num_classes if num_classes else 0.0
    train, gap = float(np.median(acc[-3:])), float(np.median(acc[-3:]) - np.median(val_acc[-3:]))
    score = (train - chance) / (target - chance) if target > chance else math.nan
    if not (abs(gap) < UNDERFIT_GAP and score < UNDERFIT_SCORE):
        return None
    return Finding("underfitting", "warning",
                   f"train accuracy {train:.3f} ≈ val (gap {gap:.3f}), only {100 * score:.0f} % "
                   f"of the way from chance {chance:.3f} to {target:.3f}",
                   "no gap and low accuracy: increase model capacity, reduce regularization",
                   {"train_accuracy": train, "gap": gap, "score": score, "target": target})


def _check_cyclic(steps: np.ndarray, period: int | None) -> Finding | None:
    n = len(steps)
    lags = ({period - 1, period, period + 1} | {d for d in range(3, period) if period % d == 0}
            if period else set(range(3, min(n // 4, MAX_LAG) + 1)))
    best, lag = -1.0, 0
    for d in sorted(d for d in lags if d >= 3):  # at d = 2 the detrending alone makes 0.17
        x = _detrend(steps, d)[max(d, period or 0):]  # drop the first epoch (the initial fall)
        if len(x) < 3 * d:
            continue
        x = x - x.mean()
        denom = float(np.dot(x, x))
        acf = float(np.dot(x[:-d], x[d:])) / denom if denom > 0 else 0.0
        if acf > best:
            best, lag = acf, d
    if best <= CYCLIC_ACF:
        return None
    return Finding("cyclic", "warning",
                   f"per-step loss repeats every {lag} steps (autocorrelation {best:.2f} > "
                   f"{CYCLIC_ACF}" + (f", epoch = {period} steps)" if period else ")"),
                   "periodic loss = the data are not shuffled: shuffle every epoch",
                   {"lag": lag, "autocorrelation": best, "steps_per_epoch": period})


def _check_update_ratio(ratios: np.ndarray) -> Finding | None:
    ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
    if len(ratios) < MIN_POINTS:  # two samples of a short run are not a verdict on the lr
        return None
    med = float(np.median(ratios))
    if UPDATE_RATIO_LO <= med <= UPDATE_RATIO_HI:
        return None
    low = med < UPDATE_RATIO_LO
    return Finding("update_ratio", "warning",
                   f"median update/weight ratio {med:.2g} over {len(ratios)} epochs is "
                   f"{'below' if low else 'above'} {UPDATE_RATIO_LO if low else UPDATE_RATIO_HI:g}",
                   ("updates too small: raise the learning rate" if low else
                    "updates too large: lower the learning rate") + " (aim for ~1e-3)",
                   {"median": med})


def _worst_layer(code: str, layers: Mapping[str, float], limit: float, what: str,
                 advice: str) -> Finding | None:
    name, frac = max(layers.items(), key=lambda kv: kv[1], default=("", math.nan))
    if not frac > limit:
        return None
    return Finding(code, "warning",
                   f"{name}: {100 * frac:.0f} % of units {what} (> {100 * limit:.0f} %)",
                   advice, {"layer": name, "fraction": frac, "layers": dict(layers)})


def _check_dead_units(layers: Mapping[str, float]) -> Finding | None:
    return _worst_layer("dead_units", layers, DEAD_MAX, "dead (never positive)",
                        "dead ReLUs: lower the learning rate, use He init or a small positive "
                        "bias, or a leaky ReLU")


def _check_saturated_units(layers: Mapping[str, float]) -> Finding | None:
    return _worst_layer("saturated_units", layers, SATURATED_MAX, "saturated",
                        "saturated units kill the gradient: scale the init (Xavier), "
                        "normalize the inputs, use batch norm or ReLU")


def _check_best_at_search_edge(param: str, spec: Mapping[str, Any]) -> Finding | None:
    try:
        best, lo, hi = float(spec["best"]), float(spec["lo"]), float(spec["hi"])
        pos = edge_position(lo, hi, best, bool(spec.get("log")))
    except (KeyError, TypeError, ValueError, ZeroDivisionError, FloatingPointError):
        return None
    side = edge_side(pos, EDGE_MARGIN)
    if side is None:
        return None
    return Finding("best_at_search_edge", "warning",
                   f"{param} best {best:.3g} sits at {100 * pos:.0f} % of "
                   f"[{lo:.3g}, {hi:.3g}]{' (log scale)' if spec.get('log') else ''}, "
                   f"within {100 * EDGE_MARGIN:.0f} % of the {side} edge",
                   f"shift the {param} range past its {side} edge: the optimum may lie outside",
                   {"param": param, "best": best, "lo": lo, "hi": hi, "position": pos})


GRAD_VANISH, GRAD_EXPLODE = 1e-3, 70.0  # first/last layer gradient norm (AUTOTRAINER's)


def _check_gradients(ratio: np.ndarray, initial: float = math.nan) -> Finding | None:
    """First-to-last layer gradient norm ratio: vanishing below, exploding above the band.

    ``initial`` is the ratio before the first update: a net whose gradient vanishes at the
    start may never recover, and once its output layer has settled on the class priors
    its own gradient is as small as the first layer's (the epoch ratios look normal).
    """
    ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
    at_init = math.isfinite(initial) and initial > 0 and not \
        GRAD_VANISH <= initial <= GRAD_EXPLODE
    if not len(ratio) and not at_init:
        return None
    med = float(np.median(ratio)) if len(ratio) else math.nan
    if not at_init and GRAD_VANISH <= med <= GRAD_EXPLODE:
        return None
    value, when = (initial, "before the first update") if at_init else \
        (med, f"median over {len(ratio)} epoch(s)")
    low = value < GRAD_VANISH
    return Finding("gradients", "warning",
                   f"first/last layer gradient norm ratio {value:.2g} ({when}) is "
                   f"{'below' if low else 'above'} {GRAD_VANISH if low else GRAD_EXPLODE:g}",
                   "vanishing gradients: batch norm, ReLU with He init, fewer sigmoid layers"
                   if low else "exploding gradients: clip the gradient norm, lower the lr",
                   {"median": med, "initial": initial,
                    "direction": "vanishing" if low else "exploding"})


def _demote(out: list[Finding | None], when: str, codes: tuple[str, ...], why: str,
            keep: Callable[[Finding], bool] = lambda f: False) -> None:
    """Findings of ``codes`` become information when rule ``when`` fired (unless ``keep``).

    Two readings that a third makes meaningless: large updates on a loss that does not
    move (``not_training``) come from weights that do not matter (tiny, or behind a
    vanished gradient), not from the lr; a run of a few dozen steps (``short_run``) was
    too short, which says nothing about its lr.
    """
    if not any(f is not None and f.code == when for f in out):
        return
    for i, f in enumerate(out):
        if f is not None and f.code in codes and not keep(f):
            out[i] = dataclasses.replace(f, severity="info", evidence=f"{f.evidence}; {why}")


SMALL_BATCH = 16  # a noisy loss at fewer examples per step is the batch's noise, not the lr


def cause_of(f: Finding, ctx: Context) -> str:
    """The one cause a rule's finding names (the rule → cause table, two rules by numbers)."""
    if f.code == "noisy":
        return "batch_too_small" if ctx.batch_size < SMALL_BATCH else "learning_rate_too_high"
    if f.code == "update_ratio":
        low = f.data.get("median", 1.0) < UPDATE_RATIO_LO
        return "learning_rate_too_low" if low else "learning_rate_too_high"
    if f.code == "gradients":
        return f"{f.data.get('direction', 'vanishing')}_gradients"
    return _CAUSE_OF[f.code]


_CAUSE_OF = {"diverged": "learning_rate_too_high", "loss_increasing": "learning_rate_too_high",
             "not_training": "learning_rate_too_low", "too_linear": "learning_rate_too_low",
             "slow_start": "bad_initialization", "not_converged": "too_few_epochs",
             "short_run": "too_few_epochs",
             "overfitting": "overfitting", "underfitting": "underfitting",
             "cyclic": "not_shuffled", "dead_units": "dead_units",
             "saturated_units": "saturated_units", "best_at_search_edge": "search_range_edge"}


def _with_cause(f: Finding, ctx: Context) -> Finding:
    """``f`` with its cause and remedies; an overfit run whose best epoch was kept is info."""
    cause = cause_of(f, ctx)
    f = dataclasses.replace(f, cause=cause, remedies=causes.remedies(cause, ctx))
    if cause == "search_range_edge":  # about the search, which shifts its own ranges
        f = dataclasses.replace(f, severity="info")
    epoch = f.data.get("best_epoch") or 0
    if cause == "overfitting" and ctx.restore_best and epoch and f.data.get("gap", 0) <= \
            OVERFIT_GAP:
        f = dataclasses.replace(f, severity="info", evidence=f"{f.evidence}; epoch {epoch}'s "
                                "weights kept (train.restore_best)")
    return f


def _layer_fractions(stats: Mapping[str, Any], key: str, history: Mapping[str, Any],
                     column: str) -> dict[str, float]:
    """Per-layer fractions from ``activation_stats``, plus the monitor's last per-epoch max."""
    layers = {str(s.get("name", i)): float(s[key])
              for i, s in enumerate(stats.get("activation_stats") or []) if s.get(key) is not None}
    col = _column(history, column)
    if np.isfinite(col).any():
        layers.setdefault(f"worst layer ({column}, last epoch)", float(col[np.isfinite(col)][-1]))
    return layers


def diagnose(history: Mapping[str, Sequence[Any]] | Any, stats: Mapping[str, Any] | None = None,
             *, batch_history: Sequence[float] | None = None,
             context: Context | None = None) -> list[Finding]:
    """Runs every rule on a run's curves; CS231n lecture 6: babysitting the learning process.

    Args:
        history: metric → list per epoch (``History.history``, a ``History`` object, or the
            rows of ``history.csv`` as a list of dicts):
            ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy`` and, when the monitors ran,
            ``update_ratio_median``, ``act_dead_max``, ``act_saturated_max``, ``exploded``.
        stats: optional facts: ``num_classes``, ``target_accuracy`` (what the data allows,
            default 1.0), ``steps_per_epoch``, ``loss`` ("softmax" | "svm"),
            ``activation_stats`` (per-layer dicts with name/dead/saturated fractions),
            ``initial_gradient_ratio`` (first/last layer gradient norm before training),
            ``num_val`` (validation examples: a train/val gap must beat their noise) and
            ``search`` ({param: {"best", "lo", "hi", "log"}}).
        batch_history: per-step training losses (not Keras's running epoch means); when
            given, the curve-shape rules and ``cyclic`` judge these instead of epoch losses.
        context: the run's settings, for the causes' remedies (``recipes.causes.Context``:
            learning rate, batch size, epochs, a user's network or a built-in one).

    Returns:
        The findings, each naming one cause with its remedies, resolved by
        ``recipes.causes.resolve``: unexplained errors first, then warnings, then the rest;
        empty for a healthy run.
    """
    history = getattr(history, "history", history)
    if history is None:
        history = {}
    elif not isinstance(history, Mapping):  # rows, as recipes.io.read_csv gives history.csv
        history = {k: [row.get(k) for row in history] for row in history for k in row}
    stats = stats or {}
    loss, steps = _column(history, "loss"), _floats(batch_history)
    curve = steps if len(steps) >= 2 * MIN_POINTS else loss
    classes = stats.get("num_classes") if stats.get("loss", "softmax") == "softmax" else None
    out = [_check_diverged(curve, _column(history, "exploded"),
                           "epoch" if curve is loss else "step")]
    if out[0] is None and curve is not loss:  # per-step losses judged; a NaN epoch still counts
        out[0] = _check_diverged(loss, np.array([]), "epoch")
    trend = loss if len(loss) >= MIN_POINTS else curve  # epoch means: every example, no noise
    if out[0] is None and len(trend):
        out += [_check_loss_increasing(trend), _check_not_training(trend, classes)]
    if len(out) > 1 and not any(out):
        t = np.arange(len(curve), dtype=np.float64) + (0.5 if curve is loss else 0.0)
        shape_t, shape_y = t, curve
        if curve is loss and classes and classes > 1 and loss[0] < math.log(classes):
            shape_t, shape_y = np.r_[0.0, t], np.r_[math.log(classes), loss]  # init loss ln C
        slow = _check_slow_start(curve)
        out += [slow, None if slow else _check_too_linear(shape_t, shape_y)]
        period = stats.get("steps_per_epoch") or (
            len(steps) // len(loss) if len(loss) and len(steps) % len(loss) == 0 else None)
        cyclic = _check_cyclic(steps, int(period) if period else None) if len(steps) else None
        out += [cyclic, None if cyclic else _check_noisy(curve)]
        val_loss = _column(history, "val_loss")
        ok_val = len(val_loss) >= MIN_POINTS and np.isfinite(val_loss).all()
        out.append(_check_not_converged(*((val_loss, "val loss") if ok_val else
                                          (trend, "train loss")),  # epoch means: less noise
                                        math.log(classes) if classes and classes > 1
                                        else math.nan))
        acc, val_acc = _column(history, "accuracy"), _column(history, "val_accuracy")
        out.append(_check_overfitting(acc, val_acc, loss, val_loss,
                                      int(stats.get("num_val") or 0)))
        if not any(f and f.code in ("overfitting", "too_linear", "slow_start", "not_converged")
                   for f in out):  # underfitting = converged and still poor, nothing else
            target = float(stats.get("target_accuracy", 1.0))
            out.append(_check_underfitting(acc, val_acc, stats.get("num_classes"), target))
    out += [_check_update_ratio(_column(history, "update_ratio_median")),
            _check_dead_units(_layer_fractions(stats, "dead", history, "act_dead_max")),
            _check_saturated_units(
                _layer_fractions(stats, "saturated", history, "act_saturated_max"))]
    # A run babysit stopped early (StopWhenFlat) is judged by the epochs it was given.
    out.append(_check_short_run(max(len(loss), int(stats.get("planned_epochs") or 0)),
                                stats.get("steps_per_epoch"),
                                _column(history, "accuracy")))
    out.append(_check_gradients(_column(history, "grad_norm_ratio"),
                                float(stats.get("initial_gradient_ratio", math.nan))))
    _demote(out, "not_training", ("update_ratio",), "the loss does not move, so not read as "
            "the lr", keep=lambda f: f.data.get("median", 0) <= UPDATE_RATIO_HI)
    _demote(out, "short_run", ("not_training", "too_linear"), "too few steps to read the lr "
            "from")
    out += [_check_best_at_search_edge(p, s) for p, s in (stats.get("search") or {}).items()]
    ctx = context or Context()
    return causes.resolve([_with_cause(f, ctx) for f in out if f])


def read_run(workdir: str, *, num_classes: int, loss: str = "softmax",
             steps_per_epoch: int | None = None, search: Mapping[str, Any] | None = None,
             context: Context | None = None, num_val: int = 0, planned_epochs: int = 0
             ) -> list[Finding]:
    """Diagnoses a finished training run from the files in its ``workdir``.

    Reads ``history.csv``, the last record of ``activation_stats.json`` and, when the run
    kept them, the per-step losses in ``batch_losses.json``. ``planned_epochs``: the epochs
    the run was given, when it was stopped before them (not a run too short by design).

    Returns:
        :func:`diagnose`'s findings; empty when the run left no history.
    """
    history_path = os.path.join(workdir, "history.csv")
    if not os.path.exists(history_path):
        return []
    stats: dict[str, Any] = {"num_classes": num_classes, "loss": loss, "num_val": num_val,
                             "planned_epochs": planned_epochs}
    if steps_per_epoch:
        stats["steps_per_epoch"] = steps_per_epoch
    act_path = os.path.join(workdir, "activation_stats.json")
    if os.path.exists(act_path):
        records = io.read_json(act_path, what="activation statistics")
        if records:
            stats["activation_stats"] = records[-1]["layers"]
    grad_path = os.path.join(workdir, "gradient_norms.json")
    if os.path.exists(grad_path):
        records = io.read_json(grad_path, what="gradient norms")
        first = records[0] if records and records[0].get("epoch") == 0 else None
        if first and len(first.get("layers") or []) > 1:
            g0, g1 = (float(first["layers"][i]["grad_norm"]) for i in (0, -1))
            stats["initial_gradient_ratio"] = g0 / g1 if g1 > 0 else math.nan
    if search:
        stats["search"] = search
    steps_path = os.path.join(workdir, "batch_losses.json")
    steps = io.read_json(steps_path, what="per-step losses") \
        if os.path.exists(steps_path) else None
    return diagnose(io.read_csv(history_path), stats, batch_history=steps or None,
                    context=context)
