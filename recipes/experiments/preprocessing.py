"""Input preprocessing side by side: none, zero-centred, standardized, PCA, ZCA-whitened.

CS231n lecture 6, "Data preprocessing" (zero-centre, normalize; PCA and whitening, "not
common" for images) and LeCun et al. 1998, "Efficient BackProp" section 4.3 (inputs whose
mean is far from zero make every first-layer weight of a unit move in the same direction, so
gradient descent zig-zags and converges slower).

One MLP, trained with plain SGD + momentum at one fixed learning rate (not Adam: its
per-parameter step sizes would undo much of what the preprocessing changes), once per
``dataset.preprocess`` method (``recipes.preprocessing.METHODS``): ``none`` (pixels in
[0, 1]), ``mean_image`` (AlexNet's mean image), ``per_channel_mean`` (VGG's), ``standardize``,
``pca`` (projection on the components keeping 99 % of the variance) and ``zca``. Per variant:
the training loss per epoch, the epoch it first reaches a *target loss* (the loss the
``mean_image`` run has at half of the epochs), and final val/test accuracy. Verdicts come
from ``centering_verdict`` and ``whitening_verdict``, pure functions of those numbers.

Command: ``python -m recipes.experiments.preprocessing --workdir=DIR [--quick]``
(``--quick``: digits, 64 hidden units, 6 epochs, ~12 s on 2 CPU cores, 15-30 s with other jobs
running; full: a stratified 20,000-image subset of Fashion-MNIST, 256-128 units, 15 epochs,
about 2-3 minutes on 2 free CPU cores and 3-4 with other jobs running, estimated from timed
3,000-image epochs of a larger MLP scaled up; PCA/ZCA of 784 pixels fit in about a second).
Writes ``results.json`` and ``preprocessing.png``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from recipes import plots
from recipes import preprocessing as preprocessing_lib
from recipes.experiments import common

NAME = "preprocessing"
METHODS = preprocessing_lib.METHODS  # none, mean_image, per_channel_mean, standardize, pca, zca
CENTRED = "mean_image"  # the zero-centred reference (and the source of the target loss)
WHITENING = ("pca", "zca")
LOSS_GAP = 1.1  # final losses more than 10 % apart count as different
ACC_GAIN = 0.01  # one accuracy point


def config(quick: bool) -> ml_collections.ConfigDict:
    """The shared recipe: base MLP, SGD + momentum at one fixed learning rate."""
    c = common.base_config(quick)
    c.optimizer.name = "momentum"
    c.optimizer.momentum = 0.9
    c.optimizer.learning_rate = 0.05 if quick else 0.01
    c.train.epochs = 6 if quick else 15
    if not quick:
        c.dataset.limit = 20000
    return c


def run_experiment(workdir: str, *, quick: bool = False, epochs: int | None = None,
                   limit: int | None = None) -> dict[str, Any]:
    """Trains one MLP per preprocessing method and judges the lecture's claims.

    Args:
        workdir: where each variant's run, ``results.json`` and ``preprocessing.png`` go.
        quick: digits and a tiny MLP (CI); else a Fashion-MNIST subset.
        epochs: override the number of epochs (>= 3).
        limit: override the number of training examples (>= 100).

    Returns:
        The results dict (also written to ``workdir/results.json``).
    """
    cfg = config(quick)
    common.override(cfg, epochs=epochs, limit=limit, min_epochs=3)
    splits = common.load_splits(cfg)
    n_epochs = cfg.train.epochs
    variants: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        c = cfg.copy_and_resolve_references()
        c.dataset.preprocess = method
        run = common.train_variant(c, workdir, method, splits=splits)
        pre = preprocessing_lib.Preprocessor.load(os.path.join(workdir, method))
        x = pre.transform(splits.train.x[:2000])  # what the network sees
        variants[method] = {"preprocess": method, **common.variant_record(run),
                            "input_dims": int(np.prod(pre.output_shape)),
                            "input_mean": float(x.mean()), "input_std": float(x.std())}

    k = math.ceil(n_epochs / 2)
    target = variants[CENTRED]["curves"]["loss"][k - 1]
    for v in variants.values():
        v["epochs_to_target"] = None if target is None else common.epochs_to(
            {"loss": [math.inf if x is None else x for x in v["curves"]["loss"]]}, "loss", target)
    results = {
        "experiment": NAME, "dataset": cfg.dataset.name, "source": splits.info.source,
        "quick": quick, "command": common.command(NAME, quick),
        "setup": {"epochs": n_epochs, "target_loss": target,
                  "target_from": f"{CENTRED}, epoch {k}", "num_train": len(splits.train),
                  "config": cfg.to_dict()},
        "variants": variants,
    }
    results["claims"] = claims(variants, n_epochs)
    results["plots"] = [os.path.basename(plot(results, os.path.join(workdir, f"{NAME}.png")))]
    return common.finish(workdir, json.loads(json.dumps(results)))


def centering_verdict(raw_epochs: int | None, centred_epochs: int | None,
                      raw_loss: float | None, centred_loss: float | None, max_epochs: int,
                      gap: float = LOSS_GAP) -> str:
    """Do raw (non-zero-centred) inputs converge slower than zero-centred ones?

    Args:
        raw_epochs: epochs the raw-input run needed to the target loss (None: never within
            ``max_epochs``, counted as ``max_epochs + 1``).
        centred_epochs: the same for the zero-centred run.
        raw_loss: the raw-input run's final training loss (None: diverged, counted as +inf).
        centred_loss: the same for the zero-centred run.
        max_epochs: the epochs both runs had.
        gap: final losses more than this factor apart count as different.

    Returns:
        Confirmed if raw needs more epochs to the target, or as many but ends with a loss
        more than ``gap`` times higher; not confirmed if raw needs fewer epochs, or as many
        and ends more than ``gap`` times lower; depends otherwise (a tie at this resolution).
    """
    def ep(e: int | None) -> int:
        return max_epochs + 1 if e is None else e

    def loss(v: float | None) -> float:
        return math.inf if v is None else v

    if ep(raw_epochs) != ep(centred_epochs):
        return "confirmed" if ep(raw_epochs) > ep(centred_epochs) else "not confirmed here"
    if loss(raw_loss) > gap * loss(centred_loss):
        return "confirmed"
    if gap * loss(raw_loss) < loss(centred_loss):
        return "not confirmed here"
    return "depends"


def whitening_verdict(standardize_acc: float | None, whitened_acc: Mapping[str, float | None],
                      standardize_epochs: int | None, whitened_epochs: Mapping[str, int | None],
                      max_epochs: int, gain: float = ACC_GAIN) -> str:
    """Is whitening (PCA/ZCA) unnecessary, compared with plain standardization?

    Returns:
        Depends if a whitening method beats standardize's test accuracy by more than
        ``gain`` (it helps this model, so "not needed" depends on the model and data), or
        reaches the target loss in fewer epochs without a better accuracy (faster to fit,
        no better to test); confirmed otherwise (whitening brings nothing measurable).
        Missing accuracies count as 0, missing epochs as ``max_epochs + 1``.
    """
    base = standardize_acc or 0.0
    if max((a or 0.0) for a in whitened_acc.values()) > base + gain:
        return "depends"
    std_ep = max_epochs + 1 if standardize_epochs is None else standardize_epochs
    if any((max_epochs + 1 if e is None else e) < std_ep for e in whitened_epochs.values()):
        return "depends"
    return "confirmed"


def claims(variants: Mapping[str, Mapping[str, Any]], max_epochs: int) -> list[dict[str, str]]:
    """The lecture's two preprocessing claims, judged from the measured numbers."""
    raw, centred = variants["none"], variants[CENTRED]

    def ep(v: Mapping[str, Any]) -> str:
        return "never" if v["epochs_to_target"] is None else str(v["epochs_to_target"])

    def loss(v: Mapping[str, Any]) -> str:
        return "diverged" if v["final_loss"] is None else f"{v['final_loss']:.4f}"

    verdict = centering_verdict(raw["epochs_to_target"], centred["epochs_to_target"],
                                raw["final_loss"], centred["final_loss"], max_epochs)
    out = [common.claim(
        "zero_centred_converges_faster",
        "Inputs that are not zero-centred converge slower (zig-zagging first-layer updates)",
        "CS231n lecture 6 'Data preprocessing'; LeCun et al. 1998 'Efficient BackProp' 4.3",
        verdict,
        f"epochs to the target loss: none {ep(raw)}, mean_image {ep(centred)}, "
        f"per_channel_mean {ep(variants['per_channel_mean'])} of {max_epochs}; final loss "
        f"none {loss(raw)} vs mean_image {loss(centred)} (input mean {raw['input_mean']:.2f} "
        f"vs {centred['input_mean']:.2f}); rule: confirmed if none needs more epochs, or as "
        f"many and ends > {LOSS_GAP:g}x higher",
        "" if verdict == "confirmed" else "with momentum and a small input mean (~0.1-0.3 on "
        "[0, 1] pixels) the zig-zag costs little; only the first layer sees the inputs")]
    std = variants["standardize"]
    verdict = whitening_verdict(std["test_accuracy"],
                                {m: variants[m]["test_accuracy"] for m in WHITENING},
                                std["epochs_to_target"],
                                {m: variants[m]["epochs_to_target"] for m in WHITENING},
                                max_epochs)
    out.append(common.claim(
        "whitening_not_needed",
        "PCA/whitening is not needed (not common) for images: zero-centre and normalize",
        "CS231n lecture 6 'Data preprocessing' ('In practice for images: centre only')",
        verdict,
        "test accuracy: " + ", ".join(f"{m} {variants[m]['test_accuracy']:.4f}"
                                      for m in ("standardize", *WHITENING))
        + "; epochs to the target loss: " + ", ".join(
            f"{m} {ep(variants[m])}" for m in ("standardize", *WHITENING))
        + f"; rule: confirmed unless whitening beats standardize by > {ACC_GAIN:.0%} "
        "accuracy or reaches the target sooner",
        "" if verdict == "confirmed" else "whitening decorrelates the pixels, which helps an "
        "MLP (no convolutions) fit faster or better; convnets on natural images gain little"))
    return out


def plot(results: Mapping[str, Any], path: str) -> str:
    """Training loss and val accuracy per epoch per method, and final test accuracy."""
    plt = plots.pyplot()
    from matplotlib import ticker

    variants = results["variants"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, v in variants.items():
        loss = [np.nan if x is None else x for x in v["curves"]["loss"]]
        label = f"{name} (target @ {v['epochs_to_target'] or 'never'})"
        axes[0].plot(np.arange(1, len(loss) + 1), loss, "o-", ms=3, label=label)
        val = [np.nan if x is None else x for x in v["curves"]["val_accuracy"]]
        axes[1].plot(np.arange(1, len(val) + 1), val, "o-", ms=3, label=name)
    target = results["setup"]["target_loss"]
    if target:
        axes[0].axhline(target, color="grey", ls="--", lw=1, label="target loss")
    axes[0].set_yscale("log")
    axes[0].set(xlabel="epoch", ylabel="training loss (log)", title="loss per epoch")
    axes[0].legend(fontsize=7)
    axes[1].set(xlabel="epoch", ylabel="val accuracy", title="validation accuracy")
    axes[1].legend(fontsize=7)
    names = list(variants)
    acc = [variants[n]["test_accuracy"] or 0.0 for n in names]
    axes[2].bar(np.arange(len(names)), acc, color="tab:blue")
    axes[2].set_xticks(np.arange(len(names)), names, rotation=30, fontsize=8)
    axes[2].set_ylim(max(0.0, min(acc) - 0.1), 1.0)
    axes[2].set(ylabel="test accuracy", title="final test accuracy")
    for ax in axes[:2]:
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # whole epochs
    return plots.save_figure(fig, path)


if __name__ == "__main__":
    common.cli_main(run_experiment, NAME)
