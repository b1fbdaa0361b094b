"""What ``recipes.train.run`` costs over a bare ``model.fit`` of the same model and input.

The package's promise (CS231n "babysitting the learning process" should not slow the
learning): a recipe run adds its callbacks — the epoch-keyed data order, the lr logger,
``TerminateOnNaN`` and ``ExplosionGuard`` (both per-batch hooks), the atomic history CSV,
the per-epoch backup, the best-model checkpoint — and, when on, the monitors (update
ratios, activation statistics, first-layer images, TensorBoard). Three runs of the
``fashion_fast`` recipe on the same data (a ``dataset.limit`` subset of Fashion-MNIST,
1 000 validation and 1 000 test images; ``--quick``: ``fashion_fast:quick`` on digits):

* ``bare``: ``recipes.train.prepare`` then ``model.fit(train_ds, validation_data=val_ds)``
  with only the clock below: the same model, compile and tf.data input, no callbacks;
* ``recipe``: ``recipes.train.run`` with every monitor off (``monitor.*=0``, no
  TensorBoard);
* ``monitored``: ``recipes.train.run`` with every monitor at ``base.py``'s defaults.

A round runs the three one after the other (the order rotating every round, so none is
always first after a pause); a pair is the same round's recipe (or monitored) run and its
bare run, seconds apart. Each run's steps/second counts epochs 2..n only: from the start
of epoch 2 to the end of training (``EpochClock.span``), so building, tracing and the
first epoch are left out, and every epoch-end hook (CSV, backup, checkpoint, monitors) of
epochs 2..n is in. The results are the median over pairs of the steps/s ratio to bare
(targets: >= 0.97 for ``recipe``, >= 0.95 for ``monitored``). Epochs here have 150 steps
(19 200 images), about a third of a full Fashion-MNIST epoch (422 steps), so per-epoch
costs weigh ~3x more than in a real run; the JSON also gives each run's fixed CPU seconds
per epoch and the ratio they would give over a full 422-step epoch
(``cpu_ratio_full_epoch``). (Session 2 ran 30-step epochs: fixed costs dominated and the
ratios, 0.948 and 0.784 at load 5, measured the epoch end rather than the training.)

Command: ``python benchmarks/overhead.py [--quick] [--out PATH]``; ~12 min on 2 free CPU
cores (``--quick``: < 40 s). Writes JSON (default ``docs/results/overhead.json``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# isort: off
import recipes  # noqa: E402,F401 -- first: imports TensorFlow quietly
from benchmarks import machine  # noqa: E402
from recipes import configs, data, io, pipeline, train  # noqa: E402
# isort: on

TARGETS = {"recipe": 0.97, "monitored": 0.95}
FULL_EPOCH_EXAMPLES = 54000  # Fashion-MNIST's training split after the 10 % validation
MONITORS_OFF = {"explosion_factor": 0.0, "update_ratio_every": 0, "activations_every": 0,
                "first_layer_every": 0, "tensorboard": False}


def config(quick: bool, examples: int, epochs: int, monitors: bool) -> Any:
    """``fashion_fast`` (``:quick``) on ``examples`` images, monitors at defaults or off."""
    cfg = configs.get("fashion_fast:quick" if quick else "fashion_fast")
    cfg.dataset.limit = examples
    cfg.train.epochs = epochs
    cfg.train.verbose = 0
    defaults = configs.get("base").monitor
    for key in MONITORS_OFF:
        cfg.monitor[key] = defaults[key] if monitors else MONITORS_OFF[key]
    return cfg


def load(cfg: Any, held_out: int) -> data.Splits:
    """The config's data once for every run, ``held_out`` validation and test images.

    Small held-out sets keep the per-epoch validation (timed, in both runs) and the
    recipe's final evaluation (not timed) short. The count goes to ``recipes.data.load``
    directly: the config's ``dataset.val_size`` field is a float, so it takes fractions only.
    """
    s = data.load(cfg.dataset.name, val_size=held_out, seed=cfg.dataset.seed,
                  limit=cfg.dataset.limit)
    test = data.Split(s.test.x[:held_out], s.test.y[:held_out])
    return data.Splits(s.train, s.val, test, s.info)


def run_bare(cfg: Any, splits: data.Splits) -> machine.EpochClock:
    """``prepare`` + ``model.fit`` with the clock as the only callback."""
    p = train.prepare(cfg, splits=splits)
    clock = machine.EpochClock()
    p.model.fit(p.train_ds, validation_data=p.val_ds, epochs=cfg.train.epochs,
                callbacks=[clock], verbose=0, shuffle=False)
    return clock


def run_recipe(cfg: Any, splits: data.Splits, workdir: str) -> machine.EpochClock:
    """``recipes.train.run`` with the clock added (``extra_callbacks``)."""
    clock = machine.EpochClock()
    train.run(cfg, workdir, splits=splits, overwrite=True, extra_callbacks=[clock])
    return clock


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark and writes its JSON; returns the result."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="digits, tiny net, < 40 s")
    p.add_argument("--out", default="docs/results/overhead.json")
    p.add_argument("--rounds", type=int, default=3, help="rounds = pairs per comparison")
    p.add_argument("--examples", type=int, default=0, help="training images (19200; quick 640)")
    p.add_argument("--epochs", type=int, default=0, help="epochs per run (3; the first untimed)")
    args = p.parse_args(argv)
    examples = args.examples or (640 if args.quick else 19200)
    epochs = args.epochs or 3
    if epochs < 2 or args.rounds < 1:
        p.error("--epochs must be >= 2 (the first is not timed) and --rounds >= 1")

    start = time.time()
    info = machine.info()
    cfgs = {"bare": config(args.quick, examples, epochs, monitors=False),
            "recipe": config(args.quick, examples, epochs, monitors=False),
            "monitored": config(args.quick, examples, epochs, monitors=True)}
    splits = load(cfgs["bare"], 100 if args.quick else 1000)
    steps = pipeline.steps_per_epoch(len(splits.train), cfgs["bare"])
    names = list(cfgs)
    runs: list[dict[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            round_runs = {}
            for name in names[r % 3:] + names[:r % 3]:
                if name == "bare":
                    clock = run_bare(cfgs[name], splits)
                else:
                    clock = run_recipe(cfgs[name], splits, os.path.join(tmp, f"{name}{r}"))
                wall, cpu = clock.span(1)
                round_runs[name] = {"steps_per_second": steps * (epochs - 1) / wall,
                                    "seconds_per_epoch": wall / (epochs - 1),
                                    "cpu_seconds_per_epoch": cpu / (epochs - 1)}
            runs.append(round_runs)
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{k} {v['steps_per_second']:.2f}" for k, v in round_runs.items())
                + " steps/s", flush=True)

    full_steps = pipeline.steps_per_epoch(FULL_EPOCH_EXAMPLES, cfgs["bare"])
    bare_cpu_per_step = statistics.median(rd["bare"]["cpu_seconds_per_epoch"] / steps
                                          for rd in runs)
    comparisons = {}
    for name in ("recipe", "monitored"):
        ratios = [rd[name]["steps_per_second"] / rd["bare"]["steps_per_second"] for rd in runs]
        cpu_ratios = [rd["bare"]["cpu_seconds_per_epoch"] / rd[name]["cpu_seconds_per_epoch"]
                      for rd in runs]
        extra_wall = statistics.median(
            rd[name]["seconds_per_epoch"] - rd["bare"]["seconds_per_epoch"] for rd in runs)
        extra_cpu = statistics.median(
            rd[name]["cpu_seconds_per_epoch"] - rd["bare"]["cpu_seconds_per_epoch"] for rd in runs)
        full_cpu = full_steps * bare_cpu_per_step  # a bare full epoch's CPU seconds
        comparisons[name] = {
            "median_ratio": round(statistics.median(ratios), 4),
            "ratios": [round(x, 4) for x in ratios],
            "median_cpu_ratio": round(statistics.median(cpu_ratios), 4),
            "cpu_ratios": [round(x, 4) for x in cpu_ratios],
            "target": TARGETS[name],
            "meets_target": statistics.median(ratios) >= TARGETS[name],
            "meets_target_cpu": statistics.median(cpu_ratios) >= TARGETS[name],
            "extra_seconds_per_epoch": round(extra_wall, 4),
            "extra_cpu_seconds_per_epoch": round(extra_cpu, 4),
            "cpu_ratio_full_epoch": round(full_cpu / (full_cpu + max(extra_cpu, 0.0)), 4),
        }
    result = {
        "machine": info,
        "date": info["date"],
        "command": machine.command(),
        "workload": {"config": "fashion_fast:quick" if args.quick else "fashion_fast",
                     "dataset": splits.info.name, "examples": len(splits.train),
                     "val_examples": len(splits.val), "batch_size": cfgs["bare"].train.batch_size,
                     "steps_per_epoch": steps, "epochs": epochs, "timed_epochs": f"2..{epochs}",
                     "timed_steps_per_run": steps * (epochs - 1), "rounds": args.rounds,
                     "full_epoch_steps": full_steps},
        "median_steps_per_second": {k: round(statistics.median(
            rd[k]["steps_per_second"] for rd in runs), 3) for k in names},
        "comparisons": comparisons,
        "recipe_ratio": comparisons["recipe"]["median_ratio"],
        "monitored_ratio": comparisons["monitored"]["median_ratio"],
        "runs": [{k: {m: round(x, 4) for m, x in v.items()} for k, v in rd.items()}
                 for rd in runs],
        "seconds": round(time.time() - start, 1),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    io.write_json(args.out, result)
    for name, c in comparisons.items():
        print(f"{name:>9} / bare: median steps/s ratio {c['median_ratio']:.3f} wall, "
              f"{c['median_cpu_ratio']:.3f} CPU (target {c['target']}); "
              f"+{c['extra_cpu_seconds_per_epoch']:.3f} CPU s/epoch, so "
              f"{c['cpu_ratio_full_epoch']:.3f} over a full {full_steps}-step epoch")
    print(f"written to {args.out}")
    return result


if __name__ == "__main__":
    main()
