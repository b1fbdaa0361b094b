"""The whole babysitting procedure, run for the user with a verdict at every step.

CS231n lecture 6, "Babysitting the learning process", in order: check the initial loss,
check that regularization raises it, make sure the model can overfit 20 examples, find
the learning-rate range, search hyperparameters coarse to fine, train with the schedule
while the monitors watch, average test-time crops, read the curves, write the report.

``recipes.babysit.run(config, workdir)`` — or on your own network and data,
``recipes.babysit.run(None, workdir, model=my_model, data=(x_train, y_train, x_test,
y_test))`` — and ``python -m recipes.babysit --config=NAME_OR_PATH --workdir=DIR
[--steps=...]``. Each step
prints one line as it finishes; ``babysit.json`` keeps every verdict; the training run's
artifacts, ``report.md`` and ``report.html`` land in ``workdir``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import keras
import ml_collections
import numpy as np

import tuning
from recipes import (
    cli,
    configs,
    diagnose,
    io,
    lr_range,
    pipeline,
    prepare,
    report,
    sanity,
    train,
)
from recipes import data as data_lib
from recipes import workdir as wd

#: The procedure's steps, in the order they run. "all" runs every one.
STEPS = ("sanity", "overfit", "lr_range", "search", "train", "diagnose", "report")
SEARCH_LR_MARGIN = 10.0  # the search spans the lr range widened by this factor each side


@dataclasses.dataclass
class Step:
    """One step's outcome: a line for the terminal, a row for the report."""

    name: str
    passed: bool | None  # None: informative, skipped or not applicable
    verdict: str
    advice: str = ""
    seconds: float = 0.0

    def line(self, index: int, total: int) -> str:
        mark = {True: "PASS", False: "FAIL", None: "----"}[self.passed]
        counter = f"[{index}/{total}]"
        return f"{counter:<8}{self.name:<27} {mark}  {self.verdict}"


def parse_steps(steps: str | list[str] | None) -> list[str]:
    """Turns ``"all"`` or ``"sanity,lr_range,train"`` into the steps, in procedure order."""
    if steps is None or steps == "all" or steps == ["all"]:
        return list(STEPS)
    names = [s.strip() for s in (steps.split(",") if isinstance(steps, str) else steps)]
    unknown = [n for n in names if n not in STEPS]
    if unknown or not names:
        raise ValueError(f"babysit.steps: unknown step(s) {unknown}; use 'all' or a comma "
                         f"list of {', '.join(STEPS)}")
    return [s for s in STEPS if s in names]


def run(config: Any, workdir: str, *, model: Any = None, data: Any = None,
        steps: str | list[str] | None = None, splits: data_lib.Splits | None = None,
        overwrite: bool = False, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs the babysitting procedure on ``config`` and writes everything into ``workdir``.

    Args:
        config: a full or partial config tree.
        workdir: the procedure's directory; the final training run's artifacts go here too.
        model: the user's network instead of ``model.arch``: a ``keras.Model`` (compiled or
            not; every step trains a fresh copy, ``keras.models.clone_model``) or a function
            returning one. What it was compiled with is kept where ``config`` is silent.
        data: the user's data instead of ``config.dataset``: ``(x, y)``,
            ``(x_train, y_train, x_test, y_test)``, a pair of ``tf.data`` datasets or
            ``recipes.data.Splits``.
        steps: ``"all"`` (default: ``config.babysit.steps``) or a subset, comma separated.
        splits: already-loaded ``Splits`` (the older name of ``data``).
        overwrite: replace a finished procedure in ``workdir``.
        echo: where each step's line goes (``print``; ``lambda s: None`` for silence).

    Returns:
        ``{"steps": [...], "summary": {...}, "findings": [...], "config": {...}}``, also
        written to ``workdir/babysit.json``.

    Raises:
        ValueError: a bad config field, bad data or an unusable workdir (before any step).
    """
    wd.check_path(workdir)
    # Every field, the data and the model are checked before any step writes a byte.
    prepared = prepare.prepare(config, model=model, data=data if data is not None else splits)
    cfg, splits = prepared.config, prepared.splits
    todo = parse_steps(steps if steps is not None else cfg.babysit.steps)
    request = _request(cfg, todo, prepared)
    _check_workdir(workdir, cfg, todo, overwrite)
    notes = _search_space_for(cfg, prepared) if "search" in todo else []
    if "search" in todo:
        tuning.search.check_space_values(cfg, tuning.space.from_mapping(cfg.search.space, cfg),
                                         splits, model=model)
    wd.check_space(workdir, train.checkpoint_bytes(prepared.model) + (1 << 20))
    with wd.locked(workdir):
        wd.recover(workdir)  # what a replacement killed mid-swap left behind
        _check_workdir(workdir, cfg, todo, overwrite)  # it may have changed meanwhile
        state = _State(cfg=cfg, splits=splits, workdir=workdir, todo=todo, echo=echo,
                       model=model, prepared=prepared, shown=workdir, request=request,
                       search_notes=notes)
        if overwrite and wd.holds_files(workdir) and not _continues(workdir, request):
            with wd.replacing(workdir, can_continue=lambda d: _continues(d, request, True)) as d:
                state.workdir = d
                return _run_steps(state)
        return _run_steps(state)


def _run_steps(state: _State) -> dict[str, Any]:
    """The steps, in ``state.workdir``; a finished procedure found there is returned as is."""
    path = os.path.join(state.workdir, "babysit.json")
    if os.path.exists(path) and io.read_json(path, what="babysit result").get("finished"):
        return io.read_json(path, what="babysit result")  # a staged run killed before its swap
    for name in state.todo:
        if state.stopped:
            break
        start = time.time()
        for step in _RUNNERS[name](state):
            step.seconds = round(time.time() - start, 1)
            state.steps.append(step)
            state.echo(step.line(len(state.steps), state.expected_lines()))
            start = time.time()
        _save(state)
    if state.stopped and "report" in state.todo and "report" not in state.done:
        for step in _report(state):
            state.steps.append(step)
            state.echo(step.line(len(state.steps), len(state.steps)))
    state.finished = True
    _save(state)
    return _result(state)


def _request(cfg: ml_collections.ConfigDict, todo: list[str],
             prepared: prepare.Prepared) -> dict[str, Any]:
    """What a babysit run was asked to do: the config, the steps, the model and the data."""
    info = prepared.splits.info
    return {"config": io.json_ready(cfg.to_dict()),
            "steps": list(todo),
            "model": _model_fingerprint(prepared),
            "data": {"source": str(info.source), "sizes": [len(prepared.splits.train),
                                                           len(prepared.splits.val),
                                                           len(prepared.splits.test)]}}


def _model_fingerprint(prepared: prepare.Prepared) -> str:
    """The network's architecture, hashed (a resumed run must babysit the same network)."""
    if prepared.source.kind == "config":
        return prepared.source.describe(prepared.config)
    try:
        text = prepared.model.to_json()
    except Exception:  # noqa: BLE001 - a subclassed model without get_config
        text = prepared.model.name
    return prepared.source.describe(prepared.config).split(";")[0] + " sha256:" + \
        hashlib.sha256(text.encode()).hexdigest()[:16]


def _search_space_for(cfg: ml_collections.ConfigDict, prepared: prepare.Prepared) -> list[str]:
    """On a user's network, leaves out the space's fields that cannot reach it (with a note).

    ``model.l2`` and the other ``model.*`` knobs configure the built-in networks only; the
    search then tunes what applies to any model. An empty space becomes the learning rate
    alone.
    """
    if not prepared.source.is_users(cfg):
        return []
    space = tuning.space.from_mapping(cfg.search.space, cfg)
    kept = {k: v for k, v in space.items() if not k.startswith("model.")
            or k.startswith("model.kwargs.")}
    dropped = sorted(set(space) - set(kept))
    if not dropped:
        return []
    if not kept:
        kept = tuning.space.from_mapping("optimizer.learning_rate=log:1e-5:1e-1", cfg)
    cfg.search.space = tuning.space.to_string(kept)
    return [f"left out {', '.join(dropped)}: it configures the built-in networks, not "
            "your model (search model.kwargs.* for your builder's arguments)"]


def _finished(workdir: str) -> str | None:
    """The file that says ``workdir`` holds a finished run, if any."""
    path = os.path.join(workdir, "babysit.json")
    if os.path.exists(path) and io.read_json(path, what="babysit result").get("finished"):
        return "babysit.json"
    if os.path.exists(os.path.join(workdir, "summary.json")):
        return "summary.json"
    return None


def _continues(workdir: str, request: dict[str, Any], finished_too: bool = False) -> bool:
    """Whether ``workdir`` holds this very procedure, unfinished (or finished too)."""
    path = os.path.join(workdir, "babysit.json")
    if not os.path.exists(path):
        return False
    try:
        saved = io.read_json(path, what="babysit result")
    except ValueError:
        return False
    if saved.get("finished") and not finished_too:
        return False
    return saved.get("request") == request


def _check_workdir(workdir: str, cfg: ml_collections.ConfigDict, todo: list[str],
                   overwrite: bool) -> None:
    """Refuses a finished workdir without ``overwrite``, whatever the steps (writes nothing).

    Raises:
        ValueError: the workdir cannot be used, with the fix.
    """
    wd.check_path(workdir)
    if overwrite:
        return
    done = _finished(workdir)
    if done:
        raise ValueError(f"--workdir {workdir} already holds a finished run ({done}); use a "
                         "new workdir, or --overwrite to replace it (the old run stays until "
                         "the new one has finished)")
    if "train" in todo:
        train.check_workdir(workdir, cfg, ignore_fields=_TUNED)


# Fields the procedure itself sets (lr from the range, search winners): a resumed
# training run is compared with the procedure's earlier choice, not the recipe's.
_TUNED = (("optimizer", "learning_rate"),)


@dataclasses.dataclass
class _State:
    cfg: ml_collections.ConfigDict
    splits: data_lib.Splits
    workdir: str
    todo: list[str]
    echo: Callable[[str], None]
    model: Any = None  # the user's model or model function (None: the config's model.arch)
    prepared: Any = None  # the checked run: data, preprocessing, task, model source
    search_notes: list[str] = dataclasses.field(default_factory=list)
    shown: str = ""  # the workdir the user named (state.workdir may be its staged replacement)
    request: dict[str, Any] = dataclasses.field(default_factory=dict)
    finished: bool = False
    steps: list[Step] = dataclasses.field(default_factory=list)
    done: set[str] = dataclasses.field(default_factory=set)
    stopped: bool = False
    lr_result: Any = None
    search: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    findings: list[Any] = dataclasses.field(default_factory=list)
    batch_losses: list[float] = dataclasses.field(default_factory=list)

    def expected_lines(self) -> int:
        # sanity prints 3 lines (4 with custom layers), train 2 (training, crops)
        extra = 2 * ("sanity" in self.todo) + ("train" in self.todo)
        return max(len(self.steps), len(self.todo) + extra)


def _sanity(state: _State):
    """Initial loss, regularization, input-independent baseline, gradient check."""
    checks = [c for c in sanity.CHECKS if c != "overfit_small"]  # overfitting: its own step
    for result in sanity.iter_checks(state.cfg, splits=state.splits, checks=checks,
                                     model=state.model):
        yield _from_check(result)
    state.done.add("sanity")


def _from_check(result: sanity.CheckResult) -> Step:
    """A sanity CheckResult as a step line (its name in words, no trailing PASS/FAIL)."""
    verdict = result.verdict
    for mark in (": PASS", ": FAIL"):
        verdict = verdict.removesuffix(mark)
    return Step(result.name.replace("_", " "), result.passed, verdict, result.advice)


def _overfit(state: _State):
    """Overfit 20 examples; a failure stops the procedure (the model or pipeline is broken)."""
    (result,) = sanity.iter_checks(state.cfg, splits=state.splits, checks=["overfit_small"],
                                   model=state.model)
    yield _from_check(result)
    if not result.passed:
        state.stopped = True
        state.echo("stopping: a model that cannot overfit 20 examples will not learn the "
                   f"whole set. {result.advice}")
    state.done.add("overfit")


def _lr_range(state: _State):
    """Short runs across decades; the next steps use the low end of the good range."""
    result = lr_range.run(state.cfg, splits=state.splits, model=state.model)
    state.lr_result = result
    plot_path = os.path.join(state.workdir, "plots", "lr_range.png")
    os.makedirs(os.path.dirname(plot_path), exist_ok=True)
    lr_range.plot(result, plot_path)
    if result.range is None:
        yield Step("learning-rate range", False, result.verdict,
                   "no learning rate trained well: check the sanity steps above")
        state.stopped = True
    else:
        # The low end: short runs favour large rates that full training cannot sustain.
        chosen = float(result.range[0])
        state.cfg.optimizer.learning_rate = chosen
        yield Step("learning-rate range", True,
                   f"{result.verdict}; training uses lr {chosen:.1e}")
    state.done.add("lr_range")


def _search(state: _State):
    """Coarse-to-fine random search (tuning), its lr range centred on the lr-range result."""
    cfg = state.cfg
    if state.lr_result is not None and state.lr_result.range is not None:
        lo, hi = state.lr_result.range
        cfg.search.space = _with_lr_range(cfg.search.space, lo / SEARCH_LR_MARGIN,
                                          hi * SEARCH_LR_MARGIN)
    result = tuning.search_step(cfg, splits=state.splits, model=state.model,
                                workdir=os.path.join(state.workdir, "search"))
    state.search = result
    best = result["best"]
    if best is None:
        yield Step("search", False, "every trial exploded or failed",
                   "lower the learning-rate range in search.space (or check the lr_range step)")
        return
    for key, value in _changed_fields(cfg, result["best_config"]).items():
        branch, field = key.split(".", 1)
        cfg[branch][field] = value
    warnings = result.get("edge_warnings") or []
    yield Step("search", True,
               f"best val_acc {best['val_accuracy']:.4f} with "
               + ", ".join(f"{k}={_fmt(v)}" for k, v in best["values"].items())
               + (f"; {len(warnings)} edge warning(s)" if warnings else "")
               + (f"; {'; '.join(state.search_notes)}" if state.search_notes else ""),
               "; ".join(warnings))
    state.done.add("search")


def _train(state: _State):
    """Full training with the chosen settings and every monitor on."""
    recorder = lr_range.BatchLossRecorder()
    summary = train.run(state.cfg, state.workdir, splits=state.splits, model=state.model,
                        extra_callbacks=[recorder])
    state.summary = summary
    state.batch_losses = [float(v) for v in recorder.losses]
    io.write_json(os.path.join(state.workdir, "batch_losses.json"), state.batch_losses)
    ok = summary["stopped_reason"] == "completed"
    yield Step("train", ok,
               f"test accuracy {summary['test_accuracy']:.4f} after {summary['epochs']} "
               f"epochs ({summary['fit_seconds']:.0f} s); {summary['stopped_reason']}")
    if state.cfg.evaluate.tta == "none":
        yield Step("test-time crops", None, "skipped: evaluate.tta=none (use ten_crop where "
                   "flips and crops keep the label, e.g. CIFAR)")
    else:
        gain = summary["test_tta_accuracy"] - summary["test_accuracy"]
        yield Step("test-time crops", gain >= 0,
                   f"{summary['tta_mode']}: test accuracy {summary['test_tta_accuracy']:.4f}"
                   f" ({gain:+.4f} over a single view)")
    state.done.add("train")


def _diagnose(state: _State):
    """The lecture's reading of the curves, as findings with advice."""
    history_path = os.path.join(state.workdir, "history.csv")
    if not os.path.exists(history_path):
        yield Step("diagnosis", None, "skipped: no training history (run the train step)")
        return
    stats: dict[str, Any] = {"num_classes": state.splits.info.num_classes,
                             "loss": state.cfg.loss.name,
                             "steps_per_epoch": pipeline.steps_per_epoch(
                                 len(state.splits.train), state.cfg)}
    act_path = os.path.join(state.workdir, "activation_stats.json")
    if os.path.exists(act_path):
        records = io.read_json(act_path, what="activation statistics")
        if records:
            stats["activation_stats"] = records[-1]["layers"]
    if state.search:
        stats["search"] = state.search.get("search", {})
    findings = diagnose.diagnose(io.read_csv(history_path), stats,
                                 batch_history=state.batch_losses or None)
    state.findings = findings
    io.write_json(os.path.join(state.workdir, "findings.json"), diagnose.to_dict(findings))
    serious = [f for f in findings if f.severity in ("error", "warning")]
    verdict = ("no problems found in the curves" if not serious else
               f"{len(serious)} finding(s): " + ", ".join(f.code for f in serious))
    advice = "; ".join(f"{f.code}: {f.advice}" for f in serious)
    yield Step("diagnosis", not any(f.severity == "error" for f in findings), verdict, advice)
    state.done.add("diagnose")


def _report(state: _State):
    """report.md and report.html, with a screenshot when Chromium is available."""
    paths = report.write(state.workdir, _context(state))
    shot = os.path.join(state.workdir, "plots", "report.png")
    rendered = report.render_screenshot(paths["html"], shot)
    html = os.path.join(state.shown, os.path.relpath(paths["html"], state.workdir))
    shown_shot = os.path.join(state.shown, os.path.relpath(shot, state.workdir))
    yield Step("report", None, html + (f" (screenshot {shown_shot})" if rendered else ""))
    state.done.add("report")


_RUNNERS = {"sanity": _sanity, "overfit": _overfit, "lr_range": _lr_range, "search": _search,
            "train": _train, "diagnose": _diagnose, "report": _report}


def _context(state: _State) -> dict[str, Any]:
    """Everything the report shows, from memory and the workdir."""
    w, cfg, splits = state.workdir, state.cfg, state.splits
    p = state.prepared
    network = cfg.model.arch if p.source.kind == "config" else f"your model {p.model.name}"
    ctx: dict[str, Any] = {
        "title": f"babysit: {splits.info.name}, {network}",
        "origins": p.origins,
        "command": " ".join(["python -m recipes.babysit", *sys.argv[1:]])
        if sys.argv and sys.argv[0].endswith("babysit.py") else "",
        "config": cfg.to_dict(),
        # Every recipe derives from base, so overrides of base reproduce the run exactly.
        "config_name": "base",
        "base_config": configs.get("base").to_dict(),
        "dataset": {"name": splits.info.name, "source": splits.info.source,
                    "sizes": {"train": len(splits.train), "val": len(splits.val),
                              "test": len(splits.test)},
                    "num_classes": splits.info.num_classes},
        "steps": [dataclasses.asdict(s) for s in state.steps],
        "images": _input_images(state),
        "findings": state.findings,
    }
    history_path = os.path.join(w, "history.csv")
    if os.path.exists(history_path):
        ctx["history"] = io.read_csv(history_path)
        if state.batch_losses:
            ctx["batch_losses"] = state.batch_losses
    for key, name in (("update_ratios", "update_ratios.json"),
                      ("activation_stats", "activation_stats.json")):
        path = os.path.join(w, name)
        if os.path.exists(path):
            ctx[key] = io.read_json(path, what=key)
    first = sorted(p for p in _listdir(os.path.join(w, "plots", "first_layer")))
    if first:
        ctx["first_layer_png"] = os.path.join(w, "plots", "first_layer", first[-1])
    if state.lr_result is not None:
        ctx["lr_range_png"] = os.path.join(w, "plots", "lr_range.png")
    if state.search:
        plots = state.search.get("plots") or {}
        ctx["search"] = {"lines": state.search.get("lines", []),
                         "stages": state.search.get("stages", []),
                         "plots": [p for p in [plots.get("lr_reg"), *plots.get("params", [])]
                                   if p]}
    if state.summary:
        ctx["summary"] = state.summary
    return ctx


def _input_images(state: _State, n: int = 32) -> dict[str, Any]:
    """A training batch exactly as it enters the network: augmented, then preprocessed."""
    cfg, splits, p = state.cfg, state.splits, state.prepared
    if len(splits.info.input_shape) != 3:
        return {}  # vectors: nothing to look at as pictures
    probe = ml_collections.ConfigDict(cfg.to_dict())
    probe.train.batch_size = min(n, len(splits.train))
    probe.train.full_batch = False
    ds = pipeline.make(splits.train.x, splits.train.y, probe, training=True,
                       num_classes=splits.info.num_classes, preprocessor=p.preprocessor,
                       seed=cfg.train.seed, label_form=p.task.label_form)
    x, y = next(iter(ds))
    y = np.asarray(y)
    if p.task.label_form in ("sparse", "binary"):
        y = y.reshape(-1).astype(np.int64)  # class ids: the grid names them
    return {"x": np.asarray(x), "y": y, "class_names": list(splits.info.class_names),
            "image_shape": tuple(splits.info.input_shape)}


def _listdir(path: str) -> list[str]:
    return os.listdir(path) if os.path.isdir(path) else []


def _with_lr_range(space: str, lo: float, hi: float) -> str:
    """The search space string with its learning-rate range replaced by ``[lo, hi]``."""
    parts = [p for p in space.split(",") if p and not p.startswith("optimizer.learning_rate=")]
    return ",".join([f"optimizer.learning_rate=log:{lo:.3g}:{hi:.3g}", *parts])


def _changed_fields(cfg: ml_collections.ConfigDict, best: Any) -> dict[str, Any]:
    """Dotted fields whose value the search's best config changed."""
    best = best.to_dict() if hasattr(best, "to_dict") else best
    out = {}
    for branch, fields in best.items():
        if not isinstance(fields, dict) or branch not in cfg:
            continue
        for field, value in fields.items():
            old = cfg[branch].get(field)
            if isinstance(old, tuple) and isinstance(value, list):
                value = tuple(value)
            if isinstance(old, ml_collections.ConfigDict):
                old = old.to_dict()
            if old != value and (not isinstance(value, dict) or field == "kwargs"):
                out[f"{branch}.{field}"] = value
    return out


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _save(state: _State) -> None:
    io.write_json(os.path.join(state.workdir, "babysit.json"), _result(state))


def _result(state: _State) -> dict[str, Any]:
    return {"steps": [dataclasses.asdict(s) for s in state.steps],
            "stopped": state.stopped,
            "finished": state.finished,
            "request": state.request,
            "summary": state.summary or {},
            "findings": diagnose.to_dict(state.findings) if state.findings else [],
            "config": io.json_ready(state.cfg.to_dict())}


def main(argv: list[str] | None = None) -> None:
    """``python -m recipes.babysit``: see the module docstring."""
    from absl import flags

    if "steps" not in flags.FLAGS:
        flags.DEFINE_string("steps", None, "Comma list of steps, or 'all' (default: the "
                            f"config's babysit.steps). Steps: {', '.join(STEPS)}.")

    def job(cfg: ml_collections.ConfigDict, f: Any) -> None:
        if f.verbose is None:  # one line per step; --verbose=2 shows Keras's epoch lines too
            cfg.train.verbose = 0
        keras.utils.set_random_seed(cfg.train.seed)
        run(cfg, f.workdir, steps=f.steps, overwrite=f.overwrite)

    cli.main_for(job, argv if argv is not None else sys.argv, prog="recipes.babysit")


if __name__ == "__main__":
    main()
