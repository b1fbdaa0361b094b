"""Data augmentation and ten-crop testing, measured on one small convnet.

CS231n lecture 7 "Data augmentation" (random crops and flips, "Testing: average a fixed set
of crops"); Krizhevsky et al. 2012 (AlexNet: random 224 crops + flips, ten-crop testing);
Cubuk et al. 2020 (RandAugment); Zhang et al. 2018 (MixUp); Yun et al. 2019 (CutMix).

Variants, one ``augment`` field at a time from ``none``, each trained once and tested on the
center crop (``test_accuracy``) and with ``evaluate.tta=ten_crop`` (``test_tta_accuracy``):

* ``none``: the full image, no augmentation;
* ``crop_flip``: random ``crop``-pixel crops (26 of Fashion-MNIST's 28, 7 of digits' 8) and
  horizontal flips; the model sees crops, so ten-crop = 4 corners + center, and mirrors;
* ``randaugment``: 2 RandAugment ops a batch (magnitude 0.5);
* ``mixup`` (alpha 0.2) and ``cutmix`` (``augment.cutmix`` 1.0).

For a model trained on full images the crop *is* the image, so its ten-crop score is the
average of the image and its mirror (``recipes.tta``). Keras's RandAugment needs RGB, so the
grey images are repeated to three channels for *every* variant: the inputs stay identical
across variants and carry no new information.

Command: ``python -m recipes.experiments.augmentation_tta --workdir=DIR [--quick]``
(``--quick``: digits, 5 runs of 6 epochs, ~25 s; full: Fashion-MNIST, a stratified 10000
training images and 2000 validation images, 5 runs of 8 epochs, ~6 minutes on 2 free CPU
cores, estimated from 2000-image runs under load: ~18 s a run to evaluate (ten crops of
10000 test images), ~1.2 s an epoch per 1000 images, RandAugment ~0.8 s more). Writes
``results.json`` and ``augmentation_tta.png``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from recipes import data, plots
from recipes.experiments import common

NAMES = ("none", "crop_flip", "randaugment", "mixup", "cutmix")
#: The label-preserving augmentations of claim 1 (MixUp/CutMix have their own claim).
AUGMENTED = ("crop_flip", "randaugment")
SOURCE = "CS231n lecture 7 'Data augmentation'"


def rgb(splits: data.Splits) -> data.Splits:
    """The same splits with grey images repeated to three channels (RandAugment needs RGB)."""
    if splits.info.input_shape[-1] == 3:
        return splits

    def three(s: data.Split) -> data.Split:
        return data.Split(np.repeat(s.x, 3, axis=-1), s.y)

    h, w, _ = splits.info.input_shape
    return data.Splits(three(splits.train), three(splits.val), three(splits.test),
                       dataclasses.replace(splits.info, input_shape=(h, w, 3)))


def variant_config(quick: bool, name: str, *, epochs: int) -> Any:
    """The base convnet with the augmentation ``name`` and ten-crop test evaluation."""
    cfg = common.base_config(quick, arch="convnet")
    if quick:
        cfg.optimizer.learning_rate = 3e-3
    else:
        cfg.dataset.limit = 10000
        cfg.dataset.val_size = 2000 / 60000
    cfg.train.epochs = epochs
    cfg.evaluate.tta = "ten_crop"
    a = cfg.augment
    if name == "crop_flip":
        a.crop_size = 7 if quick else 26
        a.flip = "horizontal"
    elif name == "randaugment":
        a.randaugment = 2
        a.randaugment_magnitude = 0.5
    elif name == "mixup":
        a.mixup = 0.2
    elif name == "cutmix":
        a.cutmix = 1.0
    elif name != "none":
        raise ValueError(f"augmentation variant {name!r} is unknown; use one of {list(NAMES)}")
    return cfg


def run_experiment(workdir: str, *, quick: bool = False,
                   epochs: int | None = None) -> dict[str, Any]:
    """Trains every augmentation of ``NAMES``; tests each on the center crop and ten crops.

    Args:
        workdir: where ``results.json``, ``augmentation_tta.png`` and the runs go.
        quick: digits, 6 epochs (CI); else 10000 Fashion-MNIST images, 8 epochs.
        epochs: overrides the number of epochs.

    Returns:
        The results (also written to ``workdir/results.json``).
    """
    epochs = epochs or (6 if quick else 8)
    base = variant_config(quick, "none", epochs=epochs)
    splits = rgb(common.load_splits(base))
    variants: dict[str, Any] = {}
    for name in NAMES:
        cfg = variant_config(quick, name, epochs=epochs)
        r = common.train_variant(cfg, workdir, name, splits=splits)
        train_acc = common.finite(r.get("train_accuracy"), 0.0)
        val_acc = common.finite(r.get("val_accuracy"), 0.0)
        test = common.finite(r.get("test_accuracy"), 0.0)
        tta = common.finite(r.get("test_tta_accuracy"))
        h = r["history"]
        variants[name] = {
            "augment": {k: v for k, v in cfg.augment.items() if v != base.augment[k]},
            "train_accuracy": train_acc,
            "val_accuracy": val_acc,
            "gap": train_acc - val_acc,
            "test_accuracy": test,
            "test_ten_crop_accuracy": tta or 0.0,
            "ten_crop_gain": (tta or 0.0) - test,
            "history": common.curves(h),
            "seconds": r["seconds"],
        }
    results = {
        "experiment": "augmentation_tta",
        "dataset": base.dataset.name,
        "source": splits.info.source,
        "quick": quick,
        "command": common.command("augmentation_tta", quick),
        "setup": {"arch": "convnet", "widths": list(base.model.widths), "epochs": epochs,
                  "optimizer": f"adam {base.optimizer.learning_rate:g}",
                  "input_shape": list(splits.info.input_shape),
                  "channels": "grey repeated to RGB for every variant (RandAugment needs RGB)",
                  "num_train": len(splits.train), "num_val": len(splits.val),
                  "num_test": len(splits.test), "tta": "ten_crop"},
        "variants": variants,
        "claims": claims(variants, len(splits.val), len(splits.test)),
    }
    plot(variants, os.path.join(workdir, "augmentation_tta.png"))
    results["plots"] = ["augmentation_tta.png"]
    return common.finish(workdir, results)


def augmentation_verdict(base: Mapping[str, float], augmented: Mapping[str, Mapping[str, float]],
                         m_val: float, m_test: float) -> str:
    """Verdict on "augmentation reduces overfitting / raises test accuracy".

    A variant *helps* when its test accuracy beats ``base``'s by more than ``m_test``, or its
    train − val gap is smaller by more than ``m_val`` while its test accuracy is not lower
    by more than ``m_test``. Rule: every variant helps → confirmed; none helps →
    not confirmed here; else depends.

    Args:
        base: ``{"test_accuracy", "gap"}`` of the run without augmentation.
        augmented: the same for each augmented run.
        m_val: noise margin of a validation-accuracy difference.
        m_test: noise margin of a test-accuracy difference.
    """
    helps = []
    for v in augmented.values():
        d = v["test_accuracy"] - base["test_accuracy"]
        helps.append(d > m_test or (base["gap"] - v["gap"] > m_val and d >= -m_test))
    if helps and all(helps):
        return "confirmed"
    return "not confirmed here" if not any(helps) else "depends"


def tta_threshold(n_test: int) -> float:
    """The smallest ten-crop gain counted: 0.1 % and at least two test images (paired)."""
    return max(0.001, 2.0 / max(int(n_test), 1))


def claims(v: Mapping[str, Mapping[str, Any]], n_val: int, n_test: int) -> list[dict[str, str]]:
    """The three claims' verdicts from the variants' numbers."""
    m_val = common.noise_margin(v["none"]["val_accuracy"], n_val)
    m_test = common.noise_margin(v["none"]["test_accuracy"], n_test)
    verdict = augmentation_verdict(v["none"], {k: v[k] for k in AUGMENTED}, m_val, m_test)
    out = [common.claim(
        "augmentation_reduces_overfitting",
        "Data augmentation (random crops and flips, RandAugment) reduces overfitting and "
        "raises test accuracy",
        f"{SOURCE}; Krizhevsky et al. 2012", verdict,
        f"test accuracy (train − val gap): none {v['none']['test_accuracy']:.3f} "
        f"({v['none']['gap']:+.3f}), " + ", ".join(
            f"{k} {v[k]['test_accuracy']:.3f} ({v[k]['gap']:+.3f})" for k in AUGMENTED)
        + f"; rule: a variant helps when test accuracy is up by > {m_test:.3f}, or the gap is "
        f"down by > {m_val:.3f} with test accuracy not down by more than {m_test:.3f}; all "
        "help confirms, none refutes, else depends",
        "" if verdict == "confirmed" else
        "a short run does not overfit much yet, so there is little for augmentation to "
        "fix; harder training images slow down learning at first")]
    gain = v["crop_flip"]["ten_crop_gain"]
    t = tta_threshold(n_test)
    verdict = "confirmed" if gain >= t else "not confirmed here" if gain <= -t else "depends"
    out.append(common.claim(
        "ten_crop_adds_accuracy",
        "Averaging the softmax over ten crops (4 corners + center, and mirrors) adds test "
        "accuracy over the center crop",
        f"Krizhevsky et al. 2012 (AlexNet, §4.1); {SOURCE} ('Testing: average a fixed set of "
        "crops')", verdict,
        f"crop_flip: center {v['crop_flip']['test_accuracy']:.3f}, ten-crop "
        f"{v['crop_flip']['test_ten_crop_accuracy']:.3f} ({gain:+.4f}); full-image models "
        "(image + mirror): " + ", ".join(
            f"{k} {v[k]['ten_crop_gain']:+.4f}" for k in v if k != "crop_flip")
        + f"; rule: gain ≥ {t:.4f} (0.1 % and 2 test images, the same images) confirms, "
        "≤ −that refutes, else depends",
        "" if verdict == "confirmed" else
        "crops of a 28-pixel image differ by a pixel or two, so the ten views agree; the "
        "gain grows with the crop's freedom and the model's sensitivity to it"))
    diffs = [v[k]["test_accuracy"] - v["none"]["test_accuracy"] for k in ("mixup", "cutmix")]
    verdict = common.outcome(diffs, m_test)
    out.append(common.claim(
        "mixup_cutmix_help",
        "MixUp and CutMix raise test accuracy",
        "Zhang et al. 2018 (MixUp); Yun et al. 2019 (CutMix); " + SOURCE, verdict,
        f"test accuracy minus none's ({v['none']['test_accuracy']:.3f}): mixup "
        f"{diffs[0]:+.3f}, cutmix {diffs[1]:+.3f}; rule: both > the noise margin "
        f"{m_test:.3f} confirms, one < −margin and none above refutes, else depends",
        "" if verdict == "confirmed" else
        "it depends on the budget: mixed targets regularize, and pay off in long runs "
        "that would otherwise overfit; a few epochs mostly see the harder task"))
    return out


def plot(variants: Mapping[str, Mapping[str, Any]], path: str) -> str:
    """Center vs ten-crop test accuracy per variant, and train/val accuracy per epoch."""
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    names = list(variants)
    x = np.arange(len(names))
    for i, (key, label) in enumerate((("test_accuracy", "center"),
                                      ("test_ten_crop_accuracy", "ten-crop"))):
        bars = axes[0].bar(x + (i - 0.5) * 0.38, [variants[n][key] for n in names], 0.38,
                           label=label)
        axes[0].bar_label(bars, fmt="%.3f", fontsize=6)
    axes[0].set_xticks(x, names)
    low = min(min(variants[n]["test_accuracy"], variants[n]["test_ten_crop_accuracy"])
              for n in names)
    axes[0].set_ylim(max(0.0, low - 0.1), 1.0)
    axes[0].set_ylabel("test accuracy")
    for n in names:
        h = variants[n]["history"]
        val = np.asarray([np.nan if a is None else a for a in h["val_accuracy"]], dtype=float)
        acc = np.asarray([np.nan if a is None else a for a in h["accuracy"]], dtype=float)
        line, = axes[1].plot(np.arange(1, len(val) + 1), val, "o-", ms=3, label=f"{n} val")
        axes[1].plot(np.arange(1, len(acc) + 1), acc, ":", color=line.get_color(),
                     label=f"{n} train (augmented)")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("accuracy")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    return plots.save_figure(fig, path)


if __name__ == "__main__":
    common.cli_main(run_experiment, "augmentation_tta")
