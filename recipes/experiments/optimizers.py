"""Update rules at their best learning rates, and how forgiving each is of a bad one.

CS231n lecture 7 "Optimization" (SGD, momentum, Nesterov, AdaGrad, RMSProp, Adam: "Adam is
a good default choice in many cases"); Kingma & Ba 2015 (Adam); Loshchilov & Hutter 2019
(AdamW); Keskar & Socher 2017 (switch from Adam to SGD with momentum).

Every optimizer trains the same MLP on the same data, at each learning rate of a log sweep
centred on its textbook rate (``CENTERS``): 3 points a decade apart (``--quick``) or 5 points
over 4 decades. The run at the best final validation accuracy is that optimizer's result.
To stay near a minute under load, ``--quick`` runs nesterov, rmsprop, adamw and
adam_to_momentum only at the best rate of their family (``FAMILY``: momentum's, Adam's)
instead of sweeping them.
*Forgiveness* is the width, in decades of learning rate, of the band around the best rate
where the final validation accuracy stays within ``tolerance`` (1 %, absolute) of the best:
the accuracy is interpolated linearly in log10(lr) between sweep points (``forgiveness``);
a band reaching the end of the sweep is a lower bound (``at_edge``). ``adam_to_momentum``
sweeps Adam's rate and switches to SGD + momentum at half the run, at momentum's best rate.

Command: ``python -m recipes.experiments.optimizers --workdir=DIR [--quick]``
(``--quick``: digits, 4 x 3 + 4 runs of 3 epochs, ~25 s idle, ~1 min under load; full:
Fashion-MNIST, a stratified 10000 training images and 2000 validation images, 8 x 5 runs of 6
epochs, ~4 minutes on 2 free CPU cores, estimated from 3-4 s a run of 5000 images under load).
Writes ``results.json`` and ``optimizers.png``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from recipes import plots
from recipes.experiments import common

#: The variants, in the lecture's order; the last is Adam switched to SGD + momentum.
NAMES = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "adam_to_momentum")
#: The centre of each optimizer's learning-rate sweep (its usual rate on standardized inputs).
CENTERS = {"sgd": 0.1, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.01, "rmsprop": 1e-3,
           "adam": 1e-3, "adamw": 1e-3, "adam_to_momentum": 1e-3}
#: Variants that ``--quick`` runs only at their family's best rate (a one-point sweep).
FAMILY = {"nesterov": "momentum", "rmsprop": "adam", "adamw": "adam",
          "adam_to_momentum": "adam"}
#: AdamW's decoupled weight decay (PyTorch's default; Keras's ``optimizer.weight_decay``).
ADAMW_DECAY = 0.01
#: Band widths closer than this (decades) count as equal.
WIDTH_RESOLUTION = 0.25
SOURCE = "CS231n lecture 7 'Optimization'"


def forgiveness(lrs: Sequence[float], accuracies: Sequence[float], *,
                tolerance: float = 0.01) -> dict[str, Any]:
    """The learning-rate band whose accuracy is within ``tolerance`` of the sweep's best.

    The contiguous band around the best point is walked outwards; where the accuracy falls
    below ``best - tolerance`` the edge is interpolated linearly in log10(lr) between the
    last point inside and the first outside. A band running off the sweep ends there and is
    marked ``at_edge`` (its width is a lower bound). Non-finite accuracies count as 0.

    Args:
        lrs: the sweep's learning rates (> 0, any order).
        accuracies: final validation accuracy at each rate.
        tolerance: absolute accuracy drop still counted as "as good" (0.01 = 1 %).

    Returns:
        ``{"width_decades", "low_lr", "high_lr", "best_lr", "best_accuracy", "at_edge"}``.
    """
    if len(lrs) != len(accuracies) or not len(lrs):
        raise ValueError(f"forgiveness needs one accuracy per learning rate, got {len(lrs)} "
                         f"rates and {len(accuracies)} accuracies")
    order = np.argsort(np.asarray(lrs, dtype=np.float64))
    x = np.log10(np.asarray(lrs, dtype=np.float64)[order])
    a = np.nan_to_num(np.asarray(accuracies, dtype=np.float64)[order], nan=0.0, posinf=0.0,
                      neginf=0.0)
    best = int(np.argmax(a))
    floor = a[best] - tolerance

    def edge(step: int) -> tuple[float, bool]:
        j = best
        while 0 <= j + step < len(a) and a[j + step] >= floor:
            j += step
        if not 0 <= j + step < len(a):
            return float(x[j]), True
        inside, outside = j, j + step
        t = (a[inside] - floor) / (a[inside] - a[outside])
        return float(x[inside] + t * (x[outside] - x[inside])), False

    lo, lo_edge = edge(-1)
    hi, hi_edge = edge(+1)
    return {"width_decades": hi - lo, "low_lr": 10.0 ** lo, "high_lr": 10.0 ** hi,
            "best_lr": float(10.0 ** x[best]), "best_accuracy": float(a[best]),
            "at_edge": lo_edge or hi_edge}


def lr_grid(center: float, points: int, decades: float) -> list[float]:
    """``points`` learning rates log-spaced over ``decades`` decades centred on ``center``."""
    if points == 1:
        return [float(center)]
    return [float(center * 10.0 ** e) for e in np.linspace(-decades / 2, decades / 2, points)]


def variant_config(quick: bool, name: str, lr: float, *, epochs: int,
                   switch_lr: float = 0.01) -> Any:
    """The base MLP config with optimizer ``name`` (or Adam → momentum) at rate ``lr``."""
    cfg = common.base_config(quick)
    if not quick:
        cfg.dataset.limit = 10000
        cfg.dataset.val_size = 2000 / 60000
    cfg.train.epochs = epochs
    cfg.optimizer.learning_rate = lr
    if name == "adam_to_momentum":
        cfg.optimizer.name = "adam"
        cfg.optimizer.switch_to = "momentum"
        cfg.optimizer.switch_epoch = max(1, epochs // 2)
        cfg.optimizer.switch_learning_rate = switch_lr
    else:
        cfg.optimizer.name = name
        if name == "adamw":
            cfg.optimizer.weight_decay = ADAMW_DECAY
    return cfg


def run_experiment(workdir: str, *, quick: bool = False, names: Sequence[str] = NAMES,
                   points: int | None = None, decades: float | None = None,
                   epochs: int | None = None, tolerance: float = 0.01,
                   family_rate: bool | None = None) -> dict[str, Any]:
    """Sweeps every optimizer's learning rate, keeps the best run, measures forgiveness.

    Args:
        workdir: where ``results.json``, ``optimizers.png`` and the runs go.
        quick: digits and 3-point sweeps (CI); else Fashion-MNIST and 5-point sweeps.
        names: a subset of ``NAMES``; the claims need sgd, momentum, nesterov, adagrad,
            rmsprop and adam (``adam_to_momentum`` uses momentum's best rate when present).
        points: learning rates per sweep (default 3 quick, 5 full).
        decades: span of each sweep (default 2 quick, 4 full).
        epochs: epochs per run (default 3 quick, 6 full).
        tolerance: the accuracy drop (absolute) that still counts as forgiven.
        family_rate: run the ``FAMILY`` variants only at their family's best rate, not
            swept (default: in quick mode, to keep it under a minute); their forgiveness
            is then None.

    Returns:
        The results (also written to ``workdir/results.json``).
    """
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ValueError(f"names: {unknown} are not variants; use some of {list(NAMES)}")
    points = points or (3 if quick else 5)
    decades = decades if decades is not None else (2.0 if quick else 4.0)
    epochs = epochs or (3 if quick else 6)
    family_rate = quick if family_rate is None else family_rate
    base = variant_config(quick, "adam", 1e-3, epochs=epochs)
    splits = common.load_splits(base)
    variants: dict[str, Any] = {}
    # Families' heads first, so that a one-point variant can take its head's best rate.
    for name in sorted(names, key=lambda n: family_rate and n in FAMILY):
        switch_lr = variants.get("momentum", {}).get("best_lr", CENTERS["momentum"])
        sweep, runs = [], []
        grid = lr_grid(CENTERS[name], points, decades)
        if family_rate and FAMILY.get(name) in variants:
            grid = [variants[FAMILY[name]]["best_lr"]]
        for i, lr in enumerate(grid):
            cfg = variant_config(quick, name, lr, epochs=epochs, switch_lr=switch_lr)
            r = common.train_variant(cfg, workdir, f"{name}/lr{i}_{lr:.1e}", splits=splits)
            runs.append(r)
            sweep.append({"lr": lr, "val_accuracy": common.finite(r.get("val_accuracy"), 0.0),
                          "final_loss": common.finite(r["history"].get("loss", [math.nan])[-1]),
                          "stopped_reason": r["stopped_reason"], "seconds": r["seconds"]})
        band = forgiveness([s["lr"] for s in sweep], [s["val_accuracy"] for s in sweep],
                           tolerance=tolerance)
        best = runs[int(np.argmax([s["val_accuracy"] for s in sweep]))]
        curves = common.curves(best["history"], (*common.CURVE_KEYS, "lr"))
        val_curve = [v or 0.0 for v in curves["val_accuracy"]]
        variants[name] = {
            "best_lr": band["best_lr"],
            "val_accuracy": band["best_accuracy"],
            "test_accuracy": common.finite(best.get("test_accuracy"), 0.0),
            "train_accuracy": common.finite(best.get("train_accuracy"), 0.0),
            "mean_val_accuracy": float(np.mean(val_curve)) if val_curve else 0.0,
            "forgiveness_decades": band["width_decades"] if len(sweep) > 1 else None,
            "band_lr": [band["low_lr"], band["high_lr"]],
            "band_at_edge": band["at_edge"],
            "sweep": sweep,
            "history": curves,
            "seconds": round(sum(s["seconds"] for s in sweep), 2),
        }
        if name == "adam_to_momentum":
            variants[name]["switch"] = {"epoch": max(1, epochs // 2), "to": "momentum",
                                        "learning_rate": switch_lr}
    variants = {n: variants[n] for n in names}
    n_val = len(splits.val)
    results = {
        "experiment": "optimizers",
        "dataset": base.dataset.name,
        "source": splits.info.source,
        "quick": quick,
        "command": common.command("optimizers", quick),
        "setup": {"epochs": epochs, "points": points, "decades": decades,
                  "family_rate": {n: FAMILY[n] for n in names
                                  if len(variants[n]["sweep"]) == 1 and n in FAMILY},
                  "tolerance": tolerance, "centers": {n: CENTERS[n] for n in names},
                  "num_train": len(splits.train), "num_val": n_val,
                  "num_test": len(splits.test), "adamw_weight_decay": ADAMW_DECAY,
                  "forgiveness_method": "final val accuracy interpolated linearly in "
                  "log10(lr) between sweep points; at_edge = band reaches the sweep's end"},
        "variants": variants,
        "claims": claims(variants, n_val, tolerance=tolerance),
    }
    plot(variants, os.path.join(workdir, "optimizers.png"))
    results["plots"] = ["optimizers.png"]
    return common.finish(workdir, results)


def claims(v: Mapping[str, Mapping[str, Any]], n_val: int, *,
           tolerance: float = 0.01) -> list[dict[str, str]]:
    """The four claims' verdicts, computed from the variants' numbers (see each ``measured``)."""
    out = []
    if "adam" in v and len(v) > 1:
        others = {k: x for k, x in v.items() if k != "adam"}
        best_val = max(x["val_accuracy"] for x in v.values())
        m = common.noise_margin(best_val, n_val)
        fast = v["adam"]["mean_val_accuracy"] - max(x["mean_val_accuracy"]
                                                    for x in others.values())
        good = v["adam"]["val_accuracy"] - best_val
        verdict = ("confirmed" if fast >= -m and good >= -m else
                   "not confirmed here" if fast < -m and good < -m else "depends")
        fastest = max(v, key=lambda k: v[k]["mean_val_accuracy"])
        out.append(common.claim(
            "adam_good_default",
            "Adam is a good default: at its best learning rate it converges fastest and ends "
            "among the best",
            f"{SOURCE}; Kingma & Ba 2015", verdict,
            f"mean val accuracy over epochs (speed): adam {v['adam']['mean_val_accuracy']:.3f}"
            f", fastest {fastest} {v[fastest]['mean_val_accuracy']:.3f}; final val: adam "
            f"{v['adam']['val_accuracy']:.3f}, best {best_val:.3f}; rule: confirmed when adam "
            f"is within the noise margin {m:.3f} of the best on both, not confirmed when on "
            "neither, else depends",
            "" if verdict == "confirmed" else
            "with each optimizer at its own tuned rate the differences are small on an MLP; "
            "a few epochs favour whichever rule takes big early steps"))
    if "adam" in v and "sgd" in v:
        wa, ws = v["adam"]["forgiveness_decades"], v["sgd"]["forgiveness_decades"]
        d = wa - ws
        verdict = ("confirmed" if d > WIDTH_RESOLUTION else
                   "not confirmed here" if d < -WIDTH_RESOLUTION else "depends")
        edge = [k for k in ("adam", "sgd") if v[k]["band_at_edge"]]
        out.append(common.claim(
            "adam_forgiving",
            "Adam is more forgiving of a badly chosen learning rate than SGD",
            f"{SOURCE}; Kingma & Ba 2015", verdict,
            f"width of the lr band within {tolerance:.0%} of the best val accuracy: adam "
            f"{wa:.2f} decades, sgd {ws:.2f}; rule: wider "
            f"by > {WIDTH_RESOLUTION} decade confirms, narrower by > {WIDTH_RESOLUTION} "
            "refutes, else depends" + (f"; band reaches the sweep's end for {edge} (a lower "
                                       "bound)" if edge else ""),
            "" if verdict == "confirmed" else
            "a short sweep measures the band only to within a fraction of a decade; on a "
            "small well-conditioned MLP plain SGD also tolerates a wide range"))
    if {"sgd", "momentum", "nesterov"} <= set(v):
        base = v["sgd"]["val_accuracy"]
        m = common.noise_margin(base, n_val)
        diffs = [v["momentum"]["val_accuracy"] - base, v["nesterov"]["val_accuracy"] - base]
        verdict = common.outcome(diffs, m)
        out.append(common.claim(
            "momentum_beats_sgd",
            "SGD with momentum or Nesterov momentum beats plain SGD",
            f"{SOURCE} ('SGD + Momentum', 'Nesterov Momentum')", verdict,
            f"best final val accuracy: sgd {base:.3f}, momentum "
            f"{v['momentum']['val_accuracy']:.3f}, nesterov {v['nesterov']['val_accuracy']:.3f}"
            f"; rule: both ahead by > the noise margin {m:.3f} confirms, none ahead and one "
            "behind refutes, else depends",
            "" if verdict == "confirmed" else
            "each at its own best rate, SGD compensates with a larger step; momentum's "
            "advantage shows on ill-conditioned losses and longer runs"))
    if {"adagrad", "rmsprop"} <= set(v):
        out.append(adagrad_claim(v["adagrad"], v["rmsprop"], n_val))
    return out


def late_progress(loss: Sequence[float | None]) -> float:
    """The fraction of a run's training-loss decrease made in its second half (0 when none).

    (L_mid − L_end) / (L_first − L_end) with L_mid at the middle epoch: a step size that
    decays too fast leaves little progress for the second half.
    """
    a = [v for v in loss if v is not None and math.isfinite(v)]
    if len(a) < 3 or a[0] <= a[-1]:
        return 0.0
    return float((a[len(a) // 2] - a[-1]) / (a[0] - a[-1]))


def adagrad_claim(adagrad: Mapping[str, Any], rmsprop: Mapping[str, Any],
                  n_val: int) -> dict[str, str]:
    """"Adagrad's step size decays too fast" measured against RMSprop, its leaky fix.

    Rule: Adagrad makes less than half RMSprop's share of late progress *and* ends below it
    by more than the noise margin → confirmed; Adagrad's share of late progress is at
    least RMSprop's and its accuracy is not below by more than the margin → not confirmed
    here; else depends.
    """
    pa, pr = late_progress(adagrad["history"]["loss"]), late_progress(rmsprop["history"]["loss"])
    m = common.noise_margin(rmsprop["val_accuracy"], n_val)
    d = adagrad["val_accuracy"] - rmsprop["val_accuracy"]
    if pa < 0.5 * pr and d < -m:
        verdict = "confirmed"
    elif pa >= pr and d >= -m:
        verdict = "not confirmed here"
    else:
        verdict = "depends"
    return common.claim(
        "adagrad_decays_too_fast",
        "Adagrad's effective step size decays too fast for long runs; RMSprop's leaky "
        "cache fixes it",
        f"{SOURCE} ('AdaGrad', 'RMSProp')", verdict,
        f"share of the training-loss decrease made in the second half: adagrad {pa:.2f}, "
        f"rmsprop {pr:.2f}; final val accuracy adagrad {adagrad['val_accuracy']:.3f}, rmsprop "
        f"{rmsprop['val_accuracy']:.3f} (margin {m:.3f}); rule: less than half the late "
        "progress and behind → confirmed, at least as much and not behind → not confirmed",
        "" if verdict == "confirmed" else
        "a run of a few epochs is not a long run; each at its tuned rate, Adagrad's "
        "cache has not grown enough to stall it")


def plot(variants: Mapping[str, Mapping[str, Any]], path: str) -> str:
    """Val accuracy against lr for each sweep (band marked), and the best runs' curves."""
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, v in variants.items():
        lrs = [s["lr"] for s in v["sweep"]]
        width = v["forgiveness_decades"]
        line, = axes[0].plot(lrs, [s["val_accuracy"] for s in v["sweep"]], "o-", ms=3,
                             label=name + ("" if width is None else f" ({width:.1f} dec)"))
        axes[0].plot(v["band_lr"], [v["val_accuracy"]] * 2, "-", lw=4, alpha=0.35,
                     color=line.get_color())
        epochs = np.arange(1, len(v["history"]["val_accuracy"]) + 1)
        axes[1].plot(epochs, [np.nan if a is None else a for a in v["history"]["val_accuracy"]],
                     "o-", ms=3, color=line.get_color(), label=f"{name} @ {v['best_lr']:.0e}")
        loss = [np.nan if a is None or a <= 0 else a for a in v["history"]["loss"]]
        axes[2].plot(epochs, loss, "o-", ms=3, color=line.get_color(), label=name)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("learning rate (log)")
    axes[0].set_ylabel("final val accuracy")
    axes[0].set_title("sweeps; bar = band within tolerance of the best")
    axes[1].set_ylabel("val accuracy at the best lr")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("training loss at the best lr (log)")
    for ax in axes[1:]:
        ax.set_xlabel("epoch")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    return plots.save_figure(fig, path)


if __name__ == "__main__":
    common.cli_main(run_experiment, "optimizers")
