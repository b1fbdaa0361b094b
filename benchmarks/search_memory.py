"""Resident memory of a long random search, with and without the CLI's process recycling.

TensorFlow keeps every trained model's traced functions (~4.5 MB per ``model.fit`` of a new
model with Keras 3.15 / TF 2.21, plain Keras included; ``keras.backend.clear_session`` and
``gc.collect`` do not free it), so a search's RSS grows with its trials. ``python -m
tuning.search`` re-executes itself every ``--recycle_every`` trials (default 25) and
resumes, which keeps it flat. This runs the same digits search twice, ``--recycle_every=0``
and the default, and samples the search process's RSS (``/proc/PID/status``, same PID
across the re-exec) at every finished trial.

Command: ``python benchmarks/search_memory.py [--trials=100] [--out=FILE.json]``
(``--quick``: 30 trials, recycling every 10). About 4 min per search on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

LINE = re.compile(r"\((\d+) / \d+\)")


def rss_mb(pid: int) -> float:
    """The process's resident set size in MiB."""
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    return kb / 1024


def search_rss(trials: int, recycle_every: int, workdir: str) -> dict[int, float]:
    """Runs a one-epoch-per-trial digits search; returns RSS (MiB) after each trial."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "tuning.search", "--config=digits_mlp:quick",
           f"--workdir={workdir}", f"--trials={trials}", "--epochs=1",
           f"--recycle_every={recycle_every}",
           "--space=optimizer.learning_rate=log:1e-4:1e-1,model.l2=log:1e-6:1e-2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    rss: dict[int, float] = {}
    for line in proc.stdout:
        m = LINE.search(line)
        if m:
            try:
                mb = rss_mb(proc.pid)
            except (OSError, StopIteration):
                mb = 0.0
            if mb > 0:  # 0 (or no VmRSS line): the process is between exec's, not measurable
                rss[int(m.group(1))] = round(mb, 1)
    if proc.wait() != 0:
        raise RuntimeError(f"search exited with {proc.returncode}: {' '.join(cmd)}")
    return rss


def main() -> None:
    """Runs both searches and writes the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--recycle_every", type=int, default=25)
    parser.add_argument("--quick", action="store_true", help="30 trials, recycle every 10")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "results",
                                                      "search_memory.json"))
    args = parser.parse_args()
    trials, every = (30, 10) if args.quick else (args.trials, args.recycle_every)
    early = min(10, trials)

    def at(rss: dict[int, float], trial: int) -> float:  # the last sample at or before trial
        return rss[max(k for k in rss if k <= trial)]

    from recipes import io

    out: dict = {"command": " ".join(["python", "benchmarks/search_memory.py", *sys.argv[1:]]),
                 "date": datetime.date.today().isoformat(), "machine": platform.processor()
                 or platform.machine(), "nproc": os.cpu_count(), "trials": trials, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, recycle in (("no_recycling", 0), (f"recycle_every_{every}", every)):
            rss = search_rss(trials, recycle, os.path.join(tmp, name))
            out["runs"][name] = {"recycle_every": recycle, "rss_mb": rss,
                                 f"rss_at_trial_{early}": at(rss, early),
                                 f"rss_at_trial_{trials}": at(rss, trials),
                                 "growth_mb": round(at(rss, trials) - at(rss, early), 1),
                                 "peak_mb": max(rss.values())}
            print(f"{name}: RSS {at(rss, early):.0f} MiB at trial {early}, "
                  f"{at(rss, trials):.0f} MiB at trial {trials} (growth "
                  f"{at(rss, trials) - at(rss, early):+.0f} MiB, peak "
                  f"{max(rss.values()):.0f})", flush=True)
    io.write_json(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
