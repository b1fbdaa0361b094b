"""No regrets: babysit end to end vs the recipe's defaults and vs KerasTuner's RandomSearch.

The question a user asks before handing a run to babysit: does the whole procedure (checks,
lr range, coarse-to-fine search, training with the best epoch kept, diagnosis, repairs)
end at least as well as (a) training the recipe's defaults once, and (b) KerasTuner's
``RandomSearch`` over the same search space given the same total training epochs?

For each task and seed (``train.seed``, ``dataset.seed`` and the search seeds):

* ``defaults``: ``recipes.train.run`` on the recipe as written (test split evaluated);
* ``babysit``: ``recipes.babysit.run`` with every step; its final, best validated model's
  test accuracy; its total epochs (lr-range runs, search trials, training, repairs) read
  from its workdir;
* ``kerastuner``: ``keras_tuner.RandomSearch`` over ``search.space`` (the recipe's learning
  rate and L2, log-uniform), each trial the recipe's full training (``train.epochs``), as
  many trials as babysit's total epochs allow (at least 2); the best trial by validation
  accuracy, retrained by KerasTuner (``get_best_models``) and evaluated on the test split.

Tasks: ``digits_mlp`` (1 293 training images), ``fashion_mlp`` on a ``--fashion-limit``
subset of Fashion-MNIST (default 10 000 training images: the full set takes ~30 min per
babysit run on 2 cores) and, with ``--slow``, ``fashion_fast`` (a small convnet, same
subset). Reported: each seed's test accuracy and wall seconds, the medians, and the seed
spread (max − min) that says how large a difference is noise.

Command: ``python benchmarks/babysit_value.py [--tasks digits_mlp,fashion_mlp] [--seeds 0,1,2]
[--slow] [--out PATH]``; ~25 min on 2 CPU cores for the default two tasks and three seeds.
Writes JSON (default ``docs/results/babysit_value.json``) with the command and the machine.
"""

from __future__ import annotations

import argparse
import os
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
from benchmarks import machine  # noqa: E402
from recipes import babysit, configs, io, prepare, train  # noqa: E402
from tuning import space as space_lib  # noqa: E402
# isort: on

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ("digits_mlp", "fashion_mlp")
SLOW_TASKS = ("fashion_fast",)


def config_for(task: str, seed: int, fashion_limit: int) -> object:
    """The recipe with every seed set, quiet, on the benchmark's data subset."""
    cfg = configs.get(task)
    cfg.train.seed = cfg.dataset.seed = cfg.search.seed = seed
    cfg.train.verbose = 0
    if task.startswith("fashion"):
        cfg.dataset.limit = fashion_limit
    return cfg


def run_defaults(cfg: object, workdir: str) -> dict:
    start = time.time()
    s = train.run(cfg, workdir)
    return {"test_accuracy": s["test_accuracy"], "seconds": round(time.time() - start, 1),
            "epochs": s["epochs"]}


def epochs_spent(workdir: str, result: dict) -> float:
    """Every epoch babysit trained: lr-range runs, search trials, training and repairs."""
    cfg = result["config"]
    total = float(cfg["babysit"]["lr_points"]) * float(cfg["babysit"]["lr_epochs"])
    trials = os.path.join(workdir, "search", "trials.csv")
    if os.path.exists(trials):
        total += sum(float(r.get("epochs_run") or 0) for r in io.read_csv(trials))
    runs = [workdir] + [r["workdir"] for r in result["repairs"] if r.get("workdir")
                        and r["round"] > 0]
    for path in runs:
        history = os.path.join(path, "history.csv")
        total += len(io.read_csv(history)) if os.path.exists(history) else 0
    return total


def run_babysit(cfg: object, workdir: str) -> dict:
    start = time.time()
    result = babysit.run(cfg, workdir, echo=lambda s: None)
    final = result["final"]
    return {"test_accuracy": final.get("test_accuracy"),
            "seconds": round(time.time() - start, 1),
            "epochs": epochs_spent(workdir, result), "verdict": result["verdict"],
            "repairs": [(r["cause"], r["change"], r["kept"]) for r in result["repairs"]]}


class _HyperModel(keras_tuner.HyperModel):
    """The recipe's network and compile, with the search space's values (KerasTuner's way)."""

    def __init__(self, cfg: object, space: dict, prepared: prepare.Prepared):
        super().__init__()
        self.cfg, self.space, self.prepared = cfg, space, prepared

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        cfg = configs.get("base")
        cfg.update(self.cfg.to_dict())
        for path, dim in self.space.items():
            value = hp.Float(path, dim.lo, dim.hi, sampling="log" if dim.log else "linear")
            branch, field = path.split(".", 1)
            cfg[branch][field] = value
        return self.prepared.fresh_model(cfg, learning_rate=cfg.optimizer.learning_rate)


def run_kerastuner(cfg: object, workdir: str, epochs_budget: float) -> dict:
    """KerasTuner RandomSearch, same space, as many full trainings as the budget allows."""
    start = time.time()
    p = prepare.prepare(cfg)
    space = space_lib.from_mapping(cfg.search.space, cfg)
    trials = max(2, int(epochs_budget // cfg.train.epochs))
    tuner = keras_tuner.RandomSearch(_HyperModel(cfg, space, p), objective="val_accuracy",
                                     max_trials=trials, seed=cfg.search.seed,
                                     directory=workdir, project_name="kt", overwrite=True)
    tuner.search(p.train_ds, validation_data=p.val_ds, epochs=cfg.train.epochs, verbose=0,
                 callbacks=train.config_callbacks(p))  # the recipe's data order, schedule
    best = tuner.get_best_models(1)[0]
    test = p.splits.test
    scores = best.evaluate(p.dataset(test.x, test.y, training=False), verbose=0,
                           return_dict=True)
    return {"test_accuracy": float(scores["accuracy"]), "trials": trials,
            "epochs": trials * cfg.train.epochs, "seconds": round(time.time() - start, 1)}


def _median(rows: list[dict], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def summarize(rows: list[dict]) -> dict:
    """Medians and seed spreads per method, and whether babysit is at least as good."""
    out = {}
    for method in ("defaults", "kerastuner", "babysit"):
        accs = [r[method]["test_accuracy"] for r in rows]
        out[method] = {"median_test_accuracy": round(float(statistics.median(accs)), 4),
                       "spread": round(max(accs) - min(accs), 4),
                       "median_seconds": _median([r[method] for r in rows], "seconds")}
    noise = max(out[m]["spread"] for m in out)
    for rival in ("defaults", "kerastuner"):
        gap = out["babysit"]["median_test_accuracy"] - out[rival]["median_test_accuracy"]
        out[f"babysit_minus_{rival}"] = round(gap, 4)
        out[f"babysit_at_least_{rival}"] = bool(gap >= -noise)
    out["seed_noise"] = round(noise, 4)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--fashion-limit", type=int, default=10000)
    ap.add_argument("--slow", action="store_true", help="add the small convnet")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "results",
                                                  "babysit_value.json"))
    args = ap.parse_args(argv)
    tasks = args.tasks.split(",") + (list(SLOW_TASKS) if args.slow else [])
    seeds = [int(s) for s in args.seeds.split(",")]
    report = {"command": "python benchmarks/babysit_value.py " + shlex.join(argv or sys.argv[1:]),
              "machine": machine.info(), "keras_tuner": keras_tuner.__version__,
              "fashion_limit": args.fashion_limit, "tasks": {}}
    for task in tasks:
        rows = []
        for seed in seeds:
            tmp = tempfile.mkdtemp(prefix=f"value-{task}-{seed}-")
            try:
                row = {"seed": seed}
                row["defaults"] = run_defaults(config_for(task, seed, args.fashion_limit),
                                               os.path.join(tmp, "defaults"))
                row["babysit"] = run_babysit(config_for(task, seed, args.fashion_limit),
                                             os.path.join(tmp, "babysit"))
                row["kerastuner"] = run_kerastuner(config_for(task, seed, args.fashion_limit),
                                                   os.path.join(tmp, "kt"),
                                                   row["babysit"]["epochs"])
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            print(task, seed, {k: row[k]["test_accuracy"] for k in
                               ("defaults", "babysit", "kerastuner")}, flush=True)
            rows.append(row)
        report["tasks"][task] = {"runs": rows, "summary": summarize(rows)}
        io.write_json(args.out, report)  # after each task: a long run keeps what it measured
    return report


if __name__ == "__main__":
    main()
