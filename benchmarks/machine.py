"""What this CPU can do, and how much of it the ``fashion_fast`` recipe's training uses.

Roofline-style accounting (CS231n "Hardware and software": FLOPs, CPU vs GPU; Williams et
al. 2009, "Roofline"): the float32 matmul rate TF reaches here (2048x2048, median of
repeats, 2n^3 FLOPs each) is the ceiling; the recipe's model costs ``2 x MACs`` FLOPs per
example forward and about 3x that forward + backward (MACs counted from the Conv2D and
Dense layers' shapes; BN, ReLU and pooling are left out), so examples/s x FLOPs/example is
the rate training achieves, and its ratio to the matmul rate says how far from the machine
the recipe runs.

Then the knobs that could move it, each a variant of the recipe's model and input
(``recipes.train.prepare`` on a ``dataset.limit`` subset) trained epoch by epoch in turns
(``fit(initial_epoch=e, epochs=e + 1)``, the order rotating, the first epoch not timed),
so every variant's epoch e is timed within seconds of the others':

* ``base``: as ``recipes.train`` runs it (batch 128; ``jit_compile="auto"``, i.e. no XLA
  on a CPU; one step per execution; float32);
* ``jit``: ``compile(jit_compile=True)`` (XLA);
* ``spe8``: ``compile(steps_per_execution=8)``; ``recipes.train`` has no field for it, so
  the model is recompiled here as ``prepare`` compiles it;
* ``batch256``, ``batch512``: ``train.batch_size`` (same learning rate; speed only);
* ``bf16``: ``train.dtype_policy=mixed_bfloat16``, when ``lscpu`` lists ``avx512_bf16`` or
  ``amx_bf16`` (AMX tiles on Sapphire Rapids and later).

Threads: ``tf.config.threading`` can be set only before TensorFlow starts, so each thread
count (1 and ``nproc``) runs ``base`` in a subprocess (skipped with ``--quick``).

Also shared by the other benchmarks: ``info()`` (the machine as JSON) and ``EpochClock``.

Command: ``python benchmarks/machine.py [--quick] [--out PATH]``; ~3 min on 2 CPU cores
(``--quick``: digits and ``fashion_fast:quick``, 512x512 matmul, only ``base`` and
``batch256``, no thread subprocesses, < 30 s). Writes JSON (default
``docs/results/machine.json``) with ``nproc``, the CPU model and the date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# isort: off
import recipes  # noqa: E402,F401 -- first: imports TensorFlow quietly
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import models  # noqa: E402
from recipes import configs, data, io, losses, optimizers, pipeline, schedules, train  # noqa: E402
# isort: on

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
NOTES = [
    "recipes.train has train.jit_compile ('auto' means no XLA on a CPU) but no "
    "steps_per_execution field; jit and spe8 recompile the same model here as "
    "recipes.train.prepare compiles it.",
    "batch256/batch512 keep the learning rate: they measure speed, not accuracy.",
]
VARIANTS = {  # name: (batch_size, jit_compile, steps_per_execution, dtype policy)
    "base": (128, "auto", 1, "float32"),
    "jit": (128, True, 1, "float32"),
    "spe8": (128, "auto", 8, "float32"),
    "batch256": (256, "auto", 1, "float32"),
    "batch512": (512, "auto", 1, "float32"),
    "bf16": (128, "auto", 1, "mixed_bfloat16"),
}


# --- shared by the benchmarks -------------------------------------------------------------


def cpu_flags() -> set[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next(x for x in f if x.startswith("flags"))
        return set(line.split(":", 1)[1].split())
    except (OSError, StopIteration):
        return set()


def info() -> dict[str, Any]:
    """The machine measured: nproc, CPU model, bf16 flags, versions and the date (UTC)."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(x.split(":", 1)[1].strip() for x in f if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {"nproc": os.cpu_count(), "sched_affinity": len(os.sched_getaffinity(0)),
            "cpu_model": model, "bf16_flags": sorted(cpu_flags() & set(BF16_FLAGS)),
            "loadavg_at_start": load, "python": platform.python_version(),
            "tensorflow": tf.__version__, "keras": keras.__version__, "date": now()}


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def command() -> str:
    """The command line that ran this process."""
    return shlex.join([os.path.basename(sys.executable), *sys.argv])


class EpochClock(keras.callbacks.Callback):
    """Wall and process-CPU seconds of every epoch, over one or several ``fit`` calls.

    ``epochs[e] = (wall, cpu)`` from ``on_epoch_begin`` to ``on_epoch_end``; ``begin[e]``
    and ``train_end`` are the raw ``(perf_counter, process_time)`` stamps, for spans that
    must include the hooks of callbacks listed after this one.
    """

    def __init__(self):
        super().__init__()
        self.begin: dict[int, tuple[float, float]] = {}
        self.epochs: dict[int, tuple[float, float]] = {}
        self.train_end: tuple[float, float] | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self.begin[epoch] = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        w, c = self.begin[epoch]
        self.epochs[epoch] = (time.perf_counter() - w, time.process_time() - c)

    def on_train_end(self, logs=None):
        self.train_end = (time.perf_counter(), time.process_time())

    def span(self, first: int) -> tuple[float, float]:
        """(wall, cpu) seconds from epoch ``first``'s begin to the end of training."""
        if self.train_end is None or first not in self.begin:
            raise ValueError(f"no span from epoch {first}: training did not get that far")
        (w0, c0), (w1, c1) = self.begin[first], self.train_end
        return w1 - w0, c1 - c0


# --- FLOPs --------------------------------------------------------------------------------


def count_macs(model: keras.Model) -> dict[str, int]:
    """Multiply-accumulates per example of each Conv2D and Dense layer, from their shapes.

    Conv2D: ``H_out * W_out * C_out * k_h * k_w * C_in / groups``; Dense: ``positions *
    in * units``. Norms, activations and pooling (a few % of the total) are left out.
    """
    out: dict[str, int] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin_per_group, cout = layer.kernel.shape
            h, w = layer.output.shape[1:3]
            out[layer.name] = int(h * w * cout * kh * kw * cin_per_group)
        elif isinstance(layer, keras.layers.Dense):
            fan_in, units = layer.kernel.shape
            positions = int(np.prod(layer.output.shape[1:-1] or [1]))
            out[layer.name] = int(positions * fan_in * units)
    return out


def matmul_gflops(n: int, repeats: int) -> dict[str, Any]:
    """Median float32 ``n x n`` matmul rate: ``2 n^3`` FLOPs per product, in GFLOP/s."""
    a = tf.random.normal((n, n), seed=0)
    b = tf.random.normal((n, n), seed=1)
    product = tf.function(lambda a, b: tf.reduce_sum(tf.linalg.matmul(a, b)))
    product(a, b).numpy()  # trace and warm up
    seconds = []
    for _ in range(repeats):
        t = time.perf_counter()
        product(a, b).numpy()
        seconds.append(time.perf_counter() - t)
    med = statistics.median(seconds)
    return {"n": n, "repeats": repeats, "median_seconds": round(med, 5),
            "gflops": round(2 * n**3 / med / 1e9, 2)}


# --- training variants --------------------------------------------------------------------


def recipe_config(quick: bool, examples: int) -> Any:
    """``fashion_fast`` (``:quick`` on digits) on an ``examples`` subset, quiet."""
    cfg = configs.get("fashion_fast:quick" if quick else "fashion_fast")
    cfg.dataset.limit = examples
    cfg.train.verbose = 0
    return cfg


def compile_like_train(p: train.Prepared, *, jit_compile: Any = "auto",
                       steps_per_execution: int = 1) -> None:
    """Recompiles ``p.model`` as ``recipes.train.prepare`` does, with two more knobs."""
    cfg = p.config
    lr = schedules.get(cfg.schedule, learning_rate=cfg.optimizer.learning_rate,
                       steps_per_epoch=p.steps_per_epoch, epochs=cfg.train.epochs)
    p.model.compile(optimizer=optimizers.get(cfg.optimizer, learning_rate=lr),
                    loss=losses.get(cfg.loss, p.splits.info.num_classes),
                    metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                    jit_compile=jit_compile, steps_per_execution=steps_per_execution)


def build_variant(cfg: Any, splits: data.Splits, batch: int, jit: Any, spe: int,
                  policy: str) -> train.Prepared:
    """The recipe's model and input under one variant's settings."""
    c = cfg.copy_and_resolve_references()
    c.train.batch_size = batch
    c.train.dtype_policy = policy  # prepare builds the network under it (logits in float32)
    p = train.prepare(c, splits=splits)
    if jit != "auto" or spe != 1:
        compile_like_train(p, jit_compile=jit, steps_per_execution=spe)
    return p


def time_variants(names: list[str], cfg: Any, splits: data.Splits, epochs: int
                  ) -> dict[str, dict[str, Any]]:
    """Trains every variant epoch by epoch in turns; returns its images/s (epochs 2..n)."""
    built = {}
    for name in names:
        built[name] = (build_variant(cfg, splits, *VARIANTS[name]), EpochClock())
    for e in range(epochs):
        shift = e % len(names)
        for name in names[shift:] + names[:shift]:
            p, clock = built[name]
            p.model.fit(p.train_ds, initial_epoch=e, epochs=e + 1, verbose=0,
                        callbacks=[clock], shuffle=False)
    n = len(splits.train)
    out = {}
    for name, (_, clock) in built.items():
        walls = [clock.epochs[e][0] for e in range(1, epochs)]
        cpus = [clock.epochs[e][1] for e in range(1, epochs)]
        batch, jit, spe, policy = VARIANTS[name]
        out[name] = {"batch_size": batch, "jit_compile": jit, "steps_per_execution": spe,
                     "dtype_policy": policy,
                     "images_per_second": round(n / statistics.median(walls), 1),
                     "cpu_seconds_per_1k_images": round(1000 * statistics.median(cpus) / n, 3),
                     "epoch_seconds": [round(w, 3) for w in walls],
                     "first_epoch_seconds": round(clock.epochs[0][0], 3)}
    base = out[names[0]]["images_per_second"]
    for v in out.values():
        v["ratio_to_base"] = round(v["images_per_second"] / base, 3)
    return out


def threads_worker(threads: int, quick: bool, examples: int, epochs: int) -> dict[str, Any]:
    """In a fresh process: ``base`` with ``threads`` intra- and inter-op threads."""
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    cfg = recipe_config(quick, examples)
    splits = train_splits(cfg)
    result = time_variants(["base"], cfg, splits, epochs)["base"]
    return {"threads": threads, **result}


def time_threads(counts: list[int], args: argparse.Namespace) -> dict[str, Any]:
    """Runs ``threads_worker`` once per thread count, each in its own subprocess.

    TF fixes its thread pools when it starts. Returns images/s per count and the ratio to
    the first count.
    """
    out: dict[str, Any] = {}
    for k in counts:
        cmd = [sys.executable, os.path.abspath(__file__), f"--worker-threads={k}",
               f"--examples={args.examples}", f"--epochs={args.epochs}"]
        proc = subprocess.run(cmd + (["--quick"] if args.quick else []), capture_output=True,
                              text=True, cwd=ROOT, timeout=600)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
        if proc.returncode or not lines:
            out[str(k)] = {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
            continue
        out[str(k)] = json.loads(lines[-1])
    rates = [v["images_per_second"] for v in out.values() if "images_per_second" in v]
    if rates:
        for v in out.values():
            if "images_per_second" in v:
                v["ratio_to_first"] = round(v["images_per_second"] / rates[0], 3)
    return out


def train_splits(cfg: Any) -> data.Splits:
    """The config's data, loaded once for every variant."""
    return data.load(cfg.dataset.name, val_size=cfg.dataset.val_size, seed=cfg.dataset.seed,
                     limit=cfg.dataset.limit)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark and writes its JSON; returns the result."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="digits, small matmul, no threads")
    p.add_argument("--out", default="docs/results/machine.json")
    p.add_argument("--examples", type=int, default=0,
                   help="training images per epoch (default 4096, quick 512)")
    p.add_argument("--epochs", type=int, default=0, help="epochs per variant (first not timed)")
    p.add_argument("--worker-threads", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.examples = args.examples or (512 if args.quick else 4096)
    args.epochs = args.epochs or (3 if args.quick else 4)
    if args.epochs < 2:
        p.error("--epochs must be >= 2 (the first epoch is not timed)")
    if args.worker_threads:
        print(json.dumps(threads_worker(args.worker_threads, args.quick, args.examples,
                                        args.epochs)), flush=True)
        return {}

    start = time.time()
    machine = info()
    matmul = matmul_gflops(512 if args.quick else 2048, 5 if args.quick else 10)
    print(f"matmul {matmul['n']}x{matmul['n']} float32: {matmul['gflops']} GFLOP/s", flush=True)

    cfg = recipe_config(args.quick, args.examples)
    splits = train_splits(cfg)
    names = ["base", "batch256"] if args.quick else list(VARIANTS)
    bf16 = {"cpu_flags": machine["bf16_flags"], "measured": bool(machine["bf16_flags"])}
    if not machine["bf16_flags"]:
        bf16["why_not"] = f"lscpu lists none of {BF16_FLAGS}"
    if args.quick or not machine["bf16_flags"]:
        names = [n for n in names if n != "bf16"]
        bf16["measured"] = False
    variants = time_variants(names, cfg, splits, args.epochs)
    for name, v in variants.items():
        print(f"{name:>9}: {v['images_per_second']:8.1f} images/s "
              f"(x{v['ratio_to_base']:.2f} of base)", flush=True)

    model = models.build(cfg.model, pipeline.output_shape(cfg, splits.info.input_shape),
                         splits.info.num_classes)
    macs = count_macs(model)
    per_example = sum(macs.values())
    train_flops = 3 * 2 * per_example
    achieved = train_flops * variants["base"]["images_per_second"] / 1e9
    if args.quick:
        threads: dict[str, Any] = {"skipped": "--quick (each thread count is a subprocess)"}
    else:
        threads = time_threads(sorted({1, os.cpu_count() or 1}), args)
        for k, v in threads.items():
            print(f"threads {k}: {v.get('images_per_second', v.get('error'))} images/s",
                  flush=True)
    result = {
        "machine": machine,
        "nproc": machine["nproc"],
        "cpu_model": machine["cpu_model"],
        "date": machine["date"],
        "command": command(),
        "matmul": matmul,
        "model": {"config": "fashion_fast:quick" if args.quick else "fashion_fast",
                  "input_shape": list(model.input_shape[1:]),
                  "parameters": int(model.count_params()),
                  "macs_per_example": per_example,
                  "forward_flops_per_example": 2 * per_example,
                  "train_flops_per_example": train_flops,
                  "macs_by_layer": macs},
        "training": {"examples": len(splits.train), "epochs": args.epochs,
                     "timed_epochs": f"2..{args.epochs}", "variants": variants},
        "achieved_gflops": round(achieved, 3),
        "fraction_of_matmul": round(achieved / matmul["gflops"], 4),
        "threads": threads,
        "bf16": bf16,
        "notes": NOTES,
        "seconds": round(time.time() - start, 1),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    io.write_json(args.out, result)
    print(f"fashion_fast: {train_flops / 1e6:.1f} MFLOP per training example x "
          f"{variants['base']['images_per_second']:.0f} images/s = {achieved:.2f} GFLOP/s, "
          f"{100 * result['fraction_of_matmul']:.1f}% of matmul; written to {args.out}")
    return result


if __name__ == "__main__":
    main()
