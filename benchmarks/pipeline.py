"""Can the input pipeline keep up? Images/s of ``recipes.pipeline.make`` alone vs training.

CS231n "Hardware and software" (keep the accelerator fed) and the tf.data performance
guide: the pipeline should produce images faster than the training step consumes them,
or the step waits for data. On a 2-core CPU the two also share the cores, so the CPU
seconds the pipeline spends per image matter as much as its rate.

The ``fashion_fast`` recipe's training input (``recipes.train.prepare``: per-image
pad-and-crop, random mirror, standardize, one-hot, batches of 128, on a ``dataset.limit``
subset of Fashion-MNIST; ``--quick``: ``fashion_fast:quick`` on digits) is measured
three ways, in rounds that alternate them (the first pass of each is a warm-up):

* ``pipeline``: one pass over ``train_ds`` with nothing consuming it (wall and process CPU
  time per image);
* ``pipeline_no_augment``: the same with the augmentation off (``augment.crop_padding=0``,
  ``augment.flip=none``), for what the augmentation itself costs;
* ``fit``: one epoch of ``model.fit`` on the same ``train_ds`` (what training consumes).

Reported: median images/s of each, ``ratio`` = pipeline / fit (> 1: the pipeline is
faster than training needs) and ``pipeline_cores_needed`` = fit's images/s x the
pipeline's CPU seconds per image (the share of a core the pipeline takes while training).

Command: ``python benchmarks/pipeline.py [--quick] [--out PATH]``; ~1 min on 2 CPU cores
(``--quick``: < 20 s). Writes JSON (default ``docs/results/pipeline.json``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# isort: off
import recipes  # noqa: E402,F401 -- first: imports TensorFlow quietly
import tensorflow as tf  # noqa: E402
from benchmarks import machine  # noqa: E402
from recipes import configs, data, io, train  # noqa: E402
# isort: on


def recipe_config(quick: bool, examples: int, augment: bool = True) -> Any:
    """``fashion_fast`` (``:quick``) on ``examples`` images, augmentation on or off."""
    cfg = configs.get("fashion_fast:quick" if quick else "fashion_fast")
    cfg.dataset.limit = examples
    cfg.train.verbose = 0
    if not augment:
        cfg.augment.crop_padding = 0
        cfg.augment.flip = "none"
    return cfg


def drain(ds: tf.data.Dataset, passes: int) -> tuple[float, float, int]:
    """Iterates ``ds`` ``passes`` times; returns (wall s, CPU s, images)."""
    t, c, n = time.perf_counter(), time.process_time(), 0
    for _ in range(passes):
        for x, _ in ds:
            n += int(x.shape[0])
    return time.perf_counter() - t, time.process_time() - c, n


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark and writes its JSON; returns the result."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="digits, tiny net, < 20 s")
    p.add_argument("--out", default="docs/results/pipeline.json")
    p.add_argument("--examples", type=int, default=0, help="training images (6400; quick 640)")
    p.add_argument("--rounds", type=int, default=0, help="timed rounds (default 4; quick 2)")
    p.add_argument("--passes", type=int, default=0,
                   help="pipeline passes per round (default 3; quick 5)")
    args = p.parse_args(argv)
    examples = args.examples or (640 if args.quick else 6400)
    rounds = args.rounds or (2 if args.quick else 4)
    passes = args.passes or (5 if args.quick else 3)

    start = time.time()
    info = machine.info()
    cfg = recipe_config(args.quick, examples)
    splits = data.load(cfg.dataset.name, val_size=cfg.dataset.val_size, seed=cfg.dataset.seed,
                       limit=cfg.dataset.limit)
    prepared = train.prepare(cfg, splits=splits)
    plain = train.prepare(recipe_config(args.quick, examples, augment=False), splits=splits)
    clock = machine.EpochClock()
    samples: dict[str, list[tuple[float, float, int]]] = {
        "pipeline": [], "pipeline_no_augment": [], "fit": []}
    for r in range(rounds + 1):  # round 0 warms up (tracing, first epoch)
        measured = {
            "pipeline": drain(prepared.train_ds, passes),
            "pipeline_no_augment": drain(plain.train_ds, passes),
        }
        prepared.model.fit(prepared.train_ds, initial_epoch=r, epochs=r + 1, verbose=0,
                           callbacks=[clock], shuffle=False)
        measured["fit"] = (*clock.epochs[r], len(splits.train))
        if r:
            for k, v in measured.items():
                samples[k].append(v)

    def rate(k: str) -> float:
        return statistics.median(n / w for w, _, n in samples[k])

    def cpu_per_image(k: str) -> float:
        return statistics.median(c / n for _, c, n in samples[k])

    rates = {k: round(rate(k), 1) for k in samples}
    result = {
        "machine": info,
        "date": info["date"],
        "command": machine.command(),
        "workload": {"config": "fashion_fast:quick" if args.quick else "fashion_fast",
                     "dataset": splits.info.name, "examples": len(splits.train),
                     "batch_size": cfg.train.batch_size,
                     "augment": {"crop_padding": cfg.augment.crop_padding,
                                 "flip": cfg.augment.flip},
                     "rounds": rounds, "pipeline_passes_per_round": passes},
        "images_per_second": rates,
        "cpu_ms_per_1k_images": {k: round(1e6 * cpu_per_image(k), 2) for k in samples},
        "ratio": round(rates["pipeline"] / rates["fit"], 2),
        "ratio_no_augment": round(rates["pipeline_no_augment"] / rates["fit"], 2),
        "pipeline_cores_needed": round(rates["fit"] * cpu_per_image("pipeline"), 4),
        "augment_cpu_fraction_of_fit": round(
            (cpu_per_image("pipeline") - cpu_per_image("pipeline_no_augment"))
            / cpu_per_image("fit"), 4),
        "seconds": round(time.time() - start, 1),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    io.write_json(args.out, result)
    print(f"pipeline {rates['pipeline']:.0f} images/s (no augmentation "
          f"{rates['pipeline_no_augment']:.0f}), fit {rates['fit']:.0f} images/s: ratio "
          f"{result['ratio']:.1f}; the pipeline needs {result['pipeline_cores_needed']:.3f} "
          f"cores while training; written to {args.out}")
    return result


if __name__ == "__main__":
    main()
