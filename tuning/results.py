"""A search's results: ``trials.csv``, the lecture's lines, plots and ``best_config.*``.

Everything here is rebuilt from KerasTuner's own state (its ``Trial`` objects), never
appended to, so a resumed or distributed search writes each trial exactly once. Files are
written atomically (``recipes.io``).

The per-trial line is the CS231n assignment's
``val_acc: 0.412000, lr: 1.405206e-04, reg: 4.793564e-01, (1 / 100)``: ``lr`` is
``optimizer.learning_rate``, ``reg`` is ``model.l2``, other parameters go by the last part
of their path (the whole path when two share it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pprint
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ml_collections

from recipes import io, plots
from recipes.callbacks import EXPLOSION_FACTOR
from tuning import hypermodel
from tuning import space as space_lib

__all__ = ["SearchResult", "record", "short_names", "line", "write_trials_csv", "plot_params",
           "plot_lr_reg", "write_best_config", "best_of", "epochs_spent", "json_tree",
           "REG_PATHS", "STATUSES"]

#: The lecture's names for the two parameters its search tunes.
LECTURE_NAMES = {"optimizer.learning_rate": "lr", "model.l2": "reg"}
#: The regularization strength drawn against the learning rate, first one in the space.
REG_PATHS = ("model.l2", "model.l1", "optimizer.weight_decay", "model.dropout")
STATUSES = ("completed", "exploded", "failed", "running")


# -- records -----------------------------------------------------------------------------

def record(trial: Any, *, stage: int, config: ml_collections.ConfigDict,
           explosion_factor: float = EXPLOSION_FACTOR) -> dict[str, Any]:
    """One row for a KerasTuner ``Trial``: values, status, val accuracy/loss, epochs, seconds.

    Args:
        trial: a ``keras_tuner`` ``Trial`` (from the oracle or its ``trial.json``).
        stage: the coarse-to-fine stage (1-based).
        config: the config tree the values' paths refer to (for decoding tuples).
        explosion_factor: to word the reason of an exploded trial a remote worker ran.

    Returns:
        ``{"stage", "trial", "number", "status", "values", "val_accuracy", "val_loss",
        "epochs_run", "epochs_trained", "seconds", "reason"}``; status is one of
        ``STATUSES``; ``epochs_trained`` counts an aborted epoch by the steps it took.
    """
    metrics = {}
    for name in ("val_accuracy", "val_loss", "epochs_run", "epochs_trained", "seconds",
                 "exploded", "explosion_step"):
        if trial.metrics.exists(name):
            metrics[name] = float(trial.metrics.get_last_value(name))
    status = str(trial.status).upper()
    reason = ""
    if status == "COMPLETED":
        if metrics.get("exploded", 0.0) > 0:
            state = "exploded"
            msg = (trial.message or "").strip()
            reason = msg or hypermodel.explosion_reason(metrics, explosion_factor)
        else:
            state = "completed"
    elif status in ("FAILED", "INVALID"):
        state = "failed"
        lines = [s for s in (trial.message or "").strip().splitlines() if s.strip()]
        reason = lines[-1].strip() if lines else "failed"
    else:
        state = "running"
    values = space_lib.decode(trial.hyperparameters.values, config)
    return {
        "stage": int(stage),
        "trial": str(trial.trial_id),
        "number": _number(trial.trial_id),
        "status": state,
        "values": values,
        "val_accuracy": metrics.get("val_accuracy"),
        "val_loss": metrics.get("val_loss"),
        "epochs_run": int(metrics["epochs_run"]) if "epochs_run" in metrics else None,
        "epochs_trained": metrics.get("epochs_trained", metrics.get("epochs_run")),
        "seconds": metrics.get("seconds"),
        "reason": reason,
    }


def _number(trial_id: Any) -> int:
    try:
        return int(trial_id) + 1
    except (TypeError, ValueError):
        return 0


def best_of(records: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The completed (not exploded) record with the highest val accuracy, or None."""
    ok = [r for r in records if r["status"] == "completed" and r["val_accuracy"] is not None
          and math.isfinite(r["val_accuracy"])]
    return max(ok, key=lambda r: (r["val_accuracy"], -r["number"])) if ok else None


def epochs_spent(records: Iterable[Mapping[str, Any]]) -> float:
    """Trial-epochs actually trained; an aborted epoch counts the fraction it ran."""
    total = 0.0
    for r in records:
        if r["status"] != "running":
            v = r.get("epochs_trained")
            total += float(v if v is not None else (r["epochs_run"] or 0))
    return round(total, 3)


# -- what a search found -------------------------------------------------------------------

@dataclasses.dataclass
class SearchResult:
    """What a search found.

    Attributes:
        best_config: the config tree with the best values (None on a worker or if no trial
            completed); ``workdir/best_config.py`` returns it.
        best: the best trial's record (``values``, ``val_accuracy``, ``val_loss``, ...).
        trials: every trial's record, all stages.
        stages: per stage ``{stage, trials, epochs, space, ranges, notes, best,
            epochs_spent}``.
        edge_warnings: the lecture's "best on the edge of the range" warnings.
        lines: the lecture-format line of every finished trial.
        workdir: where the artifacts are.
        plots: the plots written under ``workdir/plots``: ``{"lr_reg": path or None,
            "params": [paths]}`` (empty on a worker, or when plotting failed).
    """

    best_config: ml_collections.ConfigDict | None
    best: dict[str, Any] | None
    trials: list[dict[str, Any]]
    stages: list[dict[str, Any]]
    edge_warnings: list[str]
    lines: list[str]
    workdir: str
    plots: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def epochs_spent(self) -> float:
        """Trial-epochs actually trained; an aborted epoch counts the fraction it ran."""
        return epochs_spent(self.trials)

    def diagnose_stats(self) -> dict[str, dict[str, Any]]:
        """``stats["search"]`` for ``recipes.diagnose``: ``{param: {best, lo, hi, log}}``."""
        if not self.best or not self.stages:
            return {}
        out = {}
        for path, r in self.stages[-1]["ranges"].items():
            if "lo" in r and path in self.best["values"]:
                out[path] = {"best": self.best["values"][path], "lo": r["lo"], "hi": r["hi"],
                             "log": r["log"]}
        return out


# -- the lecture's line ------------------------------------------------------------------

def short_names(paths: Sequence[str]) -> dict[str, str]:
    """``lr``/``reg`` for the lecture's two, the last path part for the rest (unique)."""
    last = [p.rsplit(".", 1)[-1] for p in paths]
    out = {}
    for p, tail in zip(paths, last):
        if p in LECTURE_NAMES:
            out[p] = LECTURE_NAMES[p]
        elif last.count(tail) > 1 or tail in LECTURE_NAMES.values():
            out[p] = p
        else:
            out[p] = tail
    return out


def _fmt(v: Any) -> str:
    """A value in the lecture's line: ``1.405206e-04`` for floats, else as the space writes it."""
    if isinstance(v, float):
        return f"{v:e}"
    return space_lib.value_text(v)


def line(rec: Mapping[str, Any], total: int, names: Mapping[str, str] | None = None) -> str:
    """``val_acc: 0.412000, lr: 1.405206e-04, reg: 4.793564e-01, (1 / 100)`` for one trial.

    An exploded or failed trial gets its status and reason after the count.
    """
    names = names or short_names(list(rec["values"]))
    acc = rec["val_accuracy"] if rec["val_accuracy"] is not None else 0.0
    parts = [f"val_acc: {acc:f}"]
    parts += [f"{names.get(p, p)}: {_fmt(v)}" for p, v in rec["values"].items()]
    text = ", ".join(parts) + f", ({rec['number']} / {total})"
    if rec["status"] in ("exploded", "failed"):
        text += f" {rec['status']}: {rec['reason']}"
    return text


# -- trials.csv ----------------------------------------------------------------------------

def write_trials_csv(path: str, records: Sequence[Mapping[str, Any]],
                     params: Sequence[str]) -> None:
    """Writes every finished trial (one row each, sorted by stage and trial) atomically."""
    columns = ["stage", "trial", "status", *params, "val_accuracy", "val_loss", "epochs_run",
               "epochs_trained", "seconds", "reason"]
    rows = []
    for r in sorted(records, key=lambda r: (r["stage"], r["number"], r["trial"])):
        if r["status"] == "running":
            continue
        row = {k: r[k] for k in ("stage", "trial", "status", "epochs_run", "reason")}
        row.update({p: _cell(r["values"].get(p)) for p in params})
        for k in ("val_accuracy", "val_loss", "epochs_trained", "seconds"):
            v = r.get(k)
            row[k] = "" if v is None else (round(v, 3) if k in ("seconds", "epochs_trained")
                                           else v)
        rows.append(row)
    io.write_csv(path, rows, columns)


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (tuple, bool)):
        return _fmt(v)
    return v


# -- plots ---------------------------------------------------------------------------------

def _finished(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in records if r["status"] in ("completed", "exploded")]


def plot_params(records: Sequence[Mapping[str, Any]], ranges: Mapping[str, Mapping[str, Any]],
                directory: str) -> list[str]:
    """``val_accuracy_vs_<param>.png`` for each numeric parameter (log axis for log ranges).

    Args:
        records: the trials (all stages); exploded ones are drawn as red crosses at 0.
        ranges: path → ``space.describe`` entry of the first stage (kind, lo, hi, log).
        directory: where the PNGs go.

    Returns:
        The paths written.
    """
    plt = plots.pyplot()
    os.makedirs(directory, exist_ok=True)
    done = _finished(records)
    out = []
    stages = sorted({r["stage"] for r in done}) or [1]
    for path, spec in ranges.items():
        if spec.get("kind") == "choice":
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for s in stages:
            pts = [(r["values"][path], r["val_accuracy"] or 0.0) for r in done
                   if r["stage"] == s and r["status"] == "completed" and path in r["values"]]
            if pts:
                ax.scatter(*zip(*pts), s=18, label=f"stage {s}", alpha=0.8)
        bad = [r["values"][path] for r in done if r["status"] == "exploded"
               and path in r["values"]]
        if bad:
            ax.scatter(bad, [0.0] * len(bad), marker="x", color="tab:red", label="exploded")
        if spec.get("log"):
            ax.set_xscale("log")
        ax.set_xlabel(path)
        ax.set_ylabel("val accuracy")
        ax.set_title(f"val accuracy vs {path}")
        ax.grid(True, alpha=0.3)
        if len(stages) > 1 or bad:
            ax.legend(fontsize=7)
        safe = path.replace(".", "_")
        out.append(plots.save_figure(fig, os.path.join(directory, f"val_accuracy_vs_{safe}.png")))
    return out


def plot_lr_reg(records: Sequence[Mapping[str, Any]],
                stage_ranges: Sequence[Mapping[str, Mapping[str, Any]]],
                path: str) -> str | None:
    """Learning rate × regularization scatter coloured by val accuracy, stage ranges drawn.

    CS231n's coarse-to-fine picture: each stage's box lies inside (or, after an edge shift,
    beside) the previous one, around the good (bright) points.

    Args:
        records: the trials (all stages).
        stage_ranges: per stage, path → ``space.describe`` entry.
        path: the PNG to write.

    Returns:
        ``path``, or None when the space lacks the learning rate or a regularization
        strength (one of ``REG_PATHS``) as numeric ranges.
    """
    first = stage_ranges[0] if stage_ranges else {}
    lr = "optimizer.learning_rate"
    reg = next((p for p in REG_PATHS if first.get(p, {}).get("kind") not in (None, "choice")),
               None)
    if first.get(lr, {}).get("kind") in (None, "choice") or reg is None:
        return None
    plt = plots.pyplot()
    from matplotlib import patches

    done = _finished(records)
    ok = [r for r in done if r["status"] == "completed"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    if ok:
        sc = ax.scatter([r["values"][lr] for r in ok], [r["values"][reg] for r in ok],
                        c=[r["val_accuracy"] or 0.0 for r in ok], cmap="viridis", s=28,
                        edgecolors="k", linewidths=0.3)
        fig.colorbar(sc, ax=ax, label="val accuracy")
    bad = [r for r in done if r["status"] == "exploded"]
    if bad:
        ax.scatter([r["values"][lr] for r in bad], [r["values"][reg] for r in bad],
                   marker="x", color="tab:red", label="exploded")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, ranges in enumerate(stage_ranges):
        a, b = ranges.get(lr, {}), ranges.get(reg, {})
        if "lo" not in a or "lo" not in b:
            continue
        ax.add_patch(patches.Rectangle((a["lo"], b["lo"]), a["hi"] - a["lo"], b["hi"] - b["lo"],
                                       fill=False, lw=1.5, ls="--", color=colors[i % len(colors)],
                                       label=f"stage {i + 1} range"))
    ax.set_xscale("log" if first[lr].get("log") else "linear")
    ax.set_yscale("log" if first[reg].get("log") else "linear")
    ax.set_xlabel(f"{lr} (lr)")
    ax.set_ylabel(reg)
    ax.set_title("learning rate × regularization (coarse to fine)")
    ax.legend(fontsize=7, loc="best")
    ax.autoscale_view()
    return plots.save_figure(fig, path)


# -- best_config ---------------------------------------------------------------------------

def write_best_config(workdir: str, cfg: ml_collections.ConfigDict,
                      best: Mapping[str, Any], *, shown: str | None = None) -> tuple[str, str]:
    """Writes ``best_config.json`` and ``best_config.py`` (``get_config()`` → the same tree).

    ``python -m recipes.train --config=WORKDIR/best_config.py`` trains it as it is; the .py
    holds the tree as a literal, so it runs wherever it is copied.

    Args:
        workdir: the search's directory.
        cfg: the full config tree with the best values applied.
        best: the best trial's record (for the docstring).
        shown: the directory the files will end up in, for the docstring (default
            ``workdir``; a staged ``--overwrite`` search writes elsewhere first).

    Returns:
        The two paths.
    """
    tree = json_tree(cfg.to_dict())
    json_path = os.path.join(workdir, "best_config.json")
    py_path = os.path.join(workdir, "best_config.py")
    io.write_json(json_path, tree)
    home = os.path.abspath(shown or workdir)
    values = ", ".join(f"{p}={_fmt(v)}" for p, v in best.get("values", {}).items())
    acc = best.get("val_accuracy")
    text = (
        f'"""The best config of the search in {home}.\n\n'
        f"Best trial: {values}; val accuracy {acc if acc is None else f'{acc:.4f}'} "
        f"(stage {best.get('stage')}, {best.get('epochs_run')} epochs).\n"
        f"Command: ``python -m recipes.train --config={os.path.join(home, 'best_config.py')} "
        "--workdir=DIR``\n"
        '"""\n\n'
        "from recipes import configs\n\n"
        f"TREE = {pprint.pformat(tree, indent=1, width=96, sort_dicts=False)}\n\n\n"
        "def get_config(arg=None):\n"
        '    """Returns the searched tree (the search\'s best values in the base config)."""\n'
        "    if arg:\n"
        "        raise ValueError(f\"best_config takes no argument, got {arg!r}\")\n"
        "    return configs.complete(TREE)\n"
    )
    io.write_text(py_path, text)
    return json_path, py_path


def json_tree(tree: Any) -> Any:
    """``tree`` as JSON reads it back: tuples → lists, recursively (a copy).

    The one sanitizer of the search's JSON: the request in ``search.json`` (compared on
    resume) and ``best_config.json`` (whose ``.py`` literal must equal it).
    """
    return json.loads(json.dumps(tree, default=list))
