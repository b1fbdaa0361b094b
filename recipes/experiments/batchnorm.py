"""Batch normalization: higher learning rates, faster training, where to put it, ResNet units.

Ioffe & Szegedy 2015, "Batch Normalization" (section 4.2: BN-x5 and BN-x30, the baseline's
learning rate times 5 and 30, train where the baseline cannot, and reach its accuracy in far
fewer steps); CS231n lecture 6, "Batch Normalization" (usually inserted after the FC/conv
layer and before the nonlinearity; "improves gradient flow, allows higher learning rates");
He et al. 2016, "Identity Mappings in Deep Residual Networks" (Fig. 4: of the five residual
units, full pre-activation (e) is best).

1. A 3-hidden-layer ReLU MLP with SGD + momentum and no BN at three learning rates (two in
   ``--quick``); the best (by validation accuracy) is the baseline, lr x1.
2. The same MLP without BN at lr x30, and with BN (before each ReLU) at lr x1, x5 and x30.
3. BN after the ReLU (``model.norm_position=after_activation``) at lr x1.
4. The CIFAR-style ResNet with BN, residual units a-e (``models.resnet``), same budget each.

"Training speed" and "still trains" are read from the *training-mode* accuracy per epoch
(``history['accuracy']``): in runs of a few hundred steps BN's moving averages (momentum
0.99) still lag, which would blur the inference-mode numbers; final val/test accuracy are
reported too. Verdicts come from ``higher_lr_verdict``, ``speedup_verdict``,
``position_verdict`` and ``best_verdict``, pure functions of the recorded numbers.

Command: ``python -m recipes.experiments.batchnorm --workdir=DIR [--quick]``
(``--quick``: digits, 3x32 units for 4 epochs, ResNet-8 of width 4 for 1 epoch, 12 runs,
~35 s on 2 CPU cores, 60-90 s with other jobs running; full: a stratified 12,000-image subset
of Fashion-MNIST for the MLPs (3x256 units, 10 epochs) and 6,000 for the ResNet-8s (width 8,
3 epochs), about 5 minutes on 2 free CPU cores and 8 with other jobs running, estimated from
timed 3,000-image epochs (no-BN MLP ~0.5 s, BN MLP ~1 s, ResNet ~7 s, measured under a load
of 5) scaled up). Writes ``results.json`` and ``batchnorm.png`` into the workdir.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from models import resnet
from recipes import plots
from recipes.experiments import common

NAME = "batchnorm"
SWEEP = (0.003, 0.01, 0.03)  # no-BN learning rates; the best is the baseline (x1)
QUICK_SWEEP = (0.01, 0.03)  # --quick saves one run (13 runs would not fit its minute)
FACTORS = (1, 5, 30)  # Ioffe & Szegedy's BN-x5 and BN-x30
FAIL_DROP = 0.10  # "much worse": 10 accuracy points under the baseline
TRAIN_DROP = 0.05  # "still trains": within 5 points of the baseline
SMALL = 0.01  # "small difference": one accuracy point
SOMEWHAT = 0.03


def mlp_config(quick: bool) -> ml_collections.ConfigDict:
    """The MLP: 3 hidden ReLU layers, He init, SGD + momentum, constant learning rate."""
    c = common.base_config(quick)
    c.model.hidden = (32,) * 3 if quick else (256,) * 3
    c.optimizer.name = "momentum"
    c.optimizer.momentum = 0.9
    c.train.epochs = 4 if quick else 10
    if not quick:
        c.dataset.limit = 12000
    return c


def resnet_config(quick: bool) -> ml_collections.ConfigDict:
    """The ResNet: depth 8 (one unit per stage), BN, SGD + momentum at He et al.'s lr 0.1."""
    c = common.base_config(quick, arch="resnet")
    c.model.depth = 8
    c.model.width = 4 if quick else 8
    c.model.norm = "batch"
    c.optimizer.name = "momentum"
    c.optimizer.momentum = 0.9
    c.optimizer.learning_rate = 0.1
    c.train.epochs = 1 if quick else 3
    c.train.batch_size = 64  # more steps, so BN's moving averages settle before the test
    if not quick:
        c.dataset.limit = 6000
    return c


def run_experiment(workdir: str, *, quick: bool = False, epochs: int | None = None,
                   limit: int | None = None) -> dict[str, Any]:
    """Trains the BN / no-BN MLPs and the five ResNet units; judges the claims.

    Args:
        workdir: where each variant's run, ``results.json`` and ``batchnorm.png`` go.
        quick: digits and tiny models (CI); else a Fashion-MNIST subset.
        epochs: override the MLPs' number of epochs (>= 2; the ResNets keep theirs).
        limit: override the number of training examples (>= 100).

    Returns:
        The results dict (also written to ``workdir/results.json``).
    """
    cfg, rcfg = mlp_config(quick), resnet_config(quick)
    common.override(cfg, epochs=epochs, limit=limit, min_epochs=2)
    if limit is not None:
        rcfg.dataset.limit = cfg.dataset.limit
    splits = common.load_splits(cfg)
    rsplits = splits if rcfg.dataset.limit == cfg.dataset.limit else common.load_splits(rcfg)
    variants: dict[str, dict[str, Any]] = {}

    def train(name: str, base: ml_collections.ConfigDict, lr: float, factor: float | None,
              **model: Any) -> dict[str, Any]:
        c = base.copy_and_resolve_references()
        lr = float(f"{lr:.6g}")  # 0.03 * 30 -> 0.9, not 0.8999999999999999
        c.optimizer.learning_rate = lr
        for key, value in model.items():
            c.model[key] = value
        run = common.train_variant(c, workdir, name,
                                   splits=rsplits if c.model.arch == "resnet" else splits)
        variants[name] = {"arch": c.model.arch, "norm": c.model.norm,
                          "norm_position": c.model.norm_position, "learning_rate": lr,
                          "lr_factor": factor, **{k: str(v) for k, v in model.items()},
                          **common.variant_record(run)}
        return variants[name]

    sweep_lrs = QUICK_SWEEP if quick else SWEEP
    for lr in sweep_lrs:
        train(f"nobn_lr{lr:g}", cfg, lr, None)
    sweep = {n: v for n, v in variants.items() if n.startswith("nobn_lr")}
    best_name = max(sweep, key=lambda n: sweep[n]["val_accuracy"] or 0.0)
    base_lr = sweep[best_name]["learning_rate"]
    train("nobn_x30", cfg, base_lr * 30, 30)
    for f in FACTORS:
        train(f"bn_x{f}", cfg, base_lr * f, f, norm="batch")
    train("bn_after_x1", cfg, base_lr, 1, norm="batch", norm_position="after_activation")
    for v in resnet.VARIANTS:
        train(f"resnet_{v}", rcfg, rcfg.optimizer.learning_rate, None, variant=v)

    # BN speeds up training: epochs to the baseline's final training accuracy.
    target = variants[best_name]["final_train_accuracy"]
    for v in variants.values():
        if v["arch"] == "mlp":
            v["epochs_to_target"] = None if target is None else common.epochs_to(
                {"accuracy": [-1.0 if x is None else x for x in v["curves"]["accuracy"]]},
                "accuracy", target, below=False)
    results = {
        "experiment": NAME, "dataset": cfg.dataset.name, "source": splits.info.source,
        "quick": quick, "command": common.command(NAME, quick),
        "setup": {"mlp_epochs": cfg.train.epochs, "resnet_epochs": rcfg.train.epochs,
                  "sweep": list(sweep_lrs), "baseline": best_name, "baseline_lr": base_lr,
                  "target_train_accuracy": target,
                  "target_from": f"{best_name}, final epoch (training mode)",
                  "num_train": len(splits.train), "resnet_num_train": len(rsplits.train),
                  "mlp_config": cfg.to_dict(),
                  "resnet_config": rcfg.to_dict()},
        "variants": variants,
    }
    results["claims"] = claims(variants, best_name, cfg.train.epochs)
    results["plots"] = [os.path.basename(plot(results, os.path.join(workdir, f"{NAME}.png")))]
    return common.finish(workdir, json.loads(json.dumps(results)))


def higher_lr_verdict(baseline: float | None, no_bn: float | None, bn: float | None, *,
                      fail_drop: float = FAIL_DROP, train_drop: float = TRAIN_DROP) -> str:
    """Does BN train at a learning rate where the plain network fails?

    Args:
        baseline: the best no-BN run's final training accuracy.
        no_bn: the plain network's final training accuracy at the high lr (None: diverged).
        bn: the BN network's final training accuracy at the high lr (None: diverged).
        fail_drop: a drop under the baseline larger than this is a failure.
        train_drop: a drop under the baseline up to this still "trains".

    Returns:
        Confirmed if no-BN fails (diverged, or more than ``fail_drop`` under the baseline)
        while BN trains (within ``train_drop`` of it); not confirmed if no-BN trains too, or
        BN fails as well; depends otherwise (in between).
    """
    base = baseline or 0.0

    def fails(acc: float | None) -> bool:
        return acc is None or acc < base - fail_drop

    def trains(acc: float | None) -> bool:
        return acc is not None and acc >= base - train_drop

    if fails(no_bn) and trains(bn):
        return "confirmed"
    if trains(no_bn) or fails(bn):
        return "not confirmed here"
    return "depends"


def speedup_verdict(baseline_epochs: int | None, bn_epochs: Mapping[str, int | None],
                    max_epochs: int) -> str:
    """Does some BN run reach the target in fewer epochs than the baseline?

    None (never within ``max_epochs``) counts as ``max_epochs + 1``. Confirmed if the fastest
    BN run needs fewer epochs, depends if as many, not confirmed if more (or none gets there).
    """
    def ep(e: int | None) -> int:
        return max_epochs + 1 if e is None else e

    fastest = min((ep(e) for e in bn_epochs.values()), default=max_epochs + 1)
    if fastest > max_epochs:
        return "not confirmed here"
    if fastest < ep(baseline_epochs):
        return "confirmed"
    return "depends" if fastest == ep(baseline_epochs) else "not confirmed here"


def position_verdict(before: float | None, after: float | None, *, small: float = SMALL,
                     somewhat: float = SOMEWHAT) -> str:
    """Is the gap between BN before and after the activation small?

    Confirmed if the accuracies differ by <= ``small``, depends if by <= ``somewhat``, not
    confirmed if by more (or one of them is missing).
    """
    if before is None or after is None:
        return "not confirmed here"
    gap = abs(before - after)
    return "confirmed" if gap <= small else "depends" if gap <= somewhat else "not confirmed here"


def best_verdict(name: str, scores: Mapping[str, float | None], tol: float = SMALL) -> str:
    """Is ``name`` the best of ``scores``?

    Confirmed if its score is the highest, depends if within ``tol`` of the highest (one seed
    cannot separate them), not confirmed otherwise (or if its score is missing).
    """
    top = max((s for s in scores.values() if s is not None), default=None)
    mine = scores.get(name)
    if mine is None or top is None:
        return "not confirmed here"
    if mine >= top:
        return "confirmed"
    return "depends" if mine >= top - tol else "not confirmed here"


def claims(variants: Mapping[str, Mapping[str, Any]], baseline: str,
           max_epochs: int) -> list[dict[str, str]]:
    """The four batch-normalization claims, judged from the measured numbers."""
    v = variants
    base_acc = v[baseline]["final_train_accuracy"]

    def acc(name: str, key: str = "final_train_accuracy") -> str:
        x = v[name][key]
        return "diverged" if x is None else f"{x:.3f}"

    def ep(name: str) -> str:
        e = v[name]["epochs_to_target"]
        return "never" if e is None else str(e)

    verdict = higher_lr_verdict(base_acc, v["nobn_x30"]["final_train_accuracy"],
                                v["bn_x30"]["final_train_accuracy"])
    lr = v[baseline]["learning_rate"]
    out = [common.claim(
        "bn_allows_higher_lr", "BN allows much higher learning rates (BN-x30 trains)",
        "Ioffe & Szegedy 2015, section 4.2.2 (BN-x5, BN-x30); CS231n lecture 6 'Batch "
        "Normalization'", verdict,
        f"final training accuracy: baseline (no BN, lr {lr:g}) {acc(baseline)}, no BN at "
        f"x30 {acc('nobn_x30')} ({v['nobn_x30']['stopped_reason']}), BN at x30 "
        f"{acc('bn_x30')}; rule: confirmed if no-BN x30 diverges or drops > "
        f"{FAIL_DROP:.0%} while BN x30 stays within {TRAIN_DROP:.0%} of the baseline",
        "" if verdict == "confirmed" else "x30 of a baseline already near its stability "
        "edge is too much even with BN here (the unnormalized logits layer still sees it), "
        "or the plain net tolerates it")]
    bn_names = [f"bn_x{f}" for f in FACTORS]
    verdict = speedup_verdict(v[baseline]["epochs_to_target"],
                              {n: v[n]["epochs_to_target"] for n in bn_names}, max_epochs)
    out.append(common.claim(
        "bn_speeds_up_training",
        "BN reaches the baseline's accuracy in far fewer steps",
        "Ioffe & Szegedy 2015, section 4.2.2 and Fig. 2", verdict,
        f"epochs to the baseline's final training accuracy {base_acc or 0.0:.3f}: baseline "
        f"{ep(baseline)}, " + ", ".join(f"{n} {ep(n)}" for n in bn_names)
        + f" of {max_epochs}; rule: confirmed if the fastest BN run needs fewer epochs",
        "" if verdict == "confirmed" else "in a shallow MLP the plain net is already well "
        "conditioned; BN's advantage grows with depth"))
    verdict = position_verdict(v["bn_x1"]["test_accuracy"], v["bn_after_x1"]["test_accuracy"])
    out.append(common.claim(
        "bn_position_small_difference",
        "BN before or after the nonlinearity makes little difference",
        "CS231n lecture 6 'Batch Normalization' (before); Ioffe & Szegedy 2015 section 3.2",
        verdict,
        f"test accuracy at lr x1: before {acc('bn_x1', 'test_accuracy')}, after "
        f"{acc('bn_after_x1', 'test_accuracy')}; rule: confirmed if within {SMALL:.0%}, "
        f"depends if within {SOMEWHAT:.0%}",
        "" if verdict == "confirmed" else "one seed of a short run: the gap may be noise"))
    scores = {n: v[f"resnet_{n}"]["test_accuracy"] for n in resnet.VARIANTS}
    verdict = best_verdict("e", scores)
    out.append(common.claim(
        "resnet_full_preactivation_best",
        "Full pre-activation (variant e: BN-ReLU-conv) is the best residual unit",
        "He et al. 2016 'Identity Mappings in Deep Residual Networks', Fig. 4 and Table 2",
        verdict,
        "test accuracy: " + ", ".join(f"{n} {acc(f'resnet_{n}', 'test_accuracy')}"
                                      for n in resnet.VARIANTS)
        + f"; rule: confirmed if e is highest, depends if within {SMALL:.0%} of it",
        "" if verdict == "confirmed" else "the paper's gaps appear at 110-1001 layers; a "
        "ResNet-8 trained for a few epochs is too shallow and short to separate the units"))
    return out


def plot(results: Mapping[str, Any], path: str) -> str:
    """MLP training loss and accuracy per epoch (BN vs no BN), and the five ResNet units."""
    plt = plots.pyplot()
    from matplotlib import ticker

    variants = results["variants"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))

    def curve(v: Mapping[str, Any], key: str) -> tuple[np.ndarray, list[float]]:
        y = [np.nan if x is None else x for x in v["curves"][key]]
        return np.arange(1, len(y) + 1), y

    for name, v in variants.items():
        style = "--" if v["norm"] == "none" else "-"
        if v["arch"] == "mlp":
            label = f"{name} (lr {v['learning_rate']:g})"
            axes[0].plot(*curve(v, "loss"), style, marker="o", ms=3, label=label)
            axes[1].plot(*curve(v, "accuracy"), style, marker="o", ms=3, label=name)
        else:
            acc = v["test_accuracy"]
            label = f"{name} (test {acc:.3f})" if acc is not None else name
            axes[2].plot(*curve(v, "val_accuracy"), marker="o", ms=3, label=label)
    target = results["setup"]["target_train_accuracy"]
    if target:
        axes[1].axhline(target, color="grey", ls=":", lw=1, label="baseline's final")
    axes[0].set_yscale("log")
    axes[0].set(xlabel="epoch", ylabel="training loss (log)", title="MLP: loss (dashed: no BN)")
    axes[1].set(xlabel="epoch", ylabel="training accuracy", title="MLP: training accuracy")
    axes[2].set(xlabel="epoch", ylabel="val accuracy", title="ResNet units a-e")
    for ax in axes:
        ax.legend(fontsize=6)
    for ax in axes:
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # whole epochs
    return plots.save_figure(fig, path)


if __name__ == "__main__":
    common.cli_main(run_experiment, NAME)
