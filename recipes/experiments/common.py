"""What every experiment recipe shares: base configs, one training variant, claims, the CLI.

An experiment trains a handful of *variants* of one recipe (one config field changed at a
time), records each variant's numbers, and turns the lecture's claims into *verdicts
computed from those numbers* (``claim(...)``), so ``docs/lecture_claims.md`` is generated,
never typed. Every experiment module exposes::

    run_experiment(workdir: str, *, quick: bool = False, **options) -> dict
        # writes workdir/results.json (atomically) and its PNG plots; returns the dict

and its ``results.json`` holds at least ``experiment``, ``dataset``, ``quick``, ``command``,
``variants`` (name -> numbers) and ``claims`` (a list of ``claim(...)`` dicts).

``--quick`` runs on digits with tiny models in well under a minute (CI runs it); the full run
uses real Fashion-MNIST (``/usr/share/datasets/fashion-mnist``).
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import ml_collections

from recipes import cli, configs, data, io, prepare, train

VERDICTS = ("confirmed", "not confirmed here", "depends")
#: The per-epoch columns a variant keeps as its curves (``variant_record``, ``curves``).
CURVE_KEYS = ("loss", "val_loss", "accuracy", "val_accuracy")


def base_config(quick: bool, *, arch: str = "mlp") -> ml_collections.ConfigDict:
    """The shared starting point: digits (quick) or Fashion-MNIST (full), monitors off.

    Monitors are off so variants are timed alike; each experiment turns on what it measures.

    Args:
        quick: digits, 600 examples, a few epochs; else real Fashion-MNIST.
        arch: ``mlp`` (hidden 256-128 full, 64 quick) or ``convnet`` (widths 32-64 / 8-16).

    Returns:
        A complete config tree.
    """
    c = configs.get("base")
    c.dataset.name = "digits" if quick else "fashion_mnist"
    c.dataset.preprocess = "standardize"
    if quick:
        c.dataset.limit = 600
    c.model.arch = arch
    if arch == "mlp":
        c.model.hidden = (64,) if quick else (256, 128)
    else:
        c.model.widths = (8, 16) if quick else (32, 64)
        c.model.head = "flatten"
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.schedule.name = "constant"
    c.train.epochs = 4 if quick else 10
    c.train.batch_size = 64 if quick else 128
    c.train.verbose = 0
    c.monitor.explosion_factor = 0.0
    c.monitor.update_ratio_every = 0
    c.monitor.activations_every = 0
    c.monitor.first_layer_every = 0
    c.monitor.tensorboard = False
    return c


def override(cfg: ml_collections.ConfigDict, *, epochs: int | None = None,
             limit: int | None = None, min_epochs: int = 3) -> None:
    """Applies an experiment's ``epochs``/``limit`` options to ``cfg``, checking them.

    Raises:
        ValueError: ``epochs`` not an int >= ``min_epochs`` or ``limit`` not an int >= 100.
    """
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < min_epochs:
            raise ValueError(f"epochs must be an int >= {min_epochs}, got {epochs!r}")
        cfg.train.epochs = epochs
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 100:
            raise ValueError(f"limit must be an int >= 100 (training examples), got {limit!r}")
        cfg.dataset.limit = limit


def load_splits(cfg: ml_collections.ConfigDict) -> data.Splits:
    """Loads ``cfg.dataset`` once so every variant trains on the same arrays."""
    return prepare.load_splits(cfg)


def train_variant(cfg: ml_collections.ConfigDict, workdir: str, name: str, *,
                  splits: data.Splits | None = None) -> dict[str, Any]:
    """Trains one variant in ``workdir/name`` and returns its summary plus its history.

    Returns:
        ``summary.json``'s numbers with ``history`` (column -> list per epoch, as
        ``keras.callbacks.History.history``) and ``seconds`` added.
    """
    start = time.time()
    run_dir = os.path.join(workdir, name)
    summary = train.run(cfg, run_dir, splits=splits, overwrite=True)
    rows = io.read_csv(os.path.join(run_dir, "history.csv"))
    history: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            if key == "epoch":
                continue
            try:
                history.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                continue
    out = dict(summary)
    out["history"] = history
    out["seconds"] = round(time.time() - start, 2)
    return out


def epochs_to(history: Mapping[str, Sequence[float]], key: str, target: float, *,
              below: bool = True) -> int | None:
    """First epoch (1-based) where ``history[key]`` reaches ``target``; None if never.

    Args:
        history: column -> per-epoch values.
        key: e.g. ``loss`` or ``val_accuracy``.
        target: the threshold.
        below: True for "falls to <= target" (losses), False for ">= target" (accuracies).
    """
    for i, v in enumerate(history.get(key, [])):
        if math.isfinite(v) and (v <= target if below else v >= target):
            return i + 1
    return None


def finite(value: Any, default: float | None = None) -> float | None:
    """``value`` as a JSON-safe float; NaN, inf or None (diverged, missing) give ``default``.

    JSON has no NaN; a diverged run's numbers are written as null (or a caller's default,
    e.g. 0.0 for an accuracy that enters a comparison).

    Args:
        value: a number (Python, NumPy or a numeric string) or None.
        default: what a non-finite or missing value becomes.
    """
    v = float(value) if value is not None else math.nan
    return v if math.isfinite(v) else default


def finite_list(values: Iterable[Any]) -> list[float | None]:
    """Per-epoch values as floats, NaN/inf/None (a diverged run) as None (JSON null)."""
    return [finite(v) for v in values]


def curves(history: Mapping[str, Sequence[float]],
           keys: Sequence[str] = CURVE_KEYS) -> dict[str, list[float | None]]:
    """The ``keys`` columns of a history (``train_variant``'s), JSON-safe; missing ones empty."""
    return {k: finite_list(history.get(k, [])) for k in keys}


def variant_record(run: Mapping[str, Any]) -> dict[str, Any]:
    """One ``train_variant`` run's final numbers, its curves and timing, JSON-safe.

    Returns:
        ``final_loss`` and ``final_train_accuracy`` (the last epoch's, None if it diverged),
        ``best_loss`` (lowest finite training loss), ``train_accuracy``, ``val_accuracy``,
        ``test_accuracy`` (the summary's, None if not finite), ``epochs``,
        ``stopped_reason``, ``seconds`` and ``curves`` (``CURVE_KEYS`` per epoch).
    """
    c = curves(run["history"])
    losses = [x for x in c["loss"] if x is not None]
    return {"final_loss": c["loss"][-1] if c["loss"] else None,
            "best_loss": min(losses) if losses else None,
            "final_train_accuracy": c["accuracy"][-1] if c["accuracy"] else None,
            "train_accuracy": finite(run.get("train_accuracy")),
            "val_accuracy": finite(run.get("val_accuracy")),
            "test_accuracy": finite(run.get("test_accuracy")),
            "epochs": run.get("epochs"), "stopped_reason": run.get("stopped_reason"),
            "seconds": run.get("seconds"), "curves": c}


def noise_margin(accuracy: float, n: int) -> float:
    """The standard error of the difference of two accuracies near ``accuracy`` on n examples.

    sqrt(2 p (1 - p) / n) -- the binomial standard error of each accuracy, for two of them --
    and at least one example (1 / n): differences smaller than this are within the noise of
    one run.
    """
    p = min(max(float(accuracy), 0.0), 1.0)
    n = max(int(n), 1)
    return max(math.sqrt(2 * p * (1 - p) / n), 1.0 / n)


def outcome(diffs: Sequence[float], margin: float) -> str:
    """The verdict (one of ``VERDICTS``) on "A beats B" from measured differences A - B.

    Rule: every difference > ``margin`` -> confirmed; at least one < -``margin`` and none
    > ``margin`` -> not confirmed here; anything else (all within noise, mixed, or no
    differences) -> depends.

    Args:
        diffs: one difference A - B per comparison.
        margin: the noise level, e.g. ``noise_margin(...)``.
    """
    wins = [d > margin for d in diffs]
    losses = [d < -margin for d in diffs]
    if diffs and all(wins):
        return "confirmed"
    if any(losses) and not any(wins):
        return "not confirmed here"
    return "depends"

def claim(claim_id: str, text: str, source: str, verdict: str, measured: str,
          why: str = "") -> dict[str, str]:
    """One lecture claim and what this run measured about it.

    Args:
        claim_id: short stable key, e.g. ``relu_faster_than_sigmoid``.
        text: the claim, paraphrased.
        source: where it is made (lecture slide or paper).
        verdict: one of ``VERDICTS``, computed from the numbers by the caller.
        measured: the numbers behind the verdict, in one line.
        why: when the verdict is not "confirmed", the likely reason.
    """
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    return {"id": claim_id, "claim": text, "source": source, "verdict": verdict,
            "measured": measured, "why": why}


def command(module: str, quick: bool) -> str:
    """The command line that reproduces an experiment's results."""
    return f"python -m recipes.experiments.{module} --workdir=DIR" + (" --quick" if quick else "")


def machine() -> dict[str, Any]:
    """Where and when the numbers were measured: CPU model, core count, UTC date."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(x.split(":", 1)[1].strip() for x in f if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu_model": model, "nproc": os.cpu_count(),
            "date": datetime.datetime.now(datetime.timezone.utc).date().isoformat()}


def finish(workdir: str, results: dict[str, Any]) -> dict[str, Any]:
    """Adds ``machine`` (see :func:`machine`) and writes ``results.json`` atomically."""
    results.setdefault("machine", machine())
    os.makedirs(workdir, exist_ok=True)
    io.write_json(os.path.join(workdir, "results.json"), results)
    return results


def print_claims(results: Mapping[str, Any]) -> None:
    """Prints one line per claim: verdict, id and the measured numbers."""
    for c in results.get("claims", []):
        print(f"{c['verdict']:<20} {c['id']}: {c['measured']}")


def cli_main(run_experiment: Callable[..., dict[str, Any]], module: str) -> None:
    """``python -m recipes.experiments.MODULE --workdir=DIR [--quick]``, absl-style.

    Bad flags print one line and exit 2 (``recipes.cli``); the claims are printed at the end.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from absl import app, flags


    flags.DEFINE_string("workdir", None, "Directory for results.json, plots and the runs.")
    flags.DEFINE_bool("quick", False, "Digits and tiny models (under a minute, for CI).")

    def main(argv: list[str]) -> None:
        f = flags.FLAGS
        if len(argv) > 1:
            cli.fail(f"unexpected arguments {argv[1:]}; every option is a --flag=value",
                     prog=f"recipes.experiments.{module}")
        if not f.workdir:
            cli.fail("--workdir is required: the directory for results.json",
                     prog=f"recipes.experiments.{module}")
        try:
            results = run_experiment(f.workdir, quick=f.quick)
        except ValueError as e:
            cli.fail(str(e), prog=f"recipes.experiments.{module}")
        print_claims(results)
        print(f"wrote {os.path.join(f.workdir, 'results.json')}")

    app.run(main, argv=sys.argv, flags_parser=cli.parse_flags)
