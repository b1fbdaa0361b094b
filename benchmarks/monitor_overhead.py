"""What the babysitting monitors cost: epoch time with them vs plain ``model.fit``.

Trains the same model (the lecture's 2-layer net, 784-256-10, Adam) on the same tf.data
input (Fashion-MNIST from ``recipes.data.load`` when it is on disk, else random images of
its shape). Each round builds one model per configuration, all re-initialized from the
round's seed, and trains them epoch by epoch in turns (``fit(initial_epoch=e,
epochs=e + 1)``, the order rotating): on a shared machine other jobs slow whole stretches
of seconds by ~1.7x, and per-run alternation left a do-nothing callback anywhere between
0.8x and 1.6x, so a pair is the same epoch of the same round, seconds apart. An epoch is
timed (wall clock and process CPU time) from ``on_epoch_begin`` to the end of the last
monitor's ``on_epoch_end``; the first (tracing) is not timed. The result is the median over
pairs of monitored / plain epoch time. Also reported: the CPU-time ratio (less sensitive to
other jobs) and the mean time spent inside each monitor's hooks per epoch, timed directly,
as a fraction of the median plain epoch.

Per-epoch ``fit`` calls slightly overcharge two monitors: ``UpdateRatioMonitor`` also
samples each ``fit``'s first step, and ``ExplosionGuard`` copies the weights at each
``fit``'s first epoch.

Configurations: ``plain`` (no callback), ``all`` (every monitor at the default frequency
below), and without ``--quick`` each monitor alone (``gradients``: ``GradientNormMonitor``,
one forward and backward pass over the probe batch per epoch, plus its trace in the
untimed first epoch), and ``batch_end_noop`` (a callback that
only overrides ``on_train_batch_end``: the price of losing Keras's asynchronous batch-end
dispatch, which ``ExplosionGuard`` pays).

Command: ``python benchmarks/monitor_overhead.py [--quick] [--out PATH]``; ~11 min on 2 CPU
cores (``--quick``: < 60 s, plain vs all, 3 rounds on 10k images). Writes JSON (default
``docs/results/monitor_overhead.json``) and prints the median ratio.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import models  # noqa: E402
from recipes import io, monitors  # noqa: E402

#: The frequencies proposed for ``recipes/configs/base.py`` (``monitor.*``).
DEFAULTS = {
    "explosion_factor": 3.0,
    "update_ratio_every": 100,  # steps
    "activations_every": 1,  # epochs, on a fixed probe batch of PROBE examples
    "gradient_norms_every": 1,  # epochs, per-layer gradient norms on the same probe (x, y)
    "first_layer_every": 5,  # epochs
    "tensorboard": True,
}
PROBE = 256


class EpochTimer(keras.callbacks.Callback):
    """Wall and process-CPU seconds per epoch, over several ``fit`` calls; put it last."""

    def __init__(self):
        super().__init__()
        self.wall: dict[int, float] = {}
        self.cpu: dict[int, float] = {}

    def on_epoch_begin(self, epoch, logs=None):
        self._t, self._c = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.wall[epoch] = time.perf_counter() - self._t
        self.cpu[epoch] = time.process_time() - self._c


class BatchEndNoop(keras.callbacks.Callback):
    """Does nothing but override ``on_train_batch_end`` (turns off async dispatch)."""

    def on_train_batch_end(self, batch, logs=None):
        pass


HOOKS = ("on_train_begin", "on_epoch_begin", "on_train_batch_begin", "on_train_batch_end",
         "on_epoch_end", "on_train_end")


class HookClock(keras.callbacks.Callback):
    """Seconds spent inside other callbacks' hooks, per epoch and callback; put it first.

    ``spent[epoch][callback class]``; hooks outside epochs (train begin/end) go to
    ``spent["setup"]``.
    """

    def __init__(self):
        super().__init__()
        self.spent: dict = {"setup": {}}
        self.current: int | str = "setup"

    def on_train_begin(self, logs=None):
        self.current = "setup"

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch
        self.spent[epoch] = {}

    def on_train_end(self, logs=None):
        self.current = "setup"

    def wrap(self, callbacks: list) -> None:
        """Wraps each hook a callback overrides with a timer.

        Only overridden hooks are wrapped, so Keras's choice of async batch-end dispatch
        (it checks which hooks are defaults) is unchanged.
        """
        for cb in callbacks:
            name = type(cb).__name__
            for hook in HOOKS:
                method = getattr(cb, hook)
                if getattr(method, "_is_default", False):
                    continue

                def timed(*args, _method=method, _name=name, **kwargs):
                    t = time.perf_counter()
                    try:
                        return _method(*args, **kwargs)
                    finally:
                        bucket = self.spent[self.current]
                        bucket[_name] = bucket.get(_name, 0.0) + time.perf_counter() - t

                setattr(cb, hook, timed)


def load_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """Returns ``n`` Fashion-MNIST training images in [0, 1], one-hot labels, and the source."""
    try:
        from recipes import data

        splits = data.load("fashion_mnist", limit=n, val_size=0.1, seed=seed)
        x, y, source = splits.train.x, splits.train.y, splits.info.source
    except Exception as err:  # any failure (no files, no module): synthetic data
        rng = np.random.default_rng(seed)
        x = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
        y = rng.integers(0, 10, size=n)
        source = f"synthetic ({type(err).__name__}: {err})"
    return x.astype("float32") / 255.0, keras.utils.to_categorical(y, 10), source


def build_model(seed: int) -> keras.Model:
    """The 2-layer net 784-256-10 (``models.build``), compiled like ``recipes.train``."""
    keras.utils.set_random_seed(seed)
    model = models.build({"arch": "mlp", "hidden": (256,)}, (28, 28, 1), 10)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    return model


def make_callbacks(name: str, probe: tuple[np.ndarray, np.ndarray], workdir: str) -> list:
    """The callbacks of configuration ``name``; ``probe`` is the fixed ``(x, y)`` batch."""
    off = dict(DEFAULTS, explosion_factor=3.0, update_ratio_every=0, activations_every=0,
               first_layer_every=0, gradient_norms_every=0)
    given = {"probe_x": probe[0], "probe_y": probe[1], "workdir": workdir}
    if name == "plain":
        return []
    if name == "batch_end_noop":
        return [BatchEndNoop()]
    if name == "all":
        return monitors.callbacks(DEFAULTS, **given)
    if name == "guard":
        return monitors.callbacks(off)
    one = {"ratio": "update_ratio_every", "activations": "activations_every",
           "first_layer": "first_layer_every", "gradients": "gradient_norms_every"}[name]
    cbs = monitors.callbacks(dict(off, **{one: DEFAULTS[one]}), **given)
    return cbs[1:]  # without the guard


def run_round(names: list[str], ds: tf.data.Dataset, probe: tuple[np.ndarray, np.ndarray],
              epochs: int, seed: int, workdir: str) -> dict[str, dict]:
    """One round: a fresh model per configuration, all from ``seed``, trained epoch by epoch.

    The configurations take turns every epoch (``fit(initial_epoch=e, epochs=e + 1)``, the
    order rotating), so each epoch of a monitored model is timed within seconds of the same
    epoch of the plain one. Each callback object lives for the whole round.
    """
    state = {}
    for name in names:
        clock, timer = HookClock(), EpochTimer()
        cbs = make_callbacks(name, probe, os.path.join(workdir, name))
        clock.wrap(cbs)
        state[name] = (build_model(seed), [clock, *cbs, timer], clock, timer)
    for e in range(epochs):
        shift = (e + seed) % len(names)
        for name in names[shift:] + names[:shift]:
            model, cbs, _, _ = state[name]
            model.fit(ds, initial_epoch=e, epochs=e + 1, verbose=0, callbacks=cbs)
    return {name: {"wall": [timer.wall[e] for e in range(epochs)],
                   "cpu": [timer.cpu[e] for e in range(epochs)],
                   "hooks": [clock.spent[e] for e in range(epochs)]}
            for name, (_, _, clock, timer) in state.items()}


def machine() -> dict:
    """nproc, CPU model and versions of the machine measured."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"nproc": os.cpu_count(), "sched_affinity": len(os.sched_getaffinity(0)),
            "cpu_model": model, "python": platform.python_version(),
            "tensorflow": tf.__version__, "keras": keras.__version__}


def main(argv: list[str] | None = None) -> dict:
    """Runs the benchmark and writes its JSON; returns the result."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="plain vs all, 3 rounds, < 60 s")
    p.add_argument("--out", default="docs/results/monitor_overhead.json")
    p.add_argument("--rounds", type=int, default=0, help="rounds (default 3 quick, 8 full)")
    p.add_argument("--examples", type=int, default=0, help="training images (default 20000)")
    p.add_argument("--epochs", type=int, default=6, help="epochs per run (first not timed)")
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 8)
    n = args.examples or (10000 if args.quick else 20000)
    names = ["plain", "all"]
    if not args.quick:
        names += ["guard", "batch_end_noop", "ratio", "activations", "first_layer",
                  "gradients"]

    start = time.time()
    x, y, source = load_data(n)
    ds = (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0)
          .batch(args.batch_size).prefetch(tf.data.AUTOTUNE))
    probe = (x[:PROBE], y[:PROBE])  # one-hot labels, as the model's loss takes them
    rounds_data = []
    with tempfile.TemporaryDirectory() as workdir:
        for r in range(rounds):
            rounds_data.append(run_round(names, ds, probe, args.epochs, seed=r,
                                         workdir=os.path.join(workdir, str(r))))
            timed = slice(1, None)  # the first epoch traces the train step
            print(f"round {r + 1}/{rounds}: " + ", ".join(
                f"{k} {statistics.median(v['wall'][timed]):.3f}"
                for k, v in rounds_data[-1].items()) + " s/epoch (median wall)", flush=True)

    # One pair = the same epoch of the same round, monitored vs plain (the first not timed).
    pairs = [(rd, e) for rd in rounds_data for e in range(1, args.epochs)]

    def ratios(name: str, key: str) -> list[float]:
        return [rd[name][key][e] / rd["plain"][key][e] for rd, e in pairs]

    plain_epoch = statistics.median(rd["plain"]["wall"][e] for rd, e in pairs)

    def hooks_fraction(name: str, cb: str | None = None) -> float:
        # Mean, not median: it amortizes work done every few epochs (first-layer images).
        return statistics.mean((sum(rd[name]["hooks"][e].values()) if cb is None
                                else rd[name]["hooks"][e].get(cb, 0.0)) for rd, e in pairs
                               ) / plain_epoch

    summary = {}
    for name in names:
        wall, cpu = ratios(name, "wall"), ratios(name, "cpu")
        callbacks_seen = sorted(set().union(*(rd[name]["hooks"][e] for rd, e in pairs)))
        summary[name] = {
            "median_ratio_wall": round(statistics.median(wall), 4),
            "median_ratio_cpu": round(statistics.median(cpu), 4),
            "round_median_ratios_wall": [
                round(statistics.median(wall[i:i + args.epochs - 1]), 4)
                for i in range(0, len(wall), args.epochs - 1)],
            "hooks_fraction": round(hooks_fraction(name), 5),
            "hooks_fraction_by_callback": {
                cb: round(hooks_fraction(name, cb), 5) for cb in callbacks_seen},
            "median_wall_per_epoch": round(statistics.median(
                rd[name]["wall"][e] for rd, e in pairs), 4),
        }
    steps = -(-len(x) // args.batch_size)
    result = {
        "machine": machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([os.path.basename(sys.executable), *sys.argv]),
        "workload": {"model": "mlp 784-256-10 (models.build), Adam 1e-3", "data": source,
                     "examples": len(x), "batch_size": args.batch_size,
                     "steps_per_epoch": steps, "epochs_per_round": args.epochs,
                     "timed_epochs": f"2..{args.epochs}", "rounds": rounds,
                     "pairs": len(pairs)},
        "defaults": dict(DEFAULTS, activations_probe=PROBE),
        "median_ratio": summary["all"]["median_ratio_wall"],
        "median_ratio_cpu": summary["all"]["median_ratio_cpu"],
        "configs": summary,
        "pairs": [{"round": r + 1, "epoch": e + 1,
                   **{k: {"wall": round(rd[k]["wall"][e], 4), "cpu": round(rd[k]["cpu"][e], 4),
                          "hooks": round(sum(rd[k]["hooks"][e].values()), 5)}
                      for k in names}}
                  for r, rd in enumerate(rounds_data) for e in range(args.epochs)],
        "seconds": round(time.time() - start, 1),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    io.write_json(args.out, result)
    for name in names[1:]:
        s = summary[name]
        print(f"{name:>15}: median ratio {s['median_ratio_wall']:.3f} wall, "
              f"{s['median_ratio_cpu']:.3f} cpu; in its hooks "
              f"{100 * s['hooks_fraction']:.2f}% of a plain epoch (mean)")
    print(f"median ratio (all monitors / plain, {len(pairs)} epoch pairs): "
          f"{result['median_ratio']:.3f} (cpu {result['median_ratio_cpu']:.3f}); "
          f"written to {args.out}")
    return result


if __name__ == "__main__":
    main()
