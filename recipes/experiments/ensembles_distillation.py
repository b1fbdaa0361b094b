"""Test-time crops, model ensembles and distillation, measured on one dataset.

CS231n lecture 7 ("Model ensembles: train multiple independent models, average their
results at test time: ~2 % extra"), AlexNet's ten-crop testing (Krizhevsky et al. 2012)
and knowledge distillation (Hinton, Vinyals & Dean 2015):

1. ``members`` convnets from independent seeds, trained with random crops and flips;
2. each one's test accuracy on the center crop and with ``ten_crop`` averaging;
3. the ensemble of the members (mean softmax), with and without ten-crop;
4. a small MLP student trained from scratch vs the same student distilled from the
   ensemble (temperature T, weight alpha on the hard labels).

Command: ``python -m recipes.experiments.ensembles_distillation --workdir=DIR [--quick]``
(``--quick``: digits, tiny models, ~1 minute; full: real Fashion-MNIST, ~15 minutes on 2
CPU cores). Writes ``results.json`` atomically.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import keras
import ml_collections
import numpy as np

from recipes import configs, data, distill, ensemble, io, preprocessing, train, tta


def member_config(quick: bool) -> ml_collections.ConfigDict:
    """A small convnet trained on random 26x26 crops (24x24 of 8x8 digits: 6x6) and flips."""
    c = configs.get("base")
    c.dataset.name = "digits" if quick else "fashion_mnist"
    c.dataset.preprocess = "standardize"
    c.augment.crop_size = 6 if quick else 26
    c.augment.flip = "horizontal"
    c.model.arch = "convnet"
    c.model.widths = (16, 32) if quick else (32, 64)
    c.model.head = "flatten"
    c.model.norm = "batch"
    c.model.dropout = 0.25
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 2e-3
    c.schedule.name = "cosine"
    c.train.epochs = 8 if quick else 8
    c.train.batch_size = 64 if quick else 128
    c.train.verbose = 0
    c.evaluate.tta = "ten_crop"
    if quick:
        c.dataset.limit = 600
    return c


def student_config(quick: bool) -> ml_collections.ConfigDict:
    """The student: a one-hidden-layer MLP on the center crop."""
    c = member_config(quick)
    c.augment.flip = "none"
    c.model.arch = "mlp"
    c.model.hidden = (32,) if quick else (64,)
    c.model.norm = "none"
    c.model.dropout = 0.0
    c.evaluate.tta = "none"
    return c


def run_experiment(workdir: str, *, quick: bool = False, members: int = 3,
                   temperature: float = 4.0, alpha: float = 0.1) -> dict[str, Any]:
    """Trains the members and students; returns every accuracy measured."""
    cfg = member_config(quick)
    splits = data.load(cfg.dataset.name, limit=cfg.dataset.limit)
    pre = preprocessing.fit(splits.train.x, cfg.dataset.preprocess)
    x_test = pre.transform(splits.test.x)  # full-size images; crops are taken from them
    results: dict[str, Any] = {"dataset": cfg.dataset.name, "source": splits.info.source,
                               "quick": quick, "members": [], "config": cfg.to_dict()}
    models = []
    for k in range(members):
        member = member_config(quick)
        member.train.seed = k
        start = time.time()
        summary = train.run(member, os.path.join(workdir, f"member_{k}"), splits=splits,
                            overwrite=True)
        models.append(keras.saving.load_model(os.path.join(workdir, f"member_{k}",
                                                           "model.keras")))
        results["members"].append({"seed": k, "test_accuracy": summary["test_accuracy"],
                                   "test_ten_crop_accuracy": summary["test_tta_accuracy"],
                                   "seconds": round(time.time() - start, 1)})
    centered = tta.crops(x_test, tta.crop_windows("center", x_test.shape[1:3],
                                                  models[0].input_shape[1:3]),
                         tuple(models[0].input_shape[1:3]))[0].numpy()
    single = ensemble.evaluate(models, centered, splits.test.y)
    results["ensemble"] = {"test_accuracy": single["accuracy"],
                           "member_accuracy": single["member_accuracy"]}
    probs = np.mean([tta.predict(m, x_test, "ten_crop") for m in models], axis=0)
    results["ensemble"]["test_ten_crop_accuracy"] = float(
        np.mean(probs.argmax(-1) == splits.test.y))

    scratch_cfg = student_config(quick)
    scratch = train.run(scratch_cfg, os.path.join(workdir, "student_scratch"), splits=splits,
                        overwrite=True)
    results["student_scratch"] = {"test_accuracy": scratch["test_accuracy"],
                                  "parameters": scratch["parameters"]}
    results["student_distilled"] = _distill(models, scratch_cfg, splits, pre, centered,
                                            temperature=temperature, alpha=alpha)
    io.write_json(os.path.join(workdir, "results.json"), results)
    return results


def _distill(teachers: list[keras.Model], cfg: ml_collections.ConfigDict,
             splits: data.Splits, pre: preprocessing.Preprocessor, x_test: np.ndarray, *,
             temperature: float, alpha: float) -> dict[str, Any]:
    """Trains a fresh student against the ensemble's softened outputs on the same data."""
    keras.utils.set_random_seed(cfg.train.seed)
    p = train.prepare(cfg, splits=splits)
    distiller = distill.Distiller(teachers, p.model, temperature=temperature, alpha=alpha)
    distiller.compile(optimizer=p.model.optimizer,
                      metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    distiller.fit(p.train_ds, epochs=cfg.train.epochs, callbacks=[p.epoch_seed], verbose=0,
                  shuffle=False)
    logits = p.model.predict(x_test, verbose=0)
    return {"test_accuracy": float(np.mean(logits.argmax(-1) == splits.test.y)),
            "temperature": temperature, "alpha": alpha}


def main(argv: list[str]) -> None:
    """Runs the experiment and prints the table."""
    from absl import flags

    from recipes import cli

    f = flags.FLAGS
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}; every option is a --flag=value")
    if not f.workdir:
        cli.fail("--workdir is required: the directory for results.json")
    if f.members < 2:
        cli.fail(f"--members must be >= 2, got {f.members}")
    try:
        r = run_experiment(f.workdir, quick=f.quick, members=f.members)
    except ValueError as e:
        cli.fail(str(e))
    for m in r["members"]:
        print(f"member seed {m['seed']}: test {m['test_accuracy']:.4f}, "
              f"ten-crop {m['test_ten_crop_accuracy']:.4f}")
    e = r["ensemble"]
    print(f"ensemble of {len(r['members'])}: test {e['test_accuracy']:.4f}, "
          f"ten-crop {e['test_ten_crop_accuracy']:.4f}")
    print(f"student from scratch {r['student_scratch']['test_accuracy']:.4f}, "
          f"distilled {r['student_distilled']['test_accuracy']:.4f}")


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("workdir", None, "Directory for results.json and the runs.")
    flags.DEFINE_bool("quick", False, "Digits and tiny models (~1 minute).")
    flags.DEFINE_integer("members", 3, "Models in the ensemble.")
    from recipes import cli

    app.run(main, argv=sys.argv, flags_parser=cli.parse_flags)
