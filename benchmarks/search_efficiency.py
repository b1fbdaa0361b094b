"""Coarse-to-fine with early abort vs plain random search, on the real Fashion-MNIST.

CS231n "Training Neural Networks II": search in log space, coarse to fine (a first stage of
short runs, then longer runs in the narrowed ranges), and "if the cost is ever > 3× the
original cost, break out early". The question: does that reach what a plain random search
finds, for less training?

Both searches tune ``optimizer.learning_rate`` and ``model.l2`` (log ranges, the lecture's
wide first guess) of a one-hidden-layer MLP (50 ReLU units, Adam, batch 256) on
Fashion-MNIST (54 000 train / 6 000 val, ``recipes.data.load("fashion_mnist")``):

* ``plain``: ``PLAIN`` = 16 trials x 4 epochs (64 trial-epochs), no 3× rule
  (``monitor.explosion_factor=0``: only a NaN/inf loss stops a trial, as it must);
* ``coarse_to_fine``: ``C2F`` = 16 trials x 1 epoch, then 4 trials x 4 epochs in the ranges
  narrowed around the top 4 (32 trial-epochs planned, 50 %), with ``ExplosionGuard``'s 3×
  rule.

Each runs with seeds 0, 1, 2 (the oracle's sampling seed and ``train.seed``). Reported per
seed and as means: the best val accuracy, the trial-epochs actually trained (an aborted
epoch counts the fraction of its steps that ran) and the seconds. The target: coarse-to-fine's best
within 0.5 points of plain's while spending at most 50 % of plain's epoch budget.

Command: ``python benchmarks/search_efficiency.py [--quick] [--out PATH]``; ~8 min on 2 CPU
cores (``--quick``: < 1 min, one seed, 3 000 training images, 8x3 vs 8x1,2x2). Writes JSON
(default ``docs/results/search_efficiency.json``, ``--quick``:
``docs/results/search_efficiency_quick.json``) with the command, machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# isort: off
import recipes  # noqa: E402,F401 -- first: imports TensorFlow quietly
import keras  # noqa: E402
import keras_tuner  # noqa: E402
import tensorflow as tf  # noqa: E402
from recipes import configs, data, io  # noqa: E402
from tuning import search as tuning_search  # noqa: E402
# isort: on

SPACE = "optimizer.learning_rate=log:1e-6:1e0,model.l2=log:1e-6:1e1"
PLAIN, C2F, KEEP_TOP, SEEDS = "16x4", "16x1,4x4", 4, (0, 1, 2)
QUICK = {"plain": "8x3", "c2f": "8x1,2x2", "keep_top": 2, "seeds": (0,), "limit": 3000}
TARGET_GAP, TARGET_BUDGET = 0.005, 0.5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def base_config(seed: int, limit: int) -> object:
    cfg = configs.get("fashion_mlp")
    cfg.model.hidden = (50,)
    cfg.train.batch_size = 256
    cfg.train.seed = seed
    cfg.train.verbose = 0
    cfg.dataset.limit = limit
    cfg.monitor.tensorboard = False
    return cfg


def budget(stages: str) -> int:
    return sum(s.trials * s.epochs for s in tuning_search.parse_stages(stages))


def run_one(kind: str, stages: str, seed: int, splits: data.Splits, limit: int, keep_top: int,
            workdir: str) -> dict:
    cfg = base_config(seed, limit)
    if kind == "plain":
        cfg.monitor.explosion_factor = 0.0  # no 3x rule: only NaN/inf stops a trial
    start = time.time()
    res = tuning_search.coarse_to_fine(cfg, SPACE, stages, keep_top=keep_top, workdir=workdir,
                                       seed=seed, splits=splits, verbose=1)
    seconds = time.time() - start
    done = [t for t in res.trials if t["status"] != "running"]
    best_any = max((t["val_accuracy"] or 0.0) for t in done)
    out = {
        "stages": stages,
        "epochs_budget": budget(stages),
        "epochs_spent": res.epochs_spent,
        "best_val_accuracy": res.best["val_accuracy"] if res.best else None,
        "best_val_accuracy_any_stage": best_any,
        "best_values": res.best["values"] if res.best else None,
        "trials": len(done),
        "exploded": sum(t["status"] == "exploded" for t in done),
        "seconds": round(seconds, 1),
        "stage_spaces": [s["space"] for s in res.stages],
        "edge_warnings": res.edge_warnings,
    }
    print(f"[{kind} seed {seed}] best val acc {out['best_val_accuracy']:.4f}, "
          f"{out['epochs_spent']:g}/{out['epochs_budget']} trial-epochs, "
          f"{out['exploded']} exploded, {seconds:.0f} s", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 3 000 images, < 2 min")
    parser.add_argument("--out", default=None, help="JSON path")
    parser.add_argument("--workdir", default=None, help="keep the searches here")
    args = parser.parse_args(argv)
    plain, c2f = (QUICK["plain"], QUICK["c2f"]) if args.quick else (PLAIN, C2F)
    keep_top = QUICK["keep_top"] if args.quick else KEEP_TOP
    seeds = QUICK["seeds"] if args.quick else SEEDS
    limit = QUICK["limit"] if args.quick else 0
    out_path = args.out or os.path.join(
        ROOT, "docs", "results",
        "search_efficiency_quick.json" if args.quick else "search_efficiency.json")

    start = time.time()
    splits = data.load("fashion_mnist", limit=limit)
    root = args.workdir or tempfile.mkdtemp(prefix="search_efficiency_")
    per_seed = []
    try:
        for seed in seeds:
            row = {"seed": seed}
            for kind, stages in (("plain", plain), ("coarse_to_fine", c2f)):
                wd = os.path.join(root, f"{kind}_seed{seed}")
                row[kind] = run_one(kind, stages, seed, splits, limit, keep_top, wd)
            per_seed.append(row)
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)

    def mean(kind: str, key: str) -> float:
        return statistics.fmean(r[kind][key] for r in per_seed)

    summary = {k: {"best_val_accuracy": mean(k, "best_val_accuracy"),
                   "epochs_spent": mean(k, "epochs_spent"),
                   "epochs_budget": per_seed[0][k]["epochs_budget"],
                   "seconds": mean(k, "seconds")} for k in ("plain", "coarse_to_fine")}
    gap = summary["plain"]["best_val_accuracy"] - summary["coarse_to_fine"]["best_val_accuracy"]
    fraction = summary["coarse_to_fine"]["epochs_spent"] / summary["plain"]["epochs_budget"]
    summary["accuracy_gap"] = gap
    summary["epoch_fraction"] = fraction
    summary["target"] = (f"coarse_to_fine best >= plain best - {TARGET_GAP} with <= "
                         f"{TARGET_BUDGET:.0%} of plain's epoch budget (means over seeds)")
    summary["target_met"] = bool(gap <= TARGET_GAP and fraction <= TARGET_BUDGET)
    summary["seeds_meeting_target"] = sum(
        r["plain"]["best_val_accuracy"] - r["coarse_to_fine"]["best_val_accuracy"] <= TARGET_GAP
        and r["coarse_to_fine"]["epochs_spent"] <= TARGET_BUDGET * r["plain"]["epochs_budget"]
        for r in per_seed)
    result = {
        "command": "python " + " ".join(shlex.quote(a) for a in
                                        ["benchmarks/search_efficiency.py", *(argv or
                                                                              sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "tensorflow": tf.__version__, "keras": keras.__version__,
                    "keras_tuner": keras_tuner.__version__},
        "dataset": {"name": "fashion_mnist", "source": splits.info.source,
                    "train": len(splits.train), "val": len(splits.val)},
        "model": "mlp 784-50-10, relu, he init, adam, batch 256, standardize",
        "space": SPACE,
        "plain": {"stages": plain, "explosion_factor": 0.0},
        "coarse_to_fine": {"stages": c2f, "keep_top": keep_top, "explosion_factor": 3.0},
        "seeds": list(seeds),
        "per_seed": per_seed,
        "summary": summary,
        "total_seconds": round(time.time() - start, 1),
    }
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    io.write_json(out_path, result)
    print(f"plain: best {summary['plain']['best_val_accuracy']:.4f} with "
          f"{summary['plain']['epochs_spent']:.1f}/{summary['plain']['epochs_budget']} "
          f"trial-epochs; coarse-to-fine: best "
          f"{summary['coarse_to_fine']['best_val_accuracy']:.4f} with "
          f"{summary['coarse_to_fine']['epochs_spent']:.1f} ({fraction:.0%} of plain's "
          f"budget); gap {100 * gap:+.2f} points; target met: {summary['target_met']}; "
          f"{out_path}")
    return result


if __name__ == "__main__":
    main()
