"""Learning-rate schedules side by side: SGD + momentum at one rate, six ways to change it.

CS231n lecture 7 "Learning rate decay" (step, cosine, linear, "reduce on plateau");
Loshchilov & Hutter 2017 (SGDR, cosine); Goyal et al. 2017 ("Accurate, Large Minibatch
SGD", linear warmup).

Variants (``recipes.schedules`` names), all SGD + momentum 0.9 at ``learning_rate``:

* ``constant``;
* ``step``: × 0.1 every 40 % of the run (two drops);
* ``exponential``: η0·e^(−k·epoch) with k = ln(100)/epochs (ends at 1 % of η0);
* ``cosine`` (α = 0) and ``warmup_cosine`` (one epoch of linear warmup, then cosine);
* ``plateau``: × 0.2 when the validation loss has not improved for one epoch;
* ``cosine_high`` and ``warmup_cosine_high``: the same two at ``high_factor`` × η0, where
  warmup is supposed to matter.

Each variant records the learning rate actually used per epoch (``history.csv``'s ``lr``)
with its loss and accuracy curves; the verdicts compare final *test* accuracies with the
noise margin sqrt(2p(1−p)/n_test).

Command: ``python -m recipes.experiments.schedules --workdir=DIR [--quick]``
(``--quick``: digits, 8 runs of 6 epochs, ~20 s; full: Fashion-MNIST, a stratified 20000
training images and 2000 validation images, 8 runs of 15 epochs, ~3 minutes on 2 free CPU
cores, estimated from 9 s a run of 10000 images for 12 epochs under load). Writes
``results.json`` and ``schedules.png``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from recipes import plots
from recipes.experiments import common

NAMES = ("constant", "step", "exponential", "cosine", "warmup_cosine", "plateau",
         "cosine_high", "warmup_cosine_high")
#: The schedules whose decay does not depend on the validation loss (claim 1).
DECAYING = ("step", "exponential", "cosine")
SOURCE = "CS231n lecture 7 'Learning rate decay'"


def variant_config(quick: bool, name: str, *, learning_rate: float, epochs: int,
                   high_factor: float = 4.0) -> Any:
    """The base MLP with SGD + momentum and the schedule that ``name`` describes."""
    cfg = common.base_config(quick)
    if not quick:
        cfg.dataset.limit = 20000
        cfg.dataset.val_size = 2000 / 60000
    cfg.train.epochs = epochs
    cfg.optimizer.name = "momentum"
    cfg.optimizer.momentum = 0.9
    cfg.optimizer.learning_rate = learning_rate * (high_factor if name.endswith("_high")
                                                   else 1.0)
    s = cfg.schedule
    kind = name.removesuffix("_high")
    s.name = {"warmup_cosine": "cosine"}.get(kind, kind)
    if kind == "step":
        s.decay_rate = 0.1
        s.step_epochs = max(1, round(0.4 * epochs))
    elif kind == "exponential":
        s.decay_rate = math.log(100.0) / epochs
    elif kind == "plateau":
        s.plateau_factor = 0.2
        s.plateau_patience = 1
    if kind == "warmup_cosine":
        s.warmup_epochs = 1.0
    return cfg


def run_experiment(workdir: str, *, quick: bool = False, learning_rate: float = 0.05,
                   high_factor: float = 4.0, epochs: int | None = None) -> dict[str, Any]:
    """Trains every schedule of ``NAMES`` and writes the curves and the verdicts.

    Args:
        workdir: where ``results.json``, ``schedules.png`` and the runs go.
        quick: digits, 6 epochs (CI); else 20000 Fashion-MNIST images, 15 epochs.
        learning_rate: η0 of every schedule (its peak with warmup).
        high_factor: the ``*_high`` variants run at this × η0.
        epochs: overrides the number of epochs.

    Returns:
        The results (also written to ``workdir/results.json``).
    """
    if not learning_rate > 0 or not high_factor >= 1:
        raise ValueError(f"learning_rate must be > 0 and high_factor >= 1, got "
                         f"{learning_rate!r} and {high_factor!r}")
    epochs = epochs or (6 if quick else 15)
    base = variant_config(quick, "constant", learning_rate=learning_rate, epochs=epochs)
    splits = common.load_splits(base)
    variants: dict[str, Any] = {}
    for name in NAMES:
        cfg = variant_config(quick, name, learning_rate=learning_rate, epochs=epochs,
                             high_factor=high_factor)
        r = common.train_variant(cfg, workdir, name, splits=splits)
        h = r["history"]
        variants[name] = {
            "schedule": cfg.schedule.to_dict(),
            "learning_rate": cfg.optimizer.learning_rate,
            "test_accuracy": common.finite(r.get("test_accuracy"), 0.0),
            "val_accuracy": common.finite(r.get("val_accuracy"), 0.0),
            "train_accuracy": common.finite(r.get("train_accuracy"), 0.0),
            "final_train_loss": common.finite(h.get("loss", [math.nan])[-1]),
            "stopped_reason": r["stopped_reason"],
            "history": common.curves(h, ("lr", *common.CURVE_KEYS)),
            "seconds": r["seconds"],
        }
    n_test = len(splits.test)
    results = {
        "experiment": "schedules",
        "dataset": base.dataset.name,
        "source": splits.info.source,
        "quick": quick,
        "command": common.command("schedules", quick),
        "setup": {"optimizer": "momentum 0.9", "learning_rate": learning_rate,
                  "high_factor": high_factor, "epochs": epochs,
                  "num_train": len(splits.train), "num_val": len(splits.val),
                  "num_test": n_test},
        "variants": variants,
        "claims": claims({k: v["test_accuracy"] for k, v in variants.items()}, n_test),
    }
    plot(variants, os.path.join(workdir, "schedules.png"))
    results["plots"] = ["schedules.png"]
    return common.finish(workdir, results)


def claims(test: Mapping[str, float], n_test: int) -> list[dict[str, str]]:
    """The three claims from the final test accuracy of each schedule (``NAMES`` keys)."""
    m = common.noise_margin(max(test.values()), n_test)
    diffs = [test[k] - test["constant"] for k in DECAYING]
    decay = common.outcome(diffs, m)
    rule = (f"rule: every difference > the noise margin {m:.3f} confirms, one below -margin "
            "and none above refutes, else depends")
    out = [common.claim(
        "decay_beats_constant",
        "Decaying the learning rate beats keeping it constant",
        SOURCE, decay,
        "test accuracy minus constant's: " + ", ".join(
            f"{k} {d:+.3f}" for k, d in zip(DECAYING, diffs))
        + f" (plateau {test['plateau'] - test['constant']:+.3f}; constant "
        f"{test['constant']:.3f}); " + rule,
        "" if decay == "confirmed" else
        "at a moderate rate and a short run the constant rate has not hit its noise floor; "
        "decay pays off once the loss plateaus")]
    high = test["warmup_cosine_high"] - test["cosine_high"]
    low = test["warmup_cosine"] - test["cosine"]
    warm = common.outcome([high], m)
    out.append(common.claim(
        "warmup_helps_at_high_lr",
        "A linear warmup helps (or at least does not hurt) at a high learning rate",
        "Goyal et al. 2017, 'Accurate, Large Minibatch SGD'", warm,
        f"test accuracy, warmup + cosine minus cosine: {high:+.3f} at the high rate "
        f"({test['warmup_cosine_high']:.3f} vs {test['cosine_high']:.3f}), {low:+.3f} at the "
        f"base rate; rule: > the noise margin {m:.3f} confirms, < -margin refutes, within it "
        "depends (does not hurt)",
        "" if warm == "confirmed" else
        "warmup matters when early steps at the peak rate blow up (large batches, deep "
        "nets); this small MLP survives the high rate without it"))
    d = test["cosine"] - test["step"]
    cos = "confirmed" if d >= -m else "not confirmed here"
    out.append(common.claim(
        "cosine_matches_step",
        "Cosine decay is as good as step decay without tuning where the steps go",
        "Loshchilov & Hutter 2017, SGDR; " + SOURCE, cos,
        f"test accuracy cosine {test['cosine']:.3f}, step {test['step']:.3f} (difference "
        f"{d:+.3f}); rule: not behind by more than the noise margin {m:.3f} confirms",
        "" if cos == "confirmed" else
        "the step schedule's drops happened to fall at good epochs for this run length"))
    return out


def _array(values: list[float | None], positive: bool = False) -> np.ndarray:
    """A curve with None (non-finite) as NaN, and non-positive values too for log axes."""
    a = np.asarray([np.nan if x is None else x for x in values], dtype=np.float64)
    return np.where(a > 0, a, np.nan) if positive else a


def plot(variants: Mapping[str, Mapping[str, Any]], path: str) -> str:
    """Learning rate used, training loss and validation accuracy per epoch, every schedule."""
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, v in variants.items():
        h = v["history"]
        e = np.arange(1, len(h["lr"]) + 1)
        style = "--" if name.endswith("_high") else "-"
        axes[0].plot(e, _array(h["lr"], True), style, marker="o", ms=3, label=name)
        axes[1].plot(np.arange(1, len(h["loss"]) + 1), _array(h["loss"], True), style,
                     marker="o", ms=3, label=name)
        axes[2].plot(np.arange(1, len(h["val_accuracy"]) + 1), _array(h["val_accuracy"]),
                     style, marker="o", ms=3, label=f"{name} (test {v['test_accuracy']:.3f})")
    for ax, label, log in ((axes[0], "learning rate used (log)", True),
                           (axes[1], "training loss (log)", True),
                           (axes[2], "val accuracy", False)):
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.set_xlabel("epoch")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    return plots.save_figure(fig, path)


if __name__ == "__main__":
    common.cli_main(run_experiment, "schedules")
