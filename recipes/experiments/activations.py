"""Activation functions side by side: speed of convergence, dead and saturated units.

CS231n lecture 6, "Activation functions" (sigmoid, tanh, ReLU, Leaky ReLU, PReLU, ELU, Maxout;
"ReLU converges much faster than sigmoid/tanh in practice (e.g. 6x)", Krizhevsky et al. 2012;
"never use sigmoid"; "people like to initialize ReLU neurons with slightly positive biases ...
as much as 10-20 % of the network can be dead"; leaky ReLU / ELU / maxout "will not die").

One 4-hidden-layer MLP, trained with SGD + momentum at one fixed learning rate, once per
activation (GELU as the modern default). The ReLU family starts from He init, sigmoid and tanh
from the lecture's Xavier (``randn / sqrt(fan_in)``), and every variant records its init. Per
variant: the training loss per epoch, the epoch it first reaches a *target loss* (the loss the
ReLU run has at a third of the epochs), final val/test accuracy, and the dead and saturated
fractions of the hidden units at the end (``models.inspect.activation_stats`` on a fixed
probe batch of validation images). The claims' verdicts are pure functions of those numbers
(``speedup_verdict``, ``worst_verdict``, ``dead_band_verdict``, ``no_dead_verdict``).

Command: ``python -m recipes.experiments.activations --workdir=DIR [--quick]``
(``--quick``: digits, 4x32 units, 6 epochs, ~15 s on 2 CPU cores, 20-45 s with other jobs
running; full: a stratified 15,000-image subset of Fashion-MNIST, 4x256 units, 15 epochs,
about 3-4 minutes on 2 free CPU cores and 5-6 with other jobs running, estimated from timed
3,000-image epochs (~0.5 s for ReLU, about twice that for maxout's doubled layers, measured
under a load of 4) scaled up). Writes ``results.json`` and ``activations.png``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import keras
import ml_collections
import numpy as np

from models import activations as activations_lib
from models import inspect
from recipes import plots, preprocessing
from recipes.experiments import common

NAME = "activations"
ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu", "maxout", "gelu")
SATURATING = activations_lib.SATURATING  # started from Xavier; the others from He
DEAD_BAND = (0.10, 0.20)  # the lecture's "10-20 % of the network can be dead"
DEAD_NEAR = (0.05, 0.30)  # what still counts as "near" that band
NO_DEAD_TOL = 0.02  # "does not die": at most 2 % of the units dead
SPEEDUP = 2.0  # "much faster": at least twice as fast to the target loss
ACC_TIE = 0.005  # accuracies this close count as a tie
PROBE = 512  # validation images in the probe batch


def config(quick: bool) -> ml_collections.ConfigDict:
    """The shared recipe: a 4-hidden-layer MLP, SGD + momentum at one fixed learning rate."""
    c = common.base_config(quick)
    c.model.hidden = (32,) * 4 if quick else (256,) * 4
    c.optimizer.name = "momentum"
    c.optimizer.momentum = 0.9
    c.optimizer.learning_rate = 0.03 if quick else 0.02
    c.train.epochs = 6 if quick else 15
    if not quick:
        c.dataset.limit = 15000
    return c


def init_for(activation: str) -> str:
    """He init for the ReLU family and maxout, the lecture's Xavier for sigmoid and tanh."""
    return "xavier" if activation in SATURATING else "he"


def run_experiment(workdir: str, *, quick: bool = False, epochs: int | None = None,
                   limit: int | None = None) -> dict[str, Any]:
    """Trains one MLP per activation and judges the lecture's claims.

    Args:
        workdir: where each variant's run, ``results.json`` and ``activations.png`` go.
        quick: digits and a tiny MLP (CI); else a Fashion-MNIST subset.
        epochs: override the number of epochs (>= 3, so a third of them is an epoch).
        limit: override the number of training examples (>= 100).

    Returns:
        The results dict (also written to ``workdir/results.json``).
    """
    cfg = config(quick)
    common.override(cfg, epochs=epochs, limit=limit, min_epochs=3)
    splits = common.load_splits(cfg)
    n_epochs = cfg.train.epochs
    variants: dict[str, dict[str, Any]] = {}
    for act in ACTIVATIONS:
        c = cfg.copy_and_resolve_references()
        c.model.activation = act
        c.model.init = init_for(act)
        run = common.train_variant(c, workdir, act, splits=splits)
        probe = preprocessing.Preprocessor.load(os.path.join(workdir, act)).transform(
            splits.val.x[:PROBE])
        model = keras.saving.load_model(os.path.join(workdir, act, "model.keras"))
        variants[act] = {"activation": act, "init": c.model.init, **common.variant_record(run),
                         **unit_stats(model, probe, act)}
        keras.backend.clear_session(free_memory=False)

    # The target: the loss the ReLU run has after a third of the epochs.
    k = math.ceil(n_epochs / 3)
    target = variants["relu"]["curves"]["loss"][k - 1]
    for v in variants.values():
        v["epochs_to_target"] = common.epochs_to(
            {"loss": [x if x is not None else math.inf for x in v["curves"]["loss"]]},
            "loss", target) if target is not None else None
    results = {
        "experiment": NAME, "dataset": cfg.dataset.name, "source": splits.info.source,
        "quick": quick, "command": common.command(NAME, quick),
        "setup": {"epochs": n_epochs, "target_loss": target, "target_from": f"relu, epoch {k}",
                  "num_train": len(splits.train),
                  "init": {a: init_for(a) for a in ACTIVATIONS},
                  "config": cfg.to_dict()},
        "variants": variants,
    }
    results["claims"] = claims(variants, n_epochs)
    results["plots"] = [os.path.basename(plot(results, os.path.join(workdir, f"{NAME}.png")))]
    return common.finish(workdir, json.loads(json.dumps(results)))


def unit_stats(model: keras.Model, probe: np.ndarray, act: str) -> dict[str, Any]:
    """Dead and saturated fractions of the hidden units on the probe batch, per layer.

    Dead: never positive on any probe image (``inspect``'s rule for the ReLU family). Maxout
    has no flat side, so ``inspect`` counts none of its units; here the same "never positive"
    rule is applied to its outputs, so the "maxout doesn't die" claim is measured too.
    """
    stats = inspect.activation_stats(model, probe)
    if act == "maxout":
        layers = inspect.activation_layers(model)
        outs = keras.Model(model.inputs[0], [layer.output for layer in layers])(probe)
        for record, out in zip(stats, outs if isinstance(outs, list | tuple) else [outs]):
            a = keras.ops.convert_to_numpy(out)
            record["dead"] = float(np.mean(np.all(a.reshape(-1, a.shape[-1]) <= 0, axis=0)))
    units = np.array([r["shape"][-1] for r in stats], dtype=float)
    return {
        "probe_examples": int(len(probe)),
        "dead": float(np.average([r["dead"] for r in stats], weights=units)),
        "saturated": float(np.mean([r["saturated"] for r in stats])),
        "layers": [{key: r[key] for key in ("name", "mean", "std", "dead", "saturated")}
                   for r in stats],
    }


def speedup_verdict(reference: int | None, others: Mapping[str, int | None], max_epochs: int,
                    factor: float = SPEEDUP) -> tuple[str, dict[str, float]]:
    """Is ``reference`` at least ``factor`` times faster to the target than every other run?

    Args:
        reference: epochs the fast run needed (None: it never got there).
        others: name -> epochs (None: never within ``max_epochs``; counted as
            ``max_epochs + 1``, so the ratio is a lower bound).
        max_epochs: the epochs every run had.
        factor: how many times faster counts as "much faster".

    Returns:
        ``(verdict, ratios)``: confirmed if every ratio (other / reference) >= factor, not
        confirmed if any ratio <= 1 (as fast or faster) or the reference never got there,
        depends otherwise (faster, but not by ``factor``).
    """
    if reference is None:
        return "not confirmed here", {}
    ratios = {n: (e if e is not None else max_epochs + 1) / reference for n, e in others.items()}
    if all(r >= factor for r in ratios.values()):
        return "confirmed", ratios
    if any(r <= 1 for r in ratios.values()):
        return "not confirmed here", ratios
    return "depends", ratios


def worst_verdict(name: str, final_loss: Mapping[str, float | None],
                  accuracy: Mapping[str, float | None], tol: float = ACC_TIE) -> str:
    """Is ``name`` the worst run: the highest final loss and the lowest accuracy?

    A missing (diverged) loss counts as +inf, a missing accuracy as 0. Accuracies within
    ``tol`` of the lowest count as lowest. Confirmed if both hold, depends if one does, not
    confirmed if neither.
    """
    def loss(n: str) -> float:
        v = final_loss.get(n)
        return math.inf if v is None else v

    def acc(n: str) -> float:
        v = accuracy.get(n)
        return 0.0 if v is None else v

    rest = [n for n in final_loss if n != name]
    worst_loss = all(loss(name) >= loss(n) for n in rest)
    worst_acc = all(acc(name) <= acc(n) + tol for n in rest)
    return {2: "confirmed", 1: "depends", 0: "not confirmed here"}[worst_loss + worst_acc]


def dead_band_verdict(dead: float, near: tuple[float, float] = DEAD_NEAR) -> str:
    """Confirmed if the dead fraction is in or near the lecture's 10-20 % band, else depends.

    "Can be dead" is a possibility, not a law: how many die depends on the learning rate and
    the init, so a fraction outside the band is "depends", never a refutation.
    """
    return "confirmed" if near[0] <= dead <= near[1] else "depends"


def no_dead_verdict(relu_dead: float, others: Mapping[str, float],
                    tol: float = NO_DEAD_TOL) -> str:
    """Do the leaky/ELU/maxout units stay alive (dead fraction <= tol) where ReLUs die?

    Confirmed if every other fraction is <= ``tol`` and ReLU's is above it; depends if all,
    ReLU included, are <= ``tol`` (nothing died, so this run cannot tell them apart); not
    confirmed if any of the others is above ``tol``.
    """
    if any(v > tol for v in others.values()):
        return "not confirmed here"
    return "confirmed" if relu_dead > tol else "depends"


def claims(variants: Mapping[str, Mapping[str, Any]], max_epochs: int) -> list[dict[str, str]]:
    """The lecture's four claims about activations, judged from the measured numbers."""
    ep = {n: v["epochs_to_target"] for n, v in variants.items()}

    def epochs(n: str) -> str:
        return "never" if ep[n] is None else str(ep[n])

    verdict, ratios = speedup_verdict(ep["relu"], {n: ep[n] for n in SATURATING}, max_epochs)
    out = [common.claim(
        "relu_faster_than_sigmoid_tanh",
        "ReLU converges much faster than sigmoid/tanh (e.g. 6x)",
        "CS231n lecture 6 'Activation functions'; Krizhevsky et al. 2012, Fig. 1",
        verdict,
        f"epochs to the target loss: relu {epochs('relu')}, sigmoid {epochs('sigmoid')}, "
        f"tanh {epochs('tanh')} of {max_epochs} ('never' counts as {max_epochs + 1}); "
        f"rule: confirmed if both are >= {SPEEDUP:g}x relu's, not if either is <= 1x",
        "" if verdict == "confirmed" else "ratios " + ", ".join(
            f"{n} {r:.1f}x" for n, r in ratios.items()) + "; tanh (zero-centred, Xavier init) "
        "can keep up with ReLU in a shallow MLP"),
    ]
    loss = {n: v["final_loss"] for n, v in variants.items()}
    acc = {n: v["val_accuracy"] for n, v in variants.items()}
    verdict = worst_verdict("sigmoid", loss, acc)
    worst = max(loss, key=lambda n: math.inf if loss[n] is None else loss[n])
    out.append(common.claim(
        "never_use_sigmoid", "Never use sigmoid: it is the slowest and worst of them",
        "CS231n lecture 6 'Activation functions' (TLDR)", verdict,
        f"sigmoid final train loss {_fmt(loss['sigmoid'])}, val accuracy "
        f"{_fmt(acc['sigmoid'])}; highest loss: {worst}; lowest val accuracy: "
        f"{min(acc, key=lambda n: acc[n] or 0.0)}; rule: confirmed if sigmoid has the highest "
        f"loss and the lowest accuracy (ties within {ACC_TIE}), depends if one of the two",
        "" if verdict == "confirmed" else "another activation diverged or did as badly"))
    dead = variants["relu"]["dead"]
    probe = variants["relu"]["probe_examples"]
    verdict = dead_band_verdict(dead)
    out.append(common.claim(
        "relu_10_20_percent_dead", "As much as 10-20 % of the ReLUs can be dead",
        "CS231n lecture 6 'Activation functions' (dead ReLU)", verdict,
        f"ReLU units never active on {probe} validation images: {dead:.1%} (per layer "
        + ", ".join(f"{r['dead']:.0%}" for r in variants["relu"]["layers"])
        + f"); rule: confirmed if in {DEAD_NEAR[0]:.0%}-{DEAD_NEAR[1]:.0%}, depends otherwise",
        "" if verdict == "confirmed" else "how many ReLUs die depends on the learning rate and "
        "the init: He init and a moderate fixed lr kill few"))
    alive = ("leaky_relu", "elu", "maxout")
    verdict = no_dead_verdict(dead, {n: variants[n]["dead"] for n in alive})
    out.append(common.claim(
        "leaky_elu_maxout_dont_die", "Leaky ReLU, ELU and maxout do not die",
        "CS231n lecture 6 'Activation functions'", verdict,
        "dead fraction: " + ", ".join(f"{n} {variants[n]['dead']:.1%}"
                                      for n in ("relu", *alive, "prelu"))
        + f"; rule: confirmed if leaky_relu/elu/maxout <= {NO_DEAD_TOL:.0%} while relu is "
        f"above, depends if relu is <= {NO_DEAD_TOL:.0%} too",
        {"confirmed": "", "depends": "no ReLU died either at this learning rate, so the run "
         "cannot show the difference", "not confirmed here": "some of their units were never "
         "positive on the probe batch"}[verdict]))
    return out


def _fmt(x: float | None) -> str:
    return "diverged" if x is None else f"{x:.4f}"


def plot(results: Mapping[str, Any], path: str) -> str:
    """Training loss and val accuracy per epoch, and dead/saturated fractions per activation."""
    plt = plots.pyplot()
    from matplotlib import ticker

    variants = results["variants"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, v in variants.items():
        loss = [np.nan if x is None else x for x in v["curves"]["loss"]]
        epochs = np.arange(1, len(loss) + 1)
        label = f"{name} ({v['init']}, target @ {v['epochs_to_target'] or 'never'})"
        axes[0].plot(epochs, loss, "o-", ms=3, label=label)
        val = [np.nan if x is None else x for x in v["curves"]["val_accuracy"]]
        axes[1].plot(np.arange(1, len(val) + 1), val, "o-", ms=3, label=name)
    target = results["setup"]["target_loss"]
    if target:
        axes[0].axhline(target, color="grey", ls="--", lw=1, label="target loss")
    axes[0].set_yscale("log")
    axes[0].set(xlabel="epoch", ylabel="training loss (log)", title="loss per epoch")
    axes[0].legend(fontsize=6)
    axes[1].set(xlabel="epoch", ylabel="val accuracy", title="validation accuracy")
    axes[1].legend(fontsize=6)
    names = list(variants)
    x = np.arange(len(names))
    axes[2].bar(x - 0.2, [variants[n]["dead"] for n in names], 0.4, label="dead")
    axes[2].bar(x + 0.2, [variants[n]["saturated"] for n in names], 0.4, label="saturated")
    axes[2].axhspan(*DEAD_BAND, color="tab:red", alpha=0.1, label="lecture: 10-20 % dead")
    axes[2].set_xticks(x, names, rotation=45, fontsize=7)
    axes[2].set(ylabel="fraction of hidden units / values", title="at the end, probe batch")
    axes[2].legend(fontsize=7)
    for ax in axes[:2]:
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # whole epochs
    return plots.save_figure(fig, path)


if __name__ == "__main__":
    common.cli_main(run_experiment, NAME)
