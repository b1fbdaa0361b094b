"""The run's report: ``write(workdir, context)`` -> report.md and a self-contained report.html.

CS231n "Training Neural Networks" (babysitting the learning process): the procedure's
verdicts, what went wrong and what to change, with the pictures the lecture reads — the data
as the network sees it, the loss on a log scale, train/val accuracy, the learning rate, the
update/weight ratios, activation statistics, first-layer weights and the lr range runs.

The report is built once as a list of sections (title + blocks: paragraphs, tables, code,
figures) and rendered twice: to Markdown (figures referenced as ``plots/*.png``) and to HTML
(figures inlined as base64 ``data:`` URIs, CSS inline, no external resource, every text
escaped), so the HTML can be mailed or opened on a closed network. Figures come from
:mod:`recipes.plots`.

The context is a plain dict; every key is optional and a missing part says "not run":

* ``title``, ``command`` (the exact command line); ``config`` (dict or ConfigDict: shown as
  JSON, and as ``--config.a.b=v`` overrides when ``config_name`` and ``base_config`` are
  given); ``dataset`` (name, source, sizes, num_classes, class_names, ...).
* ``steps``: ``[{name, passed: bool | None, verdict, advice, seconds}]``.
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
  of drawing the runs; ``search``: ``{lines, stages, plots}`` (``plots``: PNG paths, the
  lr × regularization scatter first).
* ``findings``: ``diagnose.Finding`` objects or their dicts; ``summary``: ``test_accuracy``,
  ``test_tta_accuracy``, ``tta_mode``, ``epochs``, ``seconds`` and any other scalars.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import logging
import math
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from models import inspect
from recipes import io, plots

__all__ = ["write", "render_screenshot", "sections", "to_markdown", "to_html", "overrides"]

logger = logging.getLogger(__name__)
NOT_RUN = "not run"
MAIN_COLUMNS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "update_ratio_median")

Block = tuple  # ("p", text) | ("pre", text) | ("details", summary, text) | ("table", ...)
#                | ("img", path, caption) | ("notrun", text)
Section = tuple[str, str, list[Block]]  # (anchor id, title, blocks)


# -- small helpers ------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    """A cell: floats to 4 significant digits, None as an em dash, the rest as ``str``."""
    if v is None:
        return "—"
    if isinstance(v, bool | str):
        return str(v)
    if isinstance(v, float | np.floating):
        return f"{float(v):.4g}"
    if isinstance(v, Sequence | np.ndarray):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


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


CAPTIONS = {
    "first-layer weights": "First-layer weights as images (FirstLayerWeights monitor): "
    "smooth, varied patterns are healthy; noisy ones mean too short training, a badly set "
    "learning rate or too little regularization.",
}


def _existing_png(path: Any, what: str) -> Block:
    if path and os.path.isfile(path):
        return ("img", os.fspath(path), CAPTIONS.get(what, what))
    return ("notrun", f"{NOT_RUN} (no {what} image at {path})" if path else NOT_RUN)


# -- sections -----------------------------------------------------------------------------


def _summary(ctx: Mapping[str, Any]) -> list[Block]:
    s = dict(ctx.get("summary") or {})
    verdict = [("p", str(line)) for line in ctx.get("verdict") or []]
    if not s:
        return verdict or [("notrun", NOT_RUN)]
    mode = s.pop("tta_mode", None)
    labels = {"test_accuracy": "test accuracy (single view)",
              "test_tta_accuracy": f"test accuracy, crop averaging ({mode or 'tta'})",
              "epochs": "epochs", "seconds": "seconds"}
    rows = [[labels[k], _fmt(s.pop(k))] for k in labels if k in s]
    rows += [[k, _fmt(v)] for k, v in s.items() if not isinstance(v, Mapping | list)]
    return [*verdict, ("table", ["quantity", "value"], rows, None)]


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
    if "findings" not in ctx or ctx["findings"] is None:
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
    caption = (f"{min(len(x), 48)} of {len(x)} training images exactly as they enter the "
               f"network (after preprocessing and augmentation), shape {list(x.shape[1:])}; "
               f"values min {x.min():.3g}, max {x.max():.3g}, mean {x.mean():.3g}, std "
               f"{x.std():.3g}. For display only, each image is rescaled to [0, 1] on its own "
               "(its min black, its max white). Check that labels match the pictures and "
               "that augmentation looks plausible.")
    return [_figure("images", plots.image_grid, x, im.get("y"), names,
                    os.path.join(plot_dir, "images.png"), image_shape=im.get("image_shape"),
                    caption=caption, written=written)]


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
    if "loss" in hist or batch is not None:
        blocks.append(_figure(
            "loss", plots.loss_curve, epochs, hist.get("loss", []),
            os.path.join(plot_dir, "loss.png"), val_loss=hist.get("val_loss"),
            batch_losses=batch, written=written,
            caption="Loss on a log scale: per epoch, and per step raw and smoothed when "
                    "recorded. Look for the lecture's shapes: flat, linear, noisy, exploding."))
    else:
        blocks.append(("notrun", "no loss recorded"))
    if "accuracy" in hist or "val_accuracy" in hist:
        k = _num((ctx.get("dataset") or {}).get("num_classes"))
        blocks.append(_figure(
            "accuracy", plots.accuracy_curve, epochs, os.path.join(plot_dir, "accuracy.png"),
            accuracy=hist.get("accuracy"), val_accuracy=hist.get("val_accuracy"),
            chance=1 / k if k > 0 else None, written=written,
            caption="Train and validation accuracy: a big gap means overfitting (more "
                    "regularization), no gap at low accuracy underfitting (more capacity)."))
    else:
        blocks.append(("notrun", "accuracy: not recorded"))
    if "lr" in hist:
        blocks.append(_figure("lr", plots.lr_curve, epochs, hist["lr"],
                              os.path.join(plot_dir, "lr.png"), written=written,
                              caption="Learning rate used in each epoch."))
    else:
        blocks.append(("notrun", "learning rate: not recorded"))
    if n:
        rows = []
        best = ("val_loss" if np.any(np.isfinite(hist.get("val_loss", [np.nan])))
                else "loss" if "loss" in hist else None)
        picks = [("first", 0), ("last", n - 1)]
        if best:
            i = int(np.nanargmin(np.where(np.isfinite(hist[best]), hist[best], np.inf)))
            picks.insert(1, (f"best {best}", i))
        for label, i in picks:
            rows.append([label, _fmt(epochs[i])] + [_fmt(hist[c][i]) if c in hist and
                                                    i < len(hist[c]) else "—"
                                                    for c in MAIN_COLUMNS])
        blocks.append(("table", ["row", "epoch", *MAIN_COLUMNS], rows, None))
    return blocks


def _update_ratios(ctx: Mapping[str, Any], plot_dir: str, written: dict[str, str]
                   ) -> list[Block]:
    records = ctx.get("update_ratios")
    path = os.path.join(plot_dir, "update_ratios.png")
    caption = ("‖Δw‖/‖w‖ of one update per trainable tensor (log scale); the lecture wants "
               "about 1e-3: far below, raise the learning rate; far above, lower it.")
    if records:
        return [_figure("update_ratios", plots.update_ratios, records, path,
                        caption=caption, written=written)]
    hist = columns(ctx.get("history"))
    keys = [k for k in ("update_ratio_min", "update_ratio_median", "update_ratio_max")
            if k in hist]
    if not keys:
        return [("notrun", NOT_RUN)]
    epochs = hist.get("epoch", np.arange(1, len(hist[keys[0]]) + 1))
    rows = [{"step": e, "ratios": {k.split("_")[-1] + " over tensors": hist[k][i]
                                   for k in keys}} for i, e in enumerate(epochs)]
    return [_figure("update_ratios", plots.update_ratios, rows, path, written=written,
                    caption=caption.replace("per trainable tensor", "(history.csv: min, "
                                            "median, max over tensors per epoch; x = epoch)"))]


def _activations(ctx: Mapping[str, Any], plot_dir: str, written: dict[str, str]
                 ) -> list[Block]:
    stats = ctx.get("activation_stats")
    if not stats:
        return [("notrun", NOT_RUN)]

    if isinstance(stats, Sequence) and "layers" in stats[0]:  # ActivationMonitor.records
        ends = [stats[0], stats[-1]] if len(stats) > 1 else stats[:1]
        stats = {f"epoch {r.get('epoch', '?')}": r["layers"] for r in ends}
    last = list(stats.values())[-1] if isinstance(stats, Mapping) else stats
    rows = [[s.get("name", ""), s.get("activation") or "—", _fmt(s.get("mean")),
             _fmt(s.get("std")), f"{100 * s.get('saturated', 0):.1f}%",
             f"{100 * s.get('dead', 0):.1f}%"] for s in last]
    return [_figure("activations", inspect.plot_activation_stats, stats,
                    os.path.join(plot_dir, "activations.png"), written=written,
                    caption="Per-layer mean/std of the activations and one histogram per "
                            "layer: stds collapsing to 0 or units piling on ±1 mean a bad "
                            "initialization."),
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
                              written=written, caption="Final loss of each short run against "
                              "its learning rate, coloured by classification."))
    if rec:
        blocks.append(("p", f"Recommended learning-rate range: {_fmt(rec[0])} .. "
                            f"{_fmt(rec[1])}"))
    if runs:
        blocks.append(("table", ["lr", "final loss", "classification"],
                       [[_fmt(float(r["lr"])), _fmt(r.get("final_loss")),
                         r.get("classification", "")] for r in runs], None))
    return blocks or [("notrun", NOT_RUN)]


def _search(ctx: Mapping[str, Any]) -> list[Block]:
    s = ctx.get("search") or {}
    blocks: list[Block] = []
    for path in s.get("plots") or ([s["plot_png"]] if s.get("plot_png") else []):
        blocks.append(_existing_png(path, "search"))
    for i, st in enumerate(s.get("stages") or []):
        text = ", ".join(f"{k}: {_fmt(v)}" for k, v in st.items()) if isinstance(
            st, Mapping) else str(st)
        blocks.append(("p", f"Stage {i + 1}: {text}"))
    if s.get("lines"):
        blocks.append(("pre", "\n".join(str(x) for x in s["lines"])))
    return blocks or [("notrun", NOT_RUN)]


def sections(context: Mapping[str, Any], plot_dir: str, written: dict[str, str]
             ) -> list[Section]:
    """Builds the report's sections, writing figures under ``plot_dir`` (paths -> written)."""
    c = context
    fl = c.get("first_layer_png")
    return [
        ("summary", "Summary", _summary(c)),
        ("findings", "Findings", _findings(c)),
        ("repairs", "Repairs", _repairs(c)),
        ("steps", "Procedure steps", _steps(c)),
        ("reproduce", "Reproduce", _reproduce(c)),
        ("dataset", "Dataset", _dataset(c)),
        ("model", "Model", _model(c)),
        ("images", "Input images", _images(c, plot_dir, written)),
        ("lr-range", "Learning-rate range", _lr_range(c, plot_dir, written)),
        ("search", "Hyperparameter search", _search(c)),
        ("curves", "Training curves", _curves(c, plot_dir, written)),
        ("update-ratios", "Update / weight ratios", _update_ratios(c, plot_dir, written)),
        ("activations", "Activation statistics", _activations(c, plot_dir, written)),
        ("first-layer", "First-layer weights",
         [_existing_png(fl, "first-layer weights")] if fl else [("notrun", NOT_RUN)]),
    ]


# -- rendering ----------------------------------------------------------------------------


def _md(text: Any) -> str:
    """Markdown-safe one-line text: no table breaks, no raw HTML tags."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;")


def to_markdown(title: str, secs: Sequence[Section], root: str) -> str:
    """Renders sections as Markdown; figures are referenced relative to ``root``."""
    out = [f"# {_md(title)}", ""]
    for _, heading, blocks in secs:
        out += [f"## {heading}", ""]
        for b in blocks:
            if b[0] == "p":
                out += [_md(b[1]), ""]
            elif b[0] == "notrun":
                out += [f"_{_md(b[1])}_", ""]
            elif b[0] == "pre":
                out += ["```", str(b[1]), "```", ""]
            elif b[0] == "details":
                out += [f"{_md(b[1])}:", "", "```", str(b[2]), "```", ""]
            elif b[0] == "img":
                rel = os.path.relpath(b[1], root).replace(os.sep, "/")
                alt = os.path.splitext(os.path.basename(b[1]))[0]
                out += [f"![{_md(alt)}]({rel})", ""]
                out += [f"_{_md(b[2])}_", ""] if b[2] else []
            elif b[0] == "table":
                out += ["| " + " | ".join(_md(h) for h in b[1]) + " |",
                        "|" + "---|" * len(b[1])]
                out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in b[2]]
                out.append("")
    return "\n".join(out)


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;
 max-width:1180px;margin:24px auto;padding:0 20px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;border-bottom:2px solid #e3e6ec;
 padding-bottom:3px;margin-top:28px}.meta{color:#667;font-size:12px}
nav{font-size:12px;margin:8px 0 4px}nav a{color:#3559a6;margin-right:10px;text-decoration:none}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #d8dce3;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f4f7}pre{background:#f6f8fa;border:1px solid #e3e6ec;padding:8px 10px;
 overflow-x:auto;font-size:12px;white-space:pre-wrap;word-break:break-all}
figure{margin:10px 0}img{max-width:100%;border:1px solid #eceef2}
figcaption{color:#556;font-size:12px;max-width:900px}.notrun{color:#8a8f99;font-style:italic}
tr.sev-error td{background:#fde3e1}tr.sev-warning td{background:#fff3d1}
tr.sev-info td{background:#e9f1fc}tr.fail td{background:#fde3e1}tr.pass td:nth-child(2)
{color:#17803d;font-weight:600}tr.fail td:nth-child(2){color:#b3261e;font-weight:700}
tr.na td:nth-child(2){color:#8a8f99}
"""


def _data_uri(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def to_html(title: str, secs: Sequence[Section], meta: str = "") -> str:
    """Renders sections as one self-contained HTML page (inline CSS, images as data URIs)."""
    e = html.escape
    nav = " ".join(f'<a href="#{a}">{e(h)}</a>' for a, h, _ in secs)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{e(title)}</h1>", f'<div class="meta">{e(meta)}</div>', f"<nav>{nav}</nav>"]
    for anchor, heading, blocks in secs:
        out.append(f'<section id="{anchor}"><h2>{e(heading)}</h2>')
        for b in blocks:
            if b[0] == "p":
                out.append(f"<p>{e(str(b[1]))}</p>")
            elif b[0] == "notrun":
                out.append(f'<p class="notrun">{e(str(b[1]))}</p>')
            elif b[0] == "pre":
                out.append(f"<pre>{e(str(b[1]))}</pre>")
            elif b[0] == "details":  # long blocks fold away so the figures stay in view
                out.append(f"<details><summary>{e(str(b[1]))}</summary>"
                           f"<pre>{e(str(b[2]))}</pre></details>")
            elif b[0] == "img":
                alt = e(b[2] or os.path.basename(b[1]))
                out.append(f'<figure><img src="{_data_uri(b[1])}" alt="{alt}">'
                           f"<figcaption>{e(b[2])}</figcaption></figure>")
            elif b[0] == "table":
                head = "".join(f"<th>{e(str(h))}</th>" for h in b[1])
                rows = []
                for i, row in enumerate(b[2]):
                    cls = f' class="{e(b[3][i])}"' if b[3] else ""
                    cells = "".join(f"<td>{e(str(c))}</td>" for c in row)
                    rows.append(f"<tr{cls}>{cells}</tr>")
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>"
                           f"{''.join(rows)}</tbody></table>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)


def write(workdir: str, context: Mapping[str, Any]) -> dict[str, str]:
    """Writes ``workdir/report.md``, a self-contained ``workdir/report.html`` and the plots.

    Args:
        workdir: the run's directory; figures go to ``workdir/plots/``.
        context: what the procedure measured; every key optional (schema in the module
            docstring).

    Returns:
        Paths written: ``"md"``, ``"html"`` and one key per figure drawn (``images``,
        ``loss``, ``accuracy``, ``lr``, ``update_ratios``, ``activations``, ``lr_range``).
    """
    plot_dir = os.path.join(workdir, "plots")
    os.makedirs(plot_dir, exist_ok=True)
    written: dict[str, str] = {}
    secs = sections(context, plot_dir, written)
    title = str(context.get("title") or "babysit report")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md_path = os.path.join(workdir, "report.md")
    html_path = os.path.join(workdir, "report.html")
    io.write_text(md_path, to_markdown(title, secs, workdir))
    io.write_text(html_path, to_html(title, secs, meta=f"generated {stamp} by babysit"))
    return {"md": md_path, "html": html_path, **written}


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def render_screenshot(html_path: str, png_path: str, *, timeout: float = 60) -> bool:
    """Screenshots ``html_path`` with headless Chromium into ``png_path`` (1280×4000).

    The flags keep Chromium off the network (no QUIC, sync, component updates or background
    requests) and use a fresh profile, so it works on a closed machine.

    Returns:
        True when a non-empty PNG was written; False when Chromium is absent, fails or
        times out (never raises for those).
    """
    exe = find_chromium()
    if exe is None:
        return False
    url = "file://" + os.path.abspath(html_path)
    with tempfile.TemporaryDirectory(prefix="babysit-chromium-") as tmp:
        shot = os.path.join(tmp, "shot.png")
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--hide-scrollbars",
               f"--user-data-dir={os.path.join(tmp, 'profile')}", f"--screenshot={shot}",
               "--window-size=1280,4000", url]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            logger.warning("render_screenshot: %s", e)
            return False
        if not os.path.isfile(shot) or os.path.getsize(shot) == 0:
            logger.warning("render_screenshot: chromium exited %d without a screenshot: %s",
                           proc.returncode, proc.stderr.decode(errors="replace")[-500:])
            return False
        with open(shot, "rb") as f:
            io.write_bytes(png_path, f.read())
    return True
