"""babysit's own cost: the wall seconds of each step of a default babysit, task by task.

Before cutting the procedure's time, see where it goes. For each task this runs
``python -m recipes.babysit --config=TASK`` as a user would (through ``recipes.babysit.run``
with the recipe's defaults, quiet), and reads from its ``babysit.json`` the seconds of
every step (the sanity step's three checks summed under ``sanity``), the total wall time,
and each step's verdict (PASS/FAIL/---- per step line: what must stay identical when the
procedure is made faster). ``fashion_mlp`` runs on a ``--fashion-limit`` subset unless the
limit is 0 (the full 60 000 images).

Command: ``python benchmarks/babysit_cost.py [--tasks digits_mlp,fashion_mlp]
[--fashion-limit 0] [--quick] [--out PATH]``; about 1 min for digits and ~3 min for the
full fashion_mlp on 2 idle AMD EPYC cores (``--quick``: ``digits_mlp:quick`` with a 3-trial
search, a smoke test).

Measured (2026-12-05, 2 idle AMD EPYC cores): digits 72 s, 55 s of it the search's 30
trials; cProfile put a third of the search in full garbage collections (three a trial,
0.2 s each over the ~420 000 objects TensorFlow and Keras keep alive). With
``tuning.tuners.frozen_heap`` (``gc.freeze`` for the search) and no collection of our own
after a trial: digits 55 s (search 37 s), fashion_mlp 187 s, verdicts and test accuracy
unchanged (``tests/test_babysit.py`` compares the verdicts with this file's).
Writes JSON (default ``docs/results/babysit_cost.json``):
``{"tasks": {TASK: {"total_seconds", "steps": {name: seconds}, "verdicts": [...],
"test_accuracy"}}, "machine": {..., "loadavg_at_start"}, "command"}``. Targets (issue 18):
≤ 60 s for digits and ≤ 4 min for fashion_mlp on idle cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# isort: off
import recipes  # noqa: E402,F401 -- first: imports TensorFlow quietly
import keras  # noqa: E402
from benchmarks import machine  # noqa: E402
from recipes import babysit, configs, io  # noqa: E402
# isort: on

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = {"digits_mlp": 60.0, "fashion_mlp": 240.0}
#: The step lines of one procedure step (the sanity step prints three).
STEP_OF = {"checks before training": "checks", "initial loss": "sanity",
           "regularization raises loss": "sanity", "input independent baseline": "sanity",
           "overfit small": "overfit", "learning-rate range": "lr_range", "search": "search",
           "train": "train", "diagnosis": "diagnose", "repair": "repair", "report": "report"}


def run_task(task: str, fashion_limit: int, quick: bool = False) -> dict:
    """One default babysit of ``task``: its steps' seconds, verdicts and test accuracy."""
    cfg = configs.get(task)
    cfg.train.verbose = 0
    if quick:  # a smoke test of this script, not a measurement
        cfg.search.stages = "3x1"
    if task.startswith("fashion") and fashion_limit:
        cfg.dataset.limit = fashion_limit
    tmp = tempfile.mkdtemp(prefix=f"babysit-cost-{task.replace(':', '_')}-")
    keras.utils.set_random_seed(int(cfg.train.seed))
    start = time.time()
    try:
        result = babysit.run(cfg, os.path.join(tmp, "run"), echo=lambda line: None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = time.time() - start
    steps: dict[str, float] = {}
    verdicts = []
    for s in result["steps"]:
        name = STEP_OF.get(s["name"], s["name"])
        steps[name] = round(steps.get(name, 0.0) + float(s.get("seconds", 0.0)), 1)
        verdicts.append(f"{s['name']}: {({True: 'PASS', False: 'FAIL'}).get(s['passed'], '----')}")
    base = task.split(":")[0]
    return {"total_seconds": round(total, 1), "steps": steps, "verdicts": verdicts,
            "test_accuracy": result.get("final", {}).get("test_accuracy"),
            "target_seconds": TARGETS.get(base),
            "meets": total <= TARGETS[base] if base in TARGETS else None,
            "fashion_limit": fashion_limit if task.startswith("fashion") else None}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="digits_mlp,fashion_mlp")
    ap.add_argument("--fashion-limit", type=int, default=0,
                    help="train images of Fashion-MNIST (0: all 60 000)")
    ap.add_argument("--quick", action="store_true", help="digits_mlp:quick only (a test)")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "results", "babysit_cost.json"))
    args = ap.parse_args(argv)
    tasks = ["digits_mlp:quick"] if args.quick else [t for t in args.tasks.split(",") if t]
    out = {"command": machine.command(), "machine": machine.info(), "quick": args.quick,
           "tasks": {}}
    for task in tasks:
        out["tasks"][task] = run_task(task, args.fashion_limit, args.quick)
        row = out["tasks"][task]
        print(f"{task}: {row['total_seconds']:.0f} s "
              + ", ".join(f"{k} {v:.0f} s" for k, v in row["steps"].items()), flush=True)
    io.write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
