"""The Fashion-MNIST race: test accuracy against wall-clock time, newcomer Keras vs recipes.

What the lectures' practice buys on 2 CPU cores (CS231n "Training neural networks" I and
II: normalization, augmentation, schedules, label smoothing, test-time crops). Four
contestants train on the real Fashion-MNIST, one after the other in one process:

* ``a``: the newcomer's MLP of TensorFlow's "Basic classification" tutorial: /255,
  Flatten -> Dense 128 ReLU -> Dense 10, Adam defaults, ``fit`` defaults (batch 32),
  10 epochs, on all 60 000 training images;
* ``b``: the newcomer's 2-conv CNN of the Keras "Simple MNIST convnet" example: Conv 32
  -> pool -> Conv 64 -> pool -> Flatten -> Dropout 0.5 -> Dense 10, Adam defaults,
  batch 32, 10 epochs, 60 000 images;
* ``c``: ``recipes.train.run`` of the ``fashion_fast`` recipe (54 000 train / 6 000 val);
* ``d``: ``recipes.train.run`` of ``fashion_best`` (ten-crop test-time augmentation).

After every epoch a callback measures the test accuracy (10 000 images; the recipes see
them as their evaluation pipeline does, center crop and standardization included); its
own time is taken off the clock. The clock starts at ``on_train_begin`` (data loading,
preprocessing fit and model building come before, reported as ``setup_seconds``) and so
includes tracing, the recipes' per-epoch validation and their callbacks. For ``d``, the
ten-crop accuracy is one more point, after ``recipes.train.run`` has returned (its final
evaluation and model save on the clock). Reported per contestant: the curve, the final
test accuracy, and the seconds to reach 0.90, 0.925 and 0.934 (null if never).

Command: ``python benchmarks/fashion_race.py [--quick] [--only=a,b,c,d] [--out DIR]``;
~50 min on 2 free AMD EPYC cores (a ~1, b ~3, c ~10, d ~30 min). Writes
``race.json`` and ``race.png`` into ``--out`` (default ``docs/results/fashion_race/``;
``--quick``: ``docs/results/fashion_race_quick/``). ``--only`` reruns some contestants
and keeps the others' results from an existing ``race.json`` of the same mode.
``--quick``: 600 digits, tiny nets, 2 epochs each, < 60 s. ``--set=c.train.epochs=6``
(repeatable) changes a recipe contestant's config; the run records it (``overrides``).
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# isort: off
import recipes  # noqa: E402,F401 -- first: imports TensorFlow quietly
import keras  # noqa: E402
import numpy as np  # noqa: E402
from benchmarks import machine  # noqa: E402
from recipes import cli, configs, data, io, pipeline, plots, preprocessing, train  # noqa: E402
# isort: on

THRESHOLDS = (0.90, 0.925, 0.93, 0.934, 0.945)
CONTESTANTS = {
    "a": ("newcomer_mlp", "Keras tutorial MLP, Adam"),
    "b": ("newcomer_cnn", "Keras 2-conv CNN, Adam"),
    "c": ("fashion_fast", "recipe fashion_fast"),
    "d": ("fashion_best", "recipe fashion_best, ten-crop"),
}


class TestCurve(keras.callbacks.Callback):
    """Test accuracy after every epoch against the training wall clock, its own time excluded.

    Args:
        accuracy: returns the model's test accuracy (called after each epoch).
    """

    def __init__(self, accuracy: Callable[[keras.Model], float]):
        super().__init__()
        self.accuracy = accuracy
        self.points: list[dict[str, float]] = []
        self.excluded = 0.0
        self.start: float | None = None

    def elapsed(self) -> float:
        """Seconds since ``on_train_begin``, minus the time spent evaluating here."""
        return time.perf_counter() - self.start - self.excluded

    def on_train_begin(self, logs=None):
        self.start, self.excluded = time.perf_counter(), 0.0

    def on_epoch_end(self, epoch, logs=None):
        at, t = self.elapsed(), time.perf_counter()
        acc = self.accuracy(self.model)
        self.excluded += time.perf_counter() - t
        self.points.append({"epoch": epoch + 1, "seconds": round(at, 2),
                            "test_accuracy": round(float(acc), 4)})


def accuracy_on(x: Any, y: np.ndarray) -> Callable[[keras.Model], float]:
    """A test-accuracy function: ``x`` arrays or an images-only dataset, ``y`` class ids."""
    def accuracy(model: keras.Model) -> float:
        logits = model.predict(x, verbose=0, batch_size=None if hasattr(x, "map") else 512)
        return float(np.mean(np.argmax(logits, axis=-1) == y))
    return accuracy


def seconds_to(curve: list[dict[str, float]], threshold: float) -> float | None:
    """The first time the curve reaches ``threshold`` (None if never)."""
    return next((p["seconds"] for p in curve if p["test_accuracy"] >= threshold), None)


# --- the contestants ----------------------------------------------------------------------


def newcomer_mlp(input_shape: tuple[int, ...]) -> keras.Model:
    """TensorFlow's "Basic classification" tutorial model (logits out)."""
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)])


def newcomer_cnn(input_shape: tuple[int, ...], padding: str = "valid") -> keras.Model:
    """The Keras "Simple MNIST convnet" example (softmax out); ``same`` padding for 8x8."""
    conv = {"kernel_size": 3, "activation": "relu", "padding": padding}
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Conv2D(32, **conv), keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, **conv), keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(), keras.layers.Dropout(0.5),
        keras.layers.Dense(10, activation="softmax")])


def run_newcomer(letter: str, splits: data.Splits, epochs: int, quick: bool) -> dict[str, Any]:
    """Trains contestant ``a`` or ``b`` as a newcomer would: Adam and ``fit`` defaults."""
    t0 = time.perf_counter()
    keras.utils.set_random_seed(0)
    # /255 for Fashion-MNIST's uint8 (digits already are floats in [0, 1]).
    x = preprocessing.to_float(np.concatenate([splits.train.x, splits.val.x]))
    y = np.concatenate([splits.train.y, splits.val.y])
    x_test = preprocessing.to_float(splits.test.x)
    shape = splits.info.input_shape
    if letter == "a":
        model = newcomer_mlp(shape)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        model = newcomer_cnn(shape, "same" if quick else "valid")
        loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    curve = TestCurve(accuracy_on(x_test, splits.test.y))
    setup = time.perf_counter() - t0
    model.fit(x, y, epochs=epochs, verbose=0, callbacks=[curve])
    return {"epochs": epochs, "batch_size": 32, "train_examples": len(x),
            "parameters": int(model.count_params()), "curve": curve.points,
            "final_test_accuracy": curve.points[-1]["test_accuracy"],
            "setup_seconds": round(setup, 2), "eval_seconds_excluded": round(curve.excluded, 2),
            "total_seconds": round(time.perf_counter() - t0, 2)}


def parse_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["c.train.epochs=6", ...]`` -> ``{"c": {"train.epochs": 6}}``, checked on the recipe.

    Values are Python literals (``3``, ``0.5``, ``(32, 64)``, ``'global_pool'``) or plain
    strings (``global_pool``).

    Raises:
        ValueError: a letter that is no recipe contestant, or a field its config lacks.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        letter, _, rest = item.partition(".")
        path, eq, text = rest.partition("=")
        if letter not in ("c", "d") or not eq or path.count(".") != 1:
            raise ValueError(f"--set={item!r}: use LETTER.branch.field=VALUE with LETTER c or d, "
                             "e.g. --set=c.train.progressive_epochs=3")
        branch, field = path.split(".")
        cfg = configs.get(CONTESTANTS[letter][0])
        if branch not in cfg or not hasattr(cfg[branch], "keys") or field not in cfg[branch]:
            raise ValueError(f"--set={item!r}: {CONTESTANTS[letter][0]} has no field {path}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        out.setdefault(letter, {})[path] = value
    return out


def run_recipe(name: str, quick: bool, workdir: str,
               overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trains a built-in recipe with ``recipes.train.run``, the test curve added.

    ``overrides``: ``{"branch.field": value}`` set on the recipe's config (``--set``).
    """
    t0 = time.perf_counter()
    cfg = configs.get(f"{name}:quick" if quick else name)
    for path, value in (overrides or {}).items():
        branch, field = path.split(".")
        cfg[branch][field] = value
    cfg.train.verbose = 0 if quick else 2
    splits = data.load(cfg.dataset.name, val_size=cfg.dataset.val_size, seed=cfg.dataset.seed,
                       limit=cfg.dataset.limit)
    # The run fits the same preprocessor on the same images; this copy feeds the test curve.
    pre = preprocessing.fit(splits.train.x, cfg.dataset.preprocess,
                            pca_components=cfg.dataset.pca_components,
                            zca_epsilon=cfg.dataset.zca_epsilon)
    test_ds = pipeline.make(splits.test.x, splits.test.y, cfg, training=False,
                            num_classes=splits.info.num_classes, preprocessor=pre)
    curve = TestCurve(accuracy_on(test_ds.map(lambda x, _: x), splits.test.y))
    summary = train.run(cfg, os.path.join(workdir, name), splits=splits, overwrite=True,
                        extra_callbacks=[curve])
    points = list(curve.points)
    final = summary["test_accuracy"]
    if "test_tta_accuracy" in summary:
        final = summary["test_tta_accuracy"]
        points.append({"epoch": summary["epochs"], "seconds": round(curve.elapsed(), 2),
                       "test_accuracy": round(final, 4), "tta": summary["tta_mode"]})
    return {"epochs": summary["epochs"], "batch_size": cfg.train.batch_size,
            "train_examples": summary["num_train"], "parameters": summary["parameters"],
            "curve": points, "final_test_accuracy": round(final, 4),
            "center_test_accuracy": round(summary["test_accuracy"], 4),
            "config": f"{name}:quick" if quick else name,
            "command": f"python -m recipes.train --config={name} --workdir=DIR"
                       + "".join(f" --config.{k}={v!r}" for k, v in (overrides or {}).items()),
            "overrides": dict(overrides or {}),
            "setup_seconds": round(curve.start - t0, 2),
            "eval_seconds_excluded": round(curve.excluded, 2),
            "total_seconds": round(time.perf_counter() - t0, 2)}


def targets(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, read off the curves of one race (None where a contestant is absent).

    ``fast_accuracy``: ``c`` reaches 0.930 within 600 s; ``fast_vs_cnn``: ``c`` reaches
    the plain CNN's (``b``) final accuracy in at most half the CNN's time; ``best_accuracy``:
    ``d`` reaches 0.945 within 30 minutes.
    """
    out: dict[str, Any] = {}
    c, b, d = runs.get("c"), runs.get("b"), runs.get("d")
    if c is not None:
        t = seconds_to(c["curve"], 0.93)
        out["fast_accuracy"] = {"seconds_to_0.93": t, "limit_seconds": 600,
                                "met": t is not None and t <= 600}
    if c is not None and b is not None:
        cnn_final, cnn_seconds = b["final_test_accuracy"], b["final_seconds"]
        t = seconds_to(c["curve"], cnn_final)
        ratio = None if t is None else round(t / cnn_seconds, 3)
        out["fast_vs_cnn"] = {"cnn_final_accuracy": cnn_final, "cnn_seconds": cnn_seconds,
                              "fast_seconds_to_it": t, "ratio": ratio, "limit_ratio": 0.5,
                              "met": ratio is not None and ratio <= 0.5}
    if d is not None:
        t = seconds_to(d["curve"], 0.945)
        out["best_accuracy"] = {"seconds_to_0.945": t, "limit_seconds": 1800,
                                "met": t is not None and t <= 1800}
    return out


# --- output -------------------------------------------------------------------------------


def plot(runs: dict[str, dict[str, Any]], path: str, title: str) -> str:
    """Test accuracy vs wall-clock seconds, one line per contestant, the thresholds dashed."""
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for letter, r in sorted(runs.items()):
        xs = [p["seconds"] for p in r["curve"]]
        ys = [p["test_accuracy"] for p in r["curve"]]
        ax.plot(xs, ys, marker="o", markersize=3,
                label=f"{letter}: {r['label']}, {r['epochs']} ep ({r['final_test_accuracy']:.4f})")
    for i, t in enumerate(THRESHOLDS):
        ax.axhline(t, color="gray", linestyle="--", linewidth=0.8,
                   label=" / ".join(f"{x:g}" for x in THRESHOLDS) if i == 0 else None)
    ys = [p["test_accuracy"] for r in runs.values() for p in r["curve"]]
    if ys:
        ax.set_ylim(max(0.0, min(min(ys), 0.85) - 0.01), min(1.0, max(max(ys), 0.94) + 0.005))
    ax.set_xlabel("wall-clock seconds of training (test evaluation excluded)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return plots.save_figure(fig, path)


def parse_only(text: str) -> list[str]:
    """``"a,c"`` -> ``["a", "c"]``; raises ValueError on a letter that is not a contestant."""
    letters = [x.strip().lower() for x in text.split(",") if x.strip()]
    bad = [x for x in letters if x not in CONTESTANTS]
    if bad or not letters:
        raise ValueError(f"--only={text!r}: use a comma list of {', '.join(CONTESTANTS)} "
                         "(a, b: newcomer Keras; c: fashion_fast; d: fashion_best)")
    return sorted(set(letters))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the race and writes ``race.json`` and ``race.png``; returns the result."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="digits, tiny nets, 2 epochs, < 60 s")
    p.add_argument("--only", default="a,b,c,d", help="comma list of contestants to run")
    p.add_argument("--out", default="", help="output directory")
    p.add_argument("--workdir", default="", help="keep the recipes' run directories here")
    p.add_argument("--set", action="append", default=[], dest="sets",
                   help="LETTER.branch.field=VALUE: change a recipe contestant's config "
                        "(c or d; repeatable), e.g. --set=c.train.progressive_epochs=3")
    args = p.parse_args(argv)
    try:
        letters = parse_only(args.only)
        sets = parse_sets(args.sets)
    except ValueError as e:
        cli.fail(str(e), prog="fashion_race.py")
    out = args.out or os.path.join(
        ROOT, "docs", "results", "fashion_race_quick" if args.quick else "fashion_race")
    json_path = os.path.join(out, "race.json")

    start = time.time()
    info = machine.info()
    runs: dict[str, dict[str, Any]] = {}
    if os.path.exists(json_path):  # --only keeps the other contestants' earlier results
        old = io.read_json(json_path, what="race results")
        if old.get("quick") == args.quick:
            runs = {k: v for k, v in old.get("runs", {}).items() if k not in letters}
    newcomer_splits = None
    with tempfile.TemporaryDirectory() as tmp:
        for letter in letters:
            name, label = CONTESTANTS[letter]
            if sets.get(letter):
                label += " with " + ", ".join(f"{k}={v}" for k, v in sets[letter].items())
            print(f"[{letter}] {label} ...", flush=True)
            if letter in "ab":
                if newcomer_splits is None:
                    newcomer_splits = data.load("digits" if args.quick else "fashion_mnist",
                                                limit=600 if args.quick else 0)
                r = run_newcomer(letter, newcomer_splits, 2 if args.quick else 10, args.quick)
            else:
                r = run_recipe(name, args.quick, args.workdir or tmp, sets.get(letter))
            r["seconds_to"] = {f"{t:g}": seconds_to(r["curve"], t) for t in THRESHOLDS}
            r["final_seconds"] = r["curve"][-1]["seconds"]
            runs[letter] = {"name": name, "label": label, "date": machine.now(), **r}
            print(f"[{letter}] final test accuracy {r['final_test_accuracy']:.4f} after "
                  f"{r['final_seconds']:.0f} s; seconds to {r['seconds_to']}", flush=True)
            keras.backend.clear_session()

    result = {"machine": info, "date": info["date"], "command": machine.command(),
              "quick": args.quick, "dataset": "digits" if args.quick else "fashion_mnist",
              "thresholds": list(THRESHOLDS), "runs": dict(sorted(runs.items())),
              "targets": targets(runs),
              "seconds": round(time.time() - start, 1)}
    os.makedirs(out, exist_ok=True)
    io.write_json(json_path, result)
    cores = info["sched_affinity"]
    plot(result["runs"], os.path.join(out, "race.png"),
         f"{result['dataset']} on {cores} CPU core{'s' * (cores != 1)}: accuracy vs time")
    print(f"written to {json_path} and race.png")
    return result


if __name__ == "__main__":
    main()
