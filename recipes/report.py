"""The run's report: ``write(workdir, context)`` -> report.md and a self-contained report.html.

CS231n "Training Neural Networks" (babysitting the learning process): the procedure's
verdicts, what went wrong and what to change, with the pictures the lecture reads — the data
as the network sees it, the loss on a log scale, train/val accuracy, the learning rate, the
update/weight ratios, activation statistics, first-layer weights and the lr range runs.

The report is built once as a list of sections (title + blocks: paragraphs, tables, code,
figures) and rendered twice: to Markdown (figures referenced relative to the workdir) and to
HTML (figures inlined as base64 ``data:`` URIs with their file in ``data-file``, CSS inline,
no external resource, every text escaped), so the HTML can be moved, mailed or opened on a
closed network. Figures come from :mod:`recipes.plots`; each has a caption saying what a
healthy one looks like.

Reading order: the headline first (the verdict, the test accuracy and which weights it
comes from, problems found and repaired, total time), then the summary (plain labels, each
number explained), findings, repairs, the search, the curves and monitors, and last the
procedure's details (lr range, input images, steps, dataset, model, how to reproduce).

The context is a plain dict; every key is optional and a missing part says "not run":

* ``title``, ``command`` (the exact command line); ``config`` (dict or ConfigDict: shown as
  JSON, and as ``--config.a.b=v`` overrides when ``config_name`` and ``base_config`` are
  given); ``dataset`` (name, source, sizes, num_classes, class_names, ...).
* ``steps``: ``[{name, passed: bool | None, verdict, advice, seconds}]`` (their seconds add
  up to the headline's total time); ``verdict``: the procedure's verdict lines.
* ``images``: ``{x: (n, H, W, C) floats as they enter the network, y: int or one-hot/soft
  labels, class_names, image_shape (for flat x)}``.
* ``history``: metric -> list, or ``history.csv`` rows; ``batch_losses``: per-step losses
  (also read from ``history["batch_losses"]``).
* ``update_ratios``: ``UpdateRatioMonitor.records`` (``[{step, ratios: {tensor: r}}]``);
  without it the history's ``update_ratio_min/median/max`` columns are drawn.
* ``activation_stats``: ``models.inspect.activation_stats`` output, a mapping label -> such
  a list, or ``ActivationMonitor.records`` (first and last epoch drawn).
* ``first_layer_png``: an existing PNG; ``lr_range``: ``{runs: [{lr, final_loss,
  classification, losses?}], recommended: [lo, hi]}``; ``lr_range_png``: a PNG used instead
  of drawing the runs; ``search``: ``{lines, stages, plots, edge_warnings?, trials?, dir?}``
  (``stages``: ``tuning``'s per-stage dicts with ``ranges``/``space``, ``trials``,
  ``epochs``, ``best``; ``plots``: PNG paths, the lr × regularization scatter first;
  ``trials``: trial rows, else read from ``trials.csv`` in ``dir``, the plots' parent or
  ``workdir/search``).
* ``findings``: ``diagnose.Finding`` objects or their dicts; ``repairs``: the repair rows
  (``round``, ``cause``, ``change``, ``kept``, ``val_accuracy_before/after``, ``workdir``);
  ``summary``: ``summary.json`` of the final model's run (``test_accuracy``,
  ``test_tta_accuracy``, ``tta_mode``, ``train/val/test_loss``, ``epochs``,
  ``restore_best``, ``best_epoch``, ...); ``final``: ``babysit.json``'s ``final`` (used
  where ``summary`` lacks a key).
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import logging
import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from recipes import io, plots

__all__ = ["write", "render_screenshot", "screenshot", "screenshot_note", "sections",
           "to_markdown", "to_html", "overrides", "find_chromium", "columns"]

logger = logging.getLogger(__name__)
NOT_RUN = "not run"
MAIN_COLUMNS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "update_ratio_median")

Block = tuple  # ("p", text) | ("pre", text) | ("details", summary, text) | ("notrun", text)
#   | ("table", header, rows, row classes or None) | ("img", path, caption)
#   | ("imgs", [(path, caption), ...]) side by side | ("headline", status, text, [(k, v)])
Section = tuple[str, str, list[Block]]  # (anchor id, title, blocks)


# -- small helpers ------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    """A cell: floats to 4 significant digits, None and NaN as an em dash, the rest ``str``."""
    if v is None:
        return "—"
    if isinstance(v, bool | str):
        return str(v)
    if isinstance(v, float | np.floating):
        return "—" if math.isnan(v) else f"{float(v):.4g}"
    if isinstance(v, Sequence | np.ndarray):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _finite(v: Any) -> bool:
    return isinstance(v, int | float | np.floating | np.integer) and not isinstance(
        v, bool) and math.isfinite(float(v))


def columns(history: Any) -> dict[str, np.ndarray]:
    """``history`` (metric -> list, or ``history.csv`` rows) as float columns, blanks NaN."""
    if not history:
        return {}
    if isinstance(history, Mapping):
        return {k: np.array([_num(v) for v in np.ravel(vals)]) for k, vals in history.items()
                if k != "batch_losses"}
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    return {k: np.array([_num(row.get(k)) for row in history]) for k in keys}


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _plain(config: Any) -> Any:
    """A ConfigDict (or anything JSON-able) as plain JSON types (tuples become lists)."""
    config = config.to_dict() if hasattr(config, "to_dict") else config
    return io.json_ready(config)


def _cli_value(v: Any) -> str:
    if isinstance(v, list | tuple):  # config fields are tuples: ml_collections parses "(a,b)"
        v = tuple(v)
    return shlex.quote(v if isinstance(v, str) else repr(v))


def overrides(config: Any, base_config: Any) -> list[str]:
    """``--config.a.b=v`` flags that turn ``base_config`` into ``config`` (changed keys only).

    Keys missing from ``base_config`` are listed too (the CLI would reject them: the
    config was not made from that recipe); keys missing from ``config`` cannot be expressed.
    """
    new, old = _flatten(_plain(config)), _flatten(_plain(base_config))
    return [f"--config.{k}={_cli_value(v)}" for k, v in new.items() if k not in old or old[k] != v]


def _figure(name: str, fn: Callable[..., str], *args: Any, caption: str = "",
            written: dict[str, str], **kwargs: Any) -> Block:
    """Runs one plotting function; a failure becomes a note in the report, not a crash."""
    try:
        path = fn(*args, **kwargs)
    except Exception as e:  # a report of a broken run must still be written
        logger.warning("report: figure %s failed: %s: %s", name, type(e).__name__, e)
        return ("notrun", f"figure {name} failed: {type(e).__name__}: {e}")
    written[name] = path
    return ("img", path, caption)


#: One sentence per figure: what it shows and what a healthy one looks like.
CAPTIONS = {
    "images": "{n} of {total} training images exactly as they enter the network (after "
    "preprocessing and augmentation), shape {shape}; values min {lo:.3g}, max {hi:.3g}, "
    "mean {mean:.3g}, std {std:.3g}; each image is rescaled to [0, 1] on its own for display. "
    "Healthy: every picture is recognisable, its label matches it, and augmentation looks "
    "plausible.",
    "loss": "Loss per epoch (train: running mean over the epoch's batches with dropout and "
    "augmentation on; validation: after the epoch) and per step, log scale. Healthy: the "
    "loss falls steeply at first and flattens; train and validation stay close.",
    "accuracy": "Train and validation accuracy per epoch. Healthy: both rise and level off "
    "with a small gap; a big gap means overfitting (more regularization), no gap at low "
    "accuracy underfitting (more capacity).",
    "lr": "Learning rate used in each epoch. Healthy: it follows the chosen schedule "
    "(warm-up, then decay); sudden drops are plateau reductions.",
    "update_ratios": "‖Δw‖/‖w‖ of one update per trainable tensor{source}, log scale. "
    "Healthy: near the 1e-3 guide, inside the green band 1e-4..1e-2; far above, lower the "
    "learning rate; far below, raise it.",
    "activations": "Mean and std of each layer's activations and each layer's histogram "
    "(% of values, log scale){when}. Healthy: stds stay well above 0 in every layer, and "
    "values neither pile up at 0 (dead ReLUs) nor at ±1 (saturated tanh/sigmoid).",
    "learning-rate range": "Final training loss of short runs, one per learning rate "
    "(log scale). Healthy: a U shape: flat where the rate is too low, a dip where the loss "
    "falls fastest (the recommended range), divergence (×) where it is too high.",
    "lr_range": "Final loss of each short run against its learning rate, coloured by "
    "classification, and each run's loss curve. Healthy: a U shape with the recommended "
    "range at the bottom of the dip and diverged runs only at the high end.",
    "search": "Every trial at its learning rate and regularization strength, coloured by "
    "validation accuracy; dashed boxes are each stage's ranges. Healthy: the best (bright) "
    "trials cluster inside the last stage's box, away from its edges.",
    "search-param": "Validation accuracy of every trial against {param}, one colour per "
    "stage. Healthy: a clear peak inside the searched range; a best value at the range's "
    "edge means the range should extend past it.",
    "first-layer weights": "First-layer weights as images (FirstLayerWeights monitor). "
    "Healthy: smooth, varied patterns; noisy ones mean too short training, a badly set "
    "learning rate or too little regularization.",
}


def _existing_png(path: Any, what: str, caption: str | None = None) -> Block:
    if path and os.path.isfile(path):
        return ("img", os.fspath(path), caption or CAPTIONS.get(what, what))
    return ("notrun", f"{NOT_RUN} (no {what} image at {path})" if path else NOT_RUN)


# -- sections -----------------------------------------------------------------------------


def _finding_dicts(ctx: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [f.to_dict() if hasattr(f, "to_dict") else dict(f)
            for f in ctx.get("findings") or []]


def _serious(f: Mapping[str, Any]) -> bool:
    """``causes.serious`` on a finding's dict: an error or warning nothing else explains."""
    return f.get("severity") in ("error", "warning") and not f.get("explained_by")


def _kept_repair(ctx: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The last kept repair that retrained (round > 0): the final model's run, or None."""
    kept = [r for r in ctx.get("repairs") or [] if r.get("kept") and (r.get("round") or 0) > 0]
    return kept[-1] if kept else None


def _duration(seconds: float) -> str:
    """``12.5 s``, ``1 min 28 s``, ``1 h 02 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, sec = divmod(int(round(seconds)), 60)
    return f"{m} min {sec:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def _weights_text(s: Mapping[str, Any]) -> str:
    """Which weights the final numbers come from (``train.restore_best``, ``best_epoch``)."""
    epochs = s.get("epochs")
    of = f" of {epochs}" if epochs else ""
    if s.get("best_epoch"):
        return (f"best validation epoch {s['best_epoch']}{of}, restored "
                "(train.restore_best)")
    if not epochs:
        return ""
    if s.get("restore_best"):
        return f"last epoch ({epochs}; no earlier epoch had a better val accuracy)"
    if "restore_best" in s:
        return f"last epoch ({epochs}; train.restore_best is off)"
    return f"last epoch ({epochs})"


def _test_text(s: Mapping[str, Any]) -> str:
    parts = []
    if _finite(s.get("test_accuracy")):
        parts.append(f"{s['test_accuracy']:.4f} single view")
    if _finite(s.get("test_tta_accuracy")):
        parts.append(f"{s['test_tta_accuracy']:.4f} crop-averaged "
                     f"({s.get('tta_mode') or 'tta'})")
    if _finite(s.get("test_loss")):
        parts.append(f"loss {s['test_loss']:.4g}")
    n = s.get("num_test")
    return "; ".join(parts) + (f" ({n} test examples)" if n and parts else "")


def _diagnosed(ctx: Mapping[str, Any]) -> bool:
    """Whether findings were looked for.

    An empty list from a procedure that stopped before its diagnosis step (or skipped it:
    ``passed`` None) means "not diagnosed", not "healthy".
    """
    if ctx.get("findings") is None:
        return False
    steps = ctx.get("steps") or []
    return bool(ctx["findings"]) or not steps or any(
        st.get("name") == "diagnosis" and st.get("passed") is not None for st in steps)


def _problems_left(ctx: Mapping[str, Any], found: Sequence[str],
                   fixed: Sequence[Mapping[str, Any]]) -> int:
    """Serious problems the final model still has.

    After a kept repair the final run was diagnosed again: the verdict's "N more not
    repaired" (``babysit.verdict_lines``) counts what is left there; the first run's other
    findings may be gone. Without a verdict, every cause not repaired counts.
    """
    verdict = " ".join(str(v) for v in ctx.get("verdict") or [])
    if fixed and verdict:
        m = re.search(r"(\d+) more not repaired", verdict)
        return int(m.group(1)) if m else 0
    return len(set(found) - {r.get("cause") for r in fixed})


def _problems_text(ctx: Mapping[str, Any]) -> tuple[str, int]:
    """"N found: causes; M repaired: cause (change, val before → after)" and how many left."""
    if not _diagnosed(ctx):
        return "not diagnosed", 0
    found = list(dict.fromkeys(f.get("cause") or f.get("code", "?")
                               for f in _finding_dicts(ctx) if _serious(f)))
    fixed = [r for r in ctx.get("repairs") or [] if r.get("kept")]
    if not found and not fixed:
        return "none found", 0
    left = _problems_left(ctx, found, fixed)
    text = f"{len(found)} found" + (f": {', '.join(found)}" if found else "")
    if fixed:
        text += f"; {len(fixed)} repaired: " + "; ".join(
            f"{r.get('cause', '')} ({r.get('change', '')}, val accuracy "
            f"{_fmt(r.get('val_accuracy_before'))} → {_fmt(r.get('val_accuracy_after'))})"
            for r in fixed)
        text += f"; {left} left in the final run" if left else "; none left in the final run"
    elif ctx.get("repairs") is not None and found:
        text += "; none repaired (no remedy improved validation accuracy)"
    elif found:
        text += "; not repaired (the repair step did not run)"
    return text, left


def _headline(ctx: Mapping[str, Any]) -> list[Block]:
    """The verdict at a glance: accuracy, which weights, problems, repairs, time."""
    s = {**(ctx.get("final") or {}), **(ctx.get("summary") or {})}
    verdict = [str(v) for v in ctx.get("verdict") or []]
    steps = ctx.get("steps") or []
    if not s and not verdict and not steps:
        return [("notrun", NOT_RUN)]
    acc = s.get("test_tta_accuracy", s.get("test_accuracy"))
    problems, left = _problems_text(ctx)
    failed = [st.get("name", "?") for st in steps if st.get("passed") is False]
    status = "fail" if failed or not _finite(acc) else "warn" if left else "ok"
    big = {"ok": "Training went well", "warn": "Training finished with problems left",
           "fail": f"A step failed: {failed[0]}" if failed else "No test accuracy"}[status]
    if _finite(acc):
        big += f": test accuracy {100 * float(acc):.1f} %"
    rows = [("Verdict", line) for line in verdict if not line.startswith("next:")]
    rows += [("Failed", "; ".join(str(x) for x in (st.get("name"), st.get("verdict"),
                                                   st.get("advice")) if x))
             for st in steps if st.get("passed") is False]
    rows += [("Test accuracy", _test_text(s)), ("Weights used", _weights_text(s))]
    repaired = _kept_repair(ctx)
    if repaired:
        rows[-1] = ("Weights used", f"{rows[-1][1]}, of the run retrained in repair round "
                    f"{repaired.get('round')} ({repaired.get('change', '')})".lstrip(", "))
    rows.append(("Problems", problems))
    if steps:
        unjudged = sum(st.get("passed") is None for st in steps)
        rows.append(("Steps", f"{sum(st.get('passed') is True for st in steps)} passed, "
                     f"{len(failed)} failed" + (f" ({', '.join(failed)})" if failed else "")
                     + (f", {unjudged} not judged" if unjudged else "")))
    total = sum(_num(st.get("seconds")) for st in steps if _finite(st.get("seconds")))
    if total:
        rows.append(("Total time", f"{_duration(total)} (all steps before the report)"))
    rows += [("Next", line[len("next:"):].strip()) for line in verdict
             if line.startswith("next:")]
    return [("headline", status, big, [(k, v) for k, v in rows if v])]


#: summary.json key -> (plain label, what the number is). Order = the table's order.
SUMMARY_ROWS = {
    "test_accuracy": ("test accuracy", "the final weights on the test split, one view per "
                      "image, evaluated once at the end"),
    "test_tta_accuracy": ("test accuracy, crop-averaged", "the same weights, predictions "
                          "averaged over test-time crops ({mode})"),
    "test_loss": ("test loss", "the final weights on the test split"),
    "test_tta_loss": ("test loss, crop-averaged", "the same weights over crops ({mode})"),
    "val_accuracy": ("validation accuracy", "the final weights on the validation split "
                     "(dropout off, no augmentation)"),
    "val_loss": ("validation loss", "the final weights on the validation split"),
    "train_accuracy": ("train accuracy, clean", "the final weights re-evaluated on the whole "
                       "training split after training: dropout off, no augmentation"),
    "train_loss": ("train loss, clean", "as above; not the history's train loss, which is a "
                   "running mean over each epoch's batches with dropout and augmentation on "
                   "while the weights were still changing"),
}


def _history_row(ctx: Mapping[str, Any]) -> list[list[str]]:
    """The history's last-epoch train loss, when the history is the final model's run."""
    hist = columns(ctx.get("history"))
    loss = hist.get("loss", np.array([]))
    if not len(loss) or not np.isfinite(loss[-1]) or _kept_repair(ctx):
        return []
    epoch = _fmt(hist["epoch"][-1]) if "epoch" in hist else str(len(loss))
    return [["train loss, last epoch of the history", _fmt(loss[-1]),
             f"history.csv: the running mean over epoch {epoch}'s batches, dropout and "
             "augmentation on, while the weights changed"]]


def _run_rows(s: Mapping[str, Any]) -> list[list[str]]:
    """Epochs, weights, size, data, time: the run's facts in words."""
    rows = []
    if s.get("epochs") is not None:
        planned = s.get("epochs_planned")
        rows.append(["epochs trained", _fmt(s["epochs"]), (f"of {planned} planned" if planned
                     else "") + (f"; {s['stopped_reason']}" if s.get("stopped_reason") else "")])
    if _weights_text(s):
        rows.append(["weights used", _weights_text(s), "the test, validation and clean train "
                     "numbers above come from these weights"])
    if s.get("parameters") is not None:
        rows.append(["parameters", f"{int(s['parameters']):,}", "weights in the network"])
    if s.get("dataset"):
        sizes = " / ".join(f"{s[f'num_{k}']} {k}" for k in ("train", "val", "test")
                           if s.get(f"num_{k}") is not None)
        rows.append(["data", str(s["dataset"]), "; ".join(
            x for x in (str(s.get("dataset_source") or ""), sizes) if x)])
    if s.get("task"):
        rows.append(["task", str(s["task"]), "what the outputs and labels are"])
    if _finite(s.get("fit_seconds")):
        rows.append(["training time", _duration(float(s["fit_seconds"])), "model.fit only" + (
            f", {s['seconds_per_epoch']:.3g} s per epoch" if _finite(s.get("seconds_per_epoch"))
            else "") + (f"; {_duration(float(s['total_seconds']))} with evaluation and saving"
                        if _finite(s.get("total_seconds")) else "")])
    return rows


_SUMMARY_SHOWN = {"epochs", "epochs_planned", "stopped_reason", "restore_best", "best_epoch",
                  "parameters", "dataset", "dataset_source", "num_train", "num_val",
                  "num_test", "task", "fit_seconds", "seconds_per_epoch", "total_seconds",
                  "tta_mode", "class_names"}


def _summary(ctx: Mapping[str, Any]) -> list[Block]:
    """The final numbers with plain labels, each saying what it measures."""
    s = dict(ctx.get("summary") or {})
    if not s:
        return [("notrun", NOT_RUN)]
    mode = s.get("tta_mode") or "tta"
    rows = [[label, _fmt(s[k]), what.format(mode=mode)]
            for k, (label, what) in SUMMARY_ROWS.items() if _finite(s.get(k))]
    rows += _history_row(ctx) + _run_rows(s)
    rows += [[k, _fmt(v), ""] for k, v in s.items()
             if k not in SUMMARY_ROWS and k not in _SUMMARY_SHOWN
             and not isinstance(v, Mapping | list | tuple) and v is not None
             and not (isinstance(v, float) and not math.isfinite(v))]
    blocks: list[Block] = [("table", ["quantity", "value", "what it is"], rows, None)]
    r = _kept_repair(ctx)
    if r:
        blocks.append(("p", f"These numbers are the final model's, retrained in repair round "
                            f"{r.get('round')} ({r.get('change', '')}); the curves and "
                            "monitors below are the first training run's, before the repair."))
    return blocks


def _repairs(ctx: Mapping[str, Any]) -> list[Block]:
    """One row per tried remedy: cause, change, val accuracy before → after, kept, seconds."""
    rows = ctx.get("repairs")
    if rows is None:
        return [("notrun", NOT_RUN)]
    if not rows:
        return [("p", "Nothing to repair: no serious problem had a remedy to try.")]
    body = [[str(r.get("round", "")), r.get("cause", ""), r.get("change", ""),
             f"{_fmt(r.get('val_accuracy_before'))} → {_fmt(r.get('val_accuracy_after'))}",
             "kept" if r.get("kept") else "not kept", _fmt(r.get("seconds")),
             r.get("flags", "") or r.get("transform", ""), r.get("note", "")] for r in rows]
    return [("table", ["round", "cause", "change", "val accuracy", "result", "seconds",
                       "flags / transform", "note"], body,
             ["pass" if r.get("kept") else "na" for r in rows])]


def _steps(ctx: Mapping[str, Any]) -> list[Block]:
    steps = ctx.get("steps") or []
    if not steps:
        return [("notrun", NOT_RUN)]
    marks = {True: ("pass", "pass"), False: ("FAIL", "fail"), None: ("—", "na")}
    rows, classes = [], []
    for st in steps:
        mark, cls = marks[st.get("passed") if st.get("passed") in (True, False) else None]
        rows.append([st.get("name", "?"), mark, st.get("verdict", ""), st.get("advice", ""),
                     _fmt(st.get("seconds"))])
        classes.append(cls)
    return [("table", ["step", "result", "verdict", "advice", "seconds"], rows, classes)]


def _findings(ctx: Mapping[str, Any]) -> list[Block]:
    if not _diagnosed(ctx):
        return [("notrun", NOT_RUN)]
    found = [f.to_dict() if hasattr(f, "to_dict") else dict(f) for f in ctx["findings"]]
    if not found:
        return [("p", "No findings: the curves look healthy.")]
    rows = [[f.get("severity", ""), f.get("cause") or f.get("code", ""), f.get("evidence", ""),
             _remedy_text(f)] for f in found]
    return [("table", ["severity", "cause", "evidence", "remedy"], rows,
             [f"sev-{f.get('severity', 'info')}" for f in found])]


def _remedy_text(f: Mapping[str, Any]) -> str:
    """The first remedy with its flags, "explained by X", or the lecture's advice."""
    if f.get("explained_by"):
        return f"explained by {f['explained_by']}"
    r = f.get("remedy") or {}
    if r:
        return r.get("text", "") + (f" ({r['flags']})" if r.get("flags") else "")
    return f.get("advice", "")


def _reproduce(ctx: Mapping[str, Any]) -> list[Block]:
    blocks: list[Block] = []
    if ctx.get("command"):
        blocks += [("p", "Command:"), ("pre", str(ctx["command"]))]
    config = ctx.get("config")
    if config is not None and ctx.get("config_name") and ctx.get("base_config") is not None:
        flags = overrides(config, ctx["base_config"])
        blocks += [("p", f"Overrides relative to the recipe {ctx['config_name']}:"),
                   ("pre", " \\\n  ".join([f"--config={ctx['config_name']}", *flags]))]
    if config is not None:
        blocks += [("details", "Exact config (JSON)", json.dumps(_plain(config), indent=2))]
    return blocks or [("notrun", NOT_RUN)]


def _dataset(ctx: Mapping[str, Any]) -> list[Block]:
    d = ctx.get("dataset") or {}
    if not d:
        return [("notrun", NOT_RUN)]
    rows = []
    for k, v in d.items():
        if isinstance(v, Mapping):
            v = ", ".join(f"{a}: {_fmt(b)}" for a, b in v.items())
        rows.append([k, _fmt(v)])
    return [("table", ["field", "value"], rows, None)]


def _model(ctx: Mapping[str, Any]) -> list[Block]:
    """Where the network, its loss, optimizer and metrics came from (``config.json``)."""
    o = ctx.get("origins") or {}
    arch = ((ctx.get("config") or {}).get("model") or {}).get("arch")
    if not o and arch:
        o = {"model": f"model.arch={arch}"}
    if not o:
        return [("notrun", NOT_RUN)]
    rows = [[k, "; ".join(map(str, v)) if isinstance(v, list | tuple) else _fmt(v)]
            for k, v in o.items() if v not in ([], "", None)]
    return [("table", ["what", "from"], rows, None)]


def _images(ctx: Mapping[str, Any], plot_dir: str, written: dict[str, str]) -> list[Block]:
    im = ctx.get("images") or {}
    if im.get("x") is None or not len(im["x"]):
        return [("notrun", NOT_RUN)]
    x = np.asarray(im["x"], dtype=np.float64)
    names = im.get("class_names") or (ctx.get("dataset") or {}).get("class_names") or []
    caption = CAPTIONS["images"].format(n=min(len(x), 48), total=len(x),
                                        shape=list(x.shape[1:]), lo=x.min(), hi=x.max(),
                                        mean=x.mean(), std=x.std())
    return [_figure("images", plots.image_grid, x, im.get("y"), names,
                    os.path.join(plot_dir, "images.png"), image_shape=im.get("image_shape"),
                    caption=caption, written=written)]


#: history.csv column -> the history table's heading.
MAIN_LABELS = {"loss": "train loss (epoch mean)", "accuracy": "train accuracy (epoch mean)",
               "val_loss": "val loss", "val_accuracy": "val accuracy", "lr": "learning rate",
               "update_ratio_median": "median ‖Δw‖/‖w‖"}


def _history_table(hist: Mapping[str, np.ndarray], epochs: np.ndarray, n: int) -> Block:
    """First, best (by val accuracy, else val loss, else loss) and last epoch; no blank column."""
    best, sign = next(((k, s) for k, s in (("val_accuracy", -1), ("val_loss", 1), ("loss", 1))
                       if np.any(np.isfinite(hist.get(k, [np.nan])))), (None, 1))
    picks: dict[int, list[str]] = {0: ["first"]}
    if best:
        i = int(np.nanargmin(np.where(np.isfinite(hist[best]), sign * hist[best], np.inf)))
        picks.setdefault(i, []).append(f"best {best.replace('_', ' ')}")
    picks.setdefault(n - 1, []).append("last")
    cols = [c for c in MAIN_COLUMNS if c in hist and any(
        i < len(hist[c]) and np.isfinite(hist[c][i]) for i in picks)]
    rows = [[", ".join(label), _fmt(epochs[i])]
            + [_fmt(hist[c][i]) if i < len(hist[c]) else "—" for c in cols]
            for i, label in sorted(picks.items())]
    return ("table", ["row", "epoch", *(MAIN_LABELS[c] for c in cols)], rows, None)


def _lr_blocks(hist: Mapping[str, np.ndarray], epochs: np.ndarray, plot_dir: str,
               written: dict[str, str]) -> Block:
    """The lr per epoch, or one sentence when it never changed (a flat line says nothing)."""
    if "lr" not in hist:
        return ("notrun", "learning rate: not recorded")
    if plots.is_constant(hist["lr"]):
        lr = hist["lr"][np.isfinite(hist["lr"])][0]
        return ("p", f"Constant learning rate {lr:.4g} in all {len(hist['lr'])} epochs "
                     "(no schedule).")
    return _figure("lr", plots.lr_curve, epochs, hist["lr"], os.path.join(plot_dir, "lr.png"),
                   written=written, caption=CAPTIONS["lr"])


def _curves(ctx: Mapping[str, Any], plot_dir: str, written: dict[str, str]) -> list[Block]:
    hist = columns(ctx.get("history"))
    raw = ctx.get("history")
    batch = ctx.get("batch_losses")
    if batch is None and isinstance(raw, Mapping):
        batch = raw.get("batch_losses")
    if not hist and batch is None:
        return [("notrun", NOT_RUN)]
    n = max((len(v) for v in hist.values()), default=0)
    epochs = hist.get("epoch", np.arange(1, n + 1, dtype=np.float64))
    blocks: list[Block] = []
    r = _kept_repair(ctx)
    if r:
        where = os.path.basename(str(r.get("workdir") or "")) or f"round {r.get('round')}"
        blocks.append(("p", "Curves of the first training run (history.csv); the final model "
                            f"was retrained in repair round {r.get('round')} "
                            f"({r.get('change', '')}): its curves are in repairs/{where}/."))
    if "loss" in hist or batch is not None:
        blocks.append(_figure(
            "loss", plots.loss_curve, epochs, hist.get("loss", []),
            os.path.join(plot_dir, "loss.png"), val_loss=hist.get("val_loss"),
            batch_losses=batch, written=written, caption=CAPTIONS["loss"]))
    else:
        blocks.append(("notrun", "no loss recorded"))
    if "accuracy" in hist or "val_accuracy" in hist:
        k = _num((ctx.get("dataset") or {}).get("num_classes"))
        blocks.append(_figure(
            "accuracy", plots.accuracy_curve, epochs, os.path.join(plot_dir, "accuracy.png"),
            accuracy=hist.get("accuracy"), val_accuracy=hist.get("val_accuracy"),
            chance=1 / k if k > 0 else None, written=written, caption=CAPTIONS["accuracy"]))
    else:
        blocks.append(("notrun", "accuracy: not recorded"))
    blocks.append(_lr_blocks(hist, epochs, plot_dir, written))
    if n:
        blocks.append(_history_table(hist, epochs, n))
    return blocks


def _update_ratios(ctx: Mapping[str, Any], plot_dir: str, written: dict[str, str]
                   ) -> list[Block]:
    records = ctx.get("update_ratios")
    path = os.path.join(plot_dir, "update_ratios.png")
    if records:
        return [_figure("update_ratios", plots.update_ratios, records, path, written=written,
                        caption=CAPTIONS["update_ratios"].format(source=""))]
    hist = columns(ctx.get("history"))
    keys = [k for k in ("update_ratio_min", "update_ratio_median", "update_ratio_max")
            if k in hist]
    if not keys:
        return [("notrun", NOT_RUN)]
    epochs = hist.get("epoch", np.arange(1, len(hist[keys[0]]) + 1))
    rows = [{"step": e, "ratios": {k.split("_")[-1] + " over tensors": hist[k][i]
                                   for k in keys}} for i, e in enumerate(epochs)]
    rows = [r for r in rows if any(np.isfinite(v) for v in r["ratios"].values())]
    if not rows:
        return [("notrun", "update ratios: no epoch was sampled")]
    source = " (history.csv: min, median and max over tensors per sampled epoch)"
    return [_figure("update_ratios", plots.update_ratios, rows, path, written=written,
                    xlabel="epoch", caption=CAPTIONS["update_ratios"].format(source=source))]


def _activations(ctx: Mapping[str, Any], plot_dir: str, written: dict[str, str]
                 ) -> list[Block]:
    stats = ctx.get("activation_stats")
    if not stats:
        return [("notrun", NOT_RUN)]
    when = ""
    if isinstance(stats, Sequence) and "layers" in stats[0]:  # ActivationMonitor.records
        ends = [stats[0], stats[-1]] if len(stats) > 1 else stats[:1]
        stats = {f"epoch {r.get('epoch', '?')}": r["layers"] for r in ends}
        when = " at " + " and ".join(stats)
    last_label, last = (list(stats.items())[-1] if isinstance(stats, Mapping)
                        else ("", stats))
    rows = [[s.get("name", ""), s.get("activation") or "—", _fmt(s.get("mean")),
             _fmt(s.get("std")), f"{100 * s.get('saturated', 0):.1f}%",
             f"{100 * s.get('dead', 0):.1f}%"] for s in last]
    return [_figure("activations", plots.activation_stats, stats,
                    os.path.join(plot_dir, "activations.png"), written=written,
                    caption=CAPTIONS["activations"].format(when=when)),
            ("p", f"Per layer{', ' + last_label if last_label else ''}:"),
            ("table", ["layer", "activation", "mean", "std", "saturated", "dead"], rows, None)]


def _lr_range(ctx: Mapping[str, Any], plot_dir: str, written: dict[str, str]) -> list[Block]:
    lr = ctx.get("lr_range") or {}
    runs, rec = lr.get("runs") or [], lr.get("recommended")
    blocks: list[Block] = []
    png = ctx.get("lr_range_png") or lr.get("png")
    if png:
        blocks.append(_existing_png(png, "learning-rate range"))
    elif runs:
        blocks.append(_figure("lr_range", plots.lr_range, runs,
                              os.path.join(plot_dir, "lr_range.png"), recommended=rec,
                              written=written, caption=CAPTIONS["lr_range"]))
    if rec:
        blocks.append(("p", f"Recommended learning-rate range: {_fmt(rec[0])} .. "
                            f"{_fmt(rec[1])}"))
    if runs:
        blocks.append(("table", ["lr", "final loss", "classification"],
                       [[_fmt(float(r["lr"])), _fmt(r.get("final_loss")),
                         r.get("classification", "")] for r in runs], None))
    return blocks or [("notrun", NOT_RUN)]


# -- the search section ---------------------------------------------------------------------

TRIAL_FIELDS = {"stage", "trial", "status", "val_accuracy", "val_loss", "epochs_run",
                "epochs_trained", "seconds", "reason", "number"}


def _range_text(path: str, spec: Any) -> str:
    """``optimizer.learning_rate 0.001 .. 0.1 (log)`` from a range spec or ``kind:lo:hi``."""
    if isinstance(spec, str):
        parts = spec.split(":")
        if len(parts) == 3 and all(_finite(_num(x)) for x in parts[1:]):
            spec = {"kind": parts[0], "lo": _num(parts[1]), "hi": _num(parts[2]),
                    "log": parts[0] == "log"}
        else:
            return f"{path} = {spec}"
    if "lo" in spec and "hi" in spec:
        return f"{path} {_fmt(spec['lo'])} .. {_fmt(spec['hi'])}" + (
            " (log)" if spec.get("log") else "")
    values = spec.get("values") or spec.get("choices")
    return f"{path} ∈ {{{_fmt(values)}}}" if values else path


def _stage_ranges(st: Mapping[str, Any]) -> str:
    if st.get("ranges"):
        return "; ".join(_range_text(k, v) for k, v in st["ranges"].items())
    space = str(st.get("space") or "")
    items = [p.split("=", 1) for p in space.split(",") if "=" in p]
    return "; ".join(_range_text(k, v) for k, v in items) or space or "—"


def _stages_table(stages: Sequence[Any]) -> Block:
    rows = []
    for i, st in enumerate(stages):
        st = st if isinstance(st, Mapping) else {"space": str(st)}
        best = st.get("best") or {}
        values = ", ".join(f"{k}={_fmt(v)}" for k, v in (best.get("values") or {}).items())
        rows.append([str(st.get("stage", i + 1)), _stage_ranges(st), _fmt(st.get("trials")),
                     _fmt(st.get("epochs")), _fmt(best.get("val_accuracy")), values or "—"])
    return ("table", ["stage", "ranges searched", "trials", "epochs per trial",
                      "best val accuracy", "best values"], rows, None)


def _search_dir(s: Mapping[str, Any], root: str) -> str:
    if s.get("dir"):
        return str(s["dir"])
    first = (s.get("plots") or [None])[0] or s.get("plot_png")
    if first:  # plots live in <search dir>/plots/
        return os.path.dirname(os.path.dirname(os.fspath(first)))
    return os.path.join(root, "search")


def _read_trials(s: Mapping[str, Any], directory: str) -> list[dict[str, Any]]:
    """The trials: the context's, or ``trials.csv`` in the search's directory."""
    if s.get("trials") is not None:
        return [dict(t) for t in s["trials"]]
    path = os.path.join(directory, "trials.csv")
    try:
        return [dict(r) for r in io.read_csv(path)] if os.path.isfile(path) else []
    except (OSError, ValueError) as e:
        logger.warning("report: could not read %s: %s", path, e)
        return []


def _edge_warnings(s: Mapping[str, Any], directory: str) -> list[str]:
    """The search's edge warnings: the context's, or ``result.json``'s in its directory."""
    if s.get("edge_warnings") is not None:
        return [str(w) for w in s["edge_warnings"]]
    path = os.path.join(directory, "result.json")
    try:
        result = io.read_json(path, what="search result") if os.path.isfile(path) else {}
    except (OSError, ValueError) as e:
        logger.warning("report: could not read %s: %s", path, e)
        return []
    return [str(w) for w in result.get("edge_warnings") or []]


def _top_trials(trials: Sequence[Mapping[str, Any]], k: int = 5) -> Block | None:
    """The ``k`` best completed trials: stage, trial, the searched values, val accuracy."""
    done = [t for t in trials if t.get("status", "completed") == "completed"
            and _finite(_num(t.get("val_accuracy")))]
    if not done:
        return None
    done.sort(key=lambda t: (-_num(t["val_accuracy"]), _num(t.get("val_loss"))))
    params = [k for k in trials[0] if k not in TRIAL_FIELDS and k != "values"]
    values = [t.get("values") or {p: t.get(p) for p in params} for t in done[:k]]
    params = list(dict.fromkeys(p for v in values for p in v))
    rows = [[str(i + 1), _fmt(t.get("stage")), _fmt(t.get("trial"))]
            + [_fmt(_num(v.get(p)) if _finite(_num(v.get(p))) else v.get(p)) for p in params]
            + [_fmt(_num(t["val_accuracy"])), _fmt(_num(t.get("val_loss"))),
               _fmt(t.get("epochs_run"))]
            for i, (t, v) in enumerate(zip(done, values))]
    return ("table", ["rank", "stage", "trial", *params, "val accuracy", "val loss", "epochs"],
            rows, None)


def _search_plots(s: Mapping[str, Any]) -> list[Block]:
    """The lr × regularization scatter and the val-accuracy-vs-parameter plots, side by side."""
    shown, missing = [], []
    # tuning.results names the files val_accuracy_vs_<path with "." as "_">
    params = {k.replace(".", "_"): k for st in s.get("stages") or [] if isinstance(st, Mapping)
              for k in st.get("ranges") or {}}
    for path in s.get("plots") or ([s["plot_png"]] if s.get("plot_png") else []):
        name = os.path.splitext(os.path.basename(os.fspath(path)))[0]
        caption = None
        if name.startswith("val_accuracy_vs_"):
            param = name[len("val_accuracy_vs_"):]
            caption = CAPTIONS["search-param"].format(param=params.get(param, param))
        block = _existing_png(path, "search", caption)
        (shown if block[0] == "img" else missing).append(block)
    return ([("imgs", [b[1:] for b in shown])] if shown else []) + missing


def _search(ctx: Mapping[str, Any], root: str) -> list[Block]:
    """Stages (ranges, trials, best), the top trials, the plots, and the trial log folded."""
    s = ctx.get("search") or {}
    if not s:
        return [("notrun", NOT_RUN)]
    blocks: list[Block] = []
    if s.get("stages"):
        blocks.append(_stages_table(s["stages"]))
    directory = _search_dir(s, root)
    top = _top_trials(_read_trials(s, directory))
    if top:
        blocks += [("p", f"The {len(top[2])} best trials:"), top]
    blocks += [("p", f"Edge warning: {w}") for w in _edge_warnings(s, directory)]
    blocks += _search_plots(s)
    if s.get("lines"):
        blocks.append(("details", f"Trial log ({len(s['lines'])} lines)",
                       "\n".join(str(x) for x in s["lines"])))
    return blocks or [("notrun", NOT_RUN)]


def sections(context: Mapping[str, Any], plot_dir: str, written: dict[str, str], *,
             root: str | None = None) -> list[Section]:
    """Builds the report's sections, writing figures under ``plot_dir`` (paths -> written).

    Args:
        context: what the procedure measured (schema in the module docstring).
        plot_dir: where new figures go.
        written: filled with figure name -> path.
        root: the run's directory (default: ``plot_dir``'s parent), where a search's
            ``search/trials.csv`` is looked for.

    Returns:
        ``[(anchor, title, blocks)]``, the headline first.
    """
    c = context
    fl = c.get("first_layer_png")
    root = root if root is not None else os.path.dirname(os.path.abspath(plot_dir))
    # The outcome first (headline, numbers, problems), then the evidence (search, curves,
    # monitors), then the procedure's details and how to reproduce it.
    return [
        ("headline", "At a glance", _headline(c)),
        ("summary", "Summary", _summary(c)),
        ("findings", "Findings", _findings(c)),
        ("repairs", "Repairs", _repairs(c)),
        ("search", "Hyperparameter search", _search(c, root)),
        ("curves", "Training curves", _curves(c, plot_dir, written)),
        ("update-ratios", "Update / weight ratios", _update_ratios(c, plot_dir, written)),
        ("activations", "Activation statistics", _activations(c, plot_dir, written)),
        ("first-layer", "First-layer weights",
         [_existing_png(fl, "first-layer weights")] if fl else [("notrun", NOT_RUN)]),
        ("lr-range", "Learning-rate range", _lr_range(c, plot_dir, written)),
        ("images", "Input images", _images(c, plot_dir, written)),
        ("steps", "Procedure steps", _steps(c)),
        ("dataset", "Dataset", _dataset(c)),
        ("model", "Model", _model(c)),
        ("reproduce", "Reproduce", _reproduce(c)),
    ]


# -- rendering ----------------------------------------------------------------------------


def _md(text: Any) -> str:
    """Markdown-safe one-line text: no table breaks, no raw HTML tags."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;")


def _md_block(b: Block, root: str) -> list[str]:
    """One block as Markdown lines (figures referenced relative to ``root``)."""
    kind = b[0]
    if kind == "p":
        return [_md(b[1]), ""]
    if kind == "notrun":
        return [f"_{_md(b[1])}_", ""]
    if kind == "pre":
        return ["```", str(b[1]), "```", ""]
    if kind == "details":
        return [f"{_md(b[1])}:", "", "```", str(b[2]), "```", ""]
    if kind == "headline":
        return [f"**{_md(b[2])}**", "", *(f"- **{_md(k)}:** {_md(v)}" for k, v in b[3]), ""]
    if kind == "imgs":
        return [line for path, caption in b[1] for line in _md_block(("img", path, caption),
                                                                       root)]
    if kind == "img":
        rel = os.path.relpath(b[1], root).replace(os.sep, "/")
        alt = os.path.splitext(os.path.basename(b[1]))[0]
        return [f"![{_md(alt)}]({rel})", "", *([f"_{_md(b[2])}_", ""] if b[2] else [])]
    if kind == "table":
        return ["| " + " | ".join(_md(h) for h in b[1]) + " |", "|" + "---|" * len(b[1]),
                *("| " + " | ".join(_md(c) for c in row) + " |" for row in b[2]), ""]
    return []


def to_markdown(title: str, secs: Sequence[Section], root: str) -> str:
    """Renders sections as Markdown; figures are referenced relative to ``root``."""
    out = [f"# {_md(title)}", ""]
    for _, heading, blocks in secs:
        out += [f"## {heading}", ""]
        for b in blocks:
            out += _md_block(b, root)
    return "\n".join(out)


CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;
 max-width:1180px;margin:24px auto;padding:0 20px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;border-bottom:2px solid #e3e6ec;
 padding-bottom:3px;margin-top:28px}.meta{color:#667;font-size:12px}
nav{font-size:13px;margin:8px 0 4px}nav a{color:#3559a6;margin-right:10px;text-decoration:none}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
th,td{border:1px solid #d8dce3;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f4f7}pre{background:#f6f8fa;border:1px solid #e3e6ec;padding:8px 10px;
 overflow-x:auto;font-size:12px;white-space:pre-wrap;word-break:break-all}
figure{margin:10px 0}img{max-width:100%;border:1px solid #eceef2}
figcaption{color:#445;font-size:13px;max-width:1000px}.notrun{color:#8a8f99;font-style:italic}
.figrow{display:flex;flex-wrap:wrap;gap:8px 16px;align-items:flex-start}
.figrow figure{flex:0 1 auto;max-width:calc(50% - 8px)}
.headline{border:1px solid #d8dce3;border-left:8px solid #8a8f99;border-radius:4px;
 padding:12px 18px;margin:16px 0 8px;background:#f7f8fa}
.headline.ok{border-left-color:#17803d;background:#eef8f1}
.headline.warn{border-left-color:#c98a00;background:#fff8e6}
.headline.fail{border-left-color:#b3261e;background:#fdeeed}
.headline .big{font-size:22px;font-weight:700;margin-bottom:6px}
.headline table{margin:0;font-size:15px}.headline td{border:0;padding:2px 12px 2px 0}
.headline td:first-child{font-weight:600;white-space:nowrap;color:#445}
tr.sev-error td{background:#fde3e1}tr.sev-warning td{background:#fff3d1}
tr.sev-info td{background:#e9f1fc}tr.fail td{background:#fde3e1}tr.pass td:nth-child(2)
{color:#17803d;font-weight:600}tr.fail td:nth-child(2){color:#b3261e;font-weight:700}
tr.na td:nth-child(2){color:#8a8f99}
"""


def _data_uri(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def _html_figure(path: str, caption: str, root: str | None) -> str:
    """A figure inlined as a data URI; ``data-file`` names its PNG relative to ``root``."""
    e = html.escape
    alt = e(caption or os.path.basename(path))
    rel = (f' data-file="{e(os.path.relpath(path, root).replace(os.sep, "/"))}"'
           if root else "")
    return (f'<figure><img src="{_data_uri(path)}" alt="{alt}"{rel}>'
            f"<figcaption>{e(caption)}</figcaption></figure>")


def _html_table(b: Block) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(h))}</th>" for h in b[1])
    rows = []
    for i, row in enumerate(b[2]):
        cls = f' class="{e(b[3][i])}"' if b[3] else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _html_block(b: Block, root: str | None) -> str:
    e = html.escape
    kind = b[0]
    if kind == "p":
        return f"<p>{e(str(b[1]))}</p>"
    if kind == "notrun":
        return f'<p class="notrun">{e(str(b[1]))}</p>'
    if kind == "pre":
        return f"<pre>{e(str(b[1]))}</pre>"
    if kind == "details":  # long blocks fold away so the figures stay in view
        return f"<details><summary>{e(str(b[1]))}</summary><pre>{e(str(b[2]))}</pre></details>"
    if kind == "headline":
        rows = "".join(f"<tr><td>{e(str(k))}</td><td>{e(str(v))}</td></tr>" for k, v in b[3])
        return (f'<div class="headline {e(b[1])}"><div class="big">{e(b[2])}</div>'
                f"<table><tbody>{rows}</tbody></table></div>")
    if kind == "imgs":
        return ('<div class="figrow">' + "".join(_html_figure(p, c, root) for p, c in b[1])
                + "</div>")
    if kind == "img":
        return _html_figure(b[1], b[2], root)
    if kind == "table":
        return _html_table(b)
    return ""


def to_html(title: str, secs: Sequence[Section], meta: str = "", *,
            root: str | None = None) -> str:
    """Renders sections as one self-contained HTML page (inline CSS, images as data URIs).

    Args:
        title: the page's title.
        secs: from :func:`sections`.
        meta: a line under the title.
        root: the run's directory: each image then carries ``data-file``, its PNG's path
            relative to ``root`` (the page itself needs no file: the PNG is inlined).

    Returns:
        The page.
    """
    e = html.escape
    nav = " ".join(f'<a href="#{a}">{e(h)}</a>' for a, h, _ in secs)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{e(title)}</h1>", f'<div class="meta">{e(meta)}</div>']
    for i, (anchor, heading, blocks) in enumerate(secs):
        if anchor == "headline":  # the verdict box needs no heading of its own
            out.append(f'<section id="{anchor}">')
        else:
            out.append(f'<section id="{anchor}"><h2>{e(heading)}</h2>')
        out += [_html_block(b, root) for b in blocks]
        out.append("</section>")
        if i == 0:
            out.append(f"<nav>{nav}</nav>")
    out.append("</body></html>")
    return "\n".join(out)


def write(workdir: str, context: Mapping[str, Any], *,
          screenshot: str | None = None) -> dict[str, str]:
    """Writes ``workdir/report.md``, a self-contained ``workdir/report.html`` and the plots.

    Args:
        workdir: the run's directory; figures go to ``workdir/plots/``.
        context: what the procedure measured; every key optional (schema in the module
            docstring).
        screenshot: a PNG path: also render the page there with headless Chromium.

    Returns:
        Paths written: ``"md"``, ``"html"`` and one key per figure drawn (``images``,
        ``loss``, ``accuracy``, ``lr``, ``update_ratios``, ``activations``, ``lr_range``).
        With ``screenshot``: ``"screenshot"`` (the PNG, when rendered) and
        ``"screenshot_note"``, the line to print: ``(screenshot PATH)`` or why there is
        none, e.g. ``(no screenshot: Chromium not found)``.
    """
    plot_dir = os.path.join(workdir, "plots")
    os.makedirs(plot_dir, exist_ok=True)
    written: dict[str, str] = {}
    secs = sections(context, plot_dir, written, root=workdir)
    title = str(context.get("title") or "babysit report")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md_path = os.path.join(workdir, "report.md")
    html_path = os.path.join(workdir, "report.html")
    io.write_text(md_path, to_markdown(title, secs, workdir))
    io.write_text(html_path, to_html(title, secs, meta=f"generated {stamp} by babysit",
                                     root=workdir))
    out = {"md": md_path, "html": html_path, **written}
    if screenshot:
        why = _render(html_path, screenshot)
        out["screenshot_note"] = screenshot_note(screenshot, why)
        if why is None:
            out["screenshot"] = screenshot
    return out


def find_chromium() -> str | None:
    """The headless browser used for screenshots (``chromium`` or ``chromium-browser``)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _render(html_path: str, png_path: str, *, timeout: float = 60, height: int = 4000
            ) -> str | None:
    """Renders ``html_path`` into ``png_path``; None, or why no screenshot was written."""
    exe = find_chromium()
    if exe is None:
        return "Chromium not found"
    url = "file://" + os.path.abspath(html_path)
    with tempfile.TemporaryDirectory(prefix="babysit-chromium-") as tmp:
        shot = os.path.join(tmp, "shot.png")
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--hide-scrollbars",
               f"--user-data-dir={os.path.join(tmp, 'profile')}", f"--screenshot={shot}",
               f"--window-size=1280,{int(height)}", url]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            logger.warning("render_screenshot: chromium ran over %g s", timeout)
            return f"Chromium ran over {timeout:g} s"
        except OSError as e:
            logger.warning("render_screenshot: %s", e)
            return f"Chromium could not start: {e.strerror or e}"
        if not os.path.isfile(shot) or os.path.getsize(shot) == 0:
            logger.warning("render_screenshot: chromium exited %d without a screenshot: %s",
                           proc.returncode, proc.stderr.decode(errors="replace")[-500:])
            return f"Chromium exited {proc.returncode} without one"
        with open(shot, "rb") as f:
            io.write_bytes(png_path, f.read())
    return None


def render_screenshot(html_path: str, png_path: str, *, timeout: float = 60,
                      height: int = 4000) -> bool:
    """Screenshots ``html_path`` with headless Chromium into ``png_path`` (1280 × height).

    The flags keep Chromium off the network (no QUIC, sync, component updates or background
    requests) and use a fresh profile, so it works on a closed machine.

    Returns:
        True when a non-empty PNG was written; False when Chromium is absent, fails or
        times out (never raises for those).
    """
    return _render(html_path, png_path, timeout=timeout, height=height) is None


def screenshot_note(png_path: str, why: str | None) -> str:
    """The terminal's words for a screenshot: ``(screenshot PATH)`` or ``(no screenshot: why)``."""
    return f"(screenshot {png_path})" if why is None else f"(no screenshot: {why})"


def screenshot(html_path: str, png_path: str, *, shown: str | None = None,
               timeout: float = 60) -> str:
    """Renders the report to ``png_path`` and returns the line to print after its path.

    Args:
        html_path: the report.
        png_path: where the PNG goes.
        shown: the PNG's path as the user should read it (default ``png_path``).
        timeout: seconds Chromium may take.

    Returns:
        ``(screenshot SHOWN)``, or ``(no screenshot: Chromium not found)`` (or another
        reason): a missing screenshot always says why.
    """
    why = _render(html_path, png_path, timeout=timeout)
    return screenshot_note(shown or png_path, why)
