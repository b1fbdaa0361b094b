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
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import keras
import ml_collections
import numpy as np

import tuning
from recipes import (
    causes,
    cli,
    configs,
    diagnose,
    io,
    lr_range,
    pipeline,
    preflight,
    prepare,
    repair,
    report,
    sanity,
    train,
)
from recipes import data as data_lib
from recipes import workdir as wd

#: The procedure's steps, in the order they run. "all" runs every one.
STEPS = ("checks", "sanity", "overfit", "lr_range", "search", "train", "diagnose", "repair",
         "report")
#: With ``fit=`` (the user's own run, as written): check, run it, read it, repair it.
FIT_STEPS = ("checks", "train", "diagnose", "repair", "report")
#: The ``model.fit`` arguments ``fit=`` takes, and the config field each one sets.
FIT_FIELDS = {"epochs": ("train", "epochs"), "batch_size": ("train", "batch_size"),
              "shuffle": ("train", "shuffle"), "validation_split": ("dataset", "val_size"),
              "verbose": ("train", "verbose")}
REPAIR_MIN_SECONDS = 10.0  # the repair budget's floor: a run of a second cannot be mended in two
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
        fit: dict[str, Any] | None = None, steps: str | list[str] | None = None,
        splits: data_lib.Splits | None = None, overwrite: bool = False,
        echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs the babysitting procedure on ``config`` and writes everything into ``workdir``.

    Args:
        config: a full or partial config tree (None: the defaults).
        workdir: the procedure's directory; the first training run's artifacts go here,
            the repair attempts under ``repairs/``, the final model to ``final.keras``.
        model: the user's network instead of ``model.arch``: a ``keras.Model`` (compiled or
            not; every step trains a fresh copy, ``keras.models.clone_model``) or a function
            returning one. What it was compiled with is kept where ``config`` is silent.
        data: the user's data instead of ``config.dataset``: ``(x, y)``,
            ``(x_train, y_train, x_test, y_test)``, a pair of ``tf.data`` datasets or
            ``recipes.data.Splits``.
        fit: the user's own ``model.fit`` settings (``epochs``, ``batch_size``, ``shuffle``,
            ``validation_split``): the first training run is then the run as written — the
            data as given (no preprocessing), the model's optimizer and loss, the last
            epoch's weights — and the steps default to :data:`FIT_STEPS`. Without a
            validation split (``validation_split`` absent or 0) ``dataset.val_size`` (10 %)
            is held out all the same: every diagnosis and repair is judged on it.
        steps: ``"all"`` (default: ``config.babysit.steps``) or a subset, comma separated.
        splits: already-loaded ``Splits`` (the older name of ``data``).
        overwrite: replace a finished procedure in ``workdir``.
        echo: where each step's line goes (``print``; ``lambda s: None`` for silence).

    Returns:
        ``{"steps", "findings", "repairs", "final", "verdict", "summary", "config", ...}``,
        also written to ``workdir/babysit.json``.

    Raises:
        ValueError: a bad config field, bad data or an unusable workdir (before any step).
    """
    wd.check_path(workdir)
    data = data if data is not None else splits
    if fit is not None:
        config = as_given(config, fit, users_data=data is not None)
    # Every field, the data and the model are checked before any step writes a byte.
    prepared, aid = _prepare(config, model, data, fit)
    cfg, splits = prepared.config, prepared.splits
    default = ",".join(FIT_STEPS) if fit is not None else cfg.babysit.steps
    todo = parse_steps(steps if steps is not None else default)
    request = _request(cfg, todo, prepared)
    _check_workdir(workdir, cfg, todo, overwrite)
    notes = _search_space_for(cfg, prepared) if "search" in todo else []
    if "search" in todo:
        tuning.search.check_space_values(cfg, tuning.space.from_mapping(cfg.search.space, cfg),
                                         splits, model=aid.model)
    wd.check_space(workdir, train.checkpoint_bytes(prepared.model) + (1 << 20))
    with wd.locked(workdir):
        wd.recover(workdir)  # what a replacement killed mid-swap left behind
        _check_workdir(workdir, cfg, todo, overwrite)  # it may have changed meanwhile
        state = _State(cfg=cfg, splits=splits, workdir=workdir, todo=todo, echo=echo,
                       model=aid.model, prepared=prepared, shown=workdir, request=request,
                       search_notes=notes, aid=aid, fit=fit)
        if overwrite and wd.holds_files(workdir) and not _continues(workdir, request):
            with wd.replacing(workdir, can_continue=lambda d: _continues(d, request, True)) as d:
                state.workdir = d
                return _run_steps(state)
        return _run_steps(state)


def as_given(config: Any, fit: dict[str, Any], *, users_data: bool) -> dict[str, Any]:
    """The config of the user's own run, as written: ``fit``'s settings, nothing added.

    Keras' ``fit`` keeps the last epoch's weights, shuffles, uses no schedule; the user's
    arrays go in as given (``dataset.preprocess=none``) unless ``config`` says otherwise.
    The result is a partial tree: the model's compiled loss and optimizer fill the rest
    (``recipes.prepare.resolve``).

    Raises:
        ValueError: ``fit`` holds a key babysit cannot honour, or is not a dict.
    """
    if not isinstance(fit, dict):
        raise ValueError(f"fit={fit!r}: give a dict of model.fit settings, e.g. "
                         "fit={'epochs': 20, 'batch_size': 32}")
    unknown = sorted(set(fit) - set(FIT_FIELDS))
    if unknown:
        raise ValueError(f"fit: {', '.join(unknown)} not supported; babysit takes "
                         f"{', '.join(FIT_FIELDS)} (the data goes in data=)")
    tree = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
    tree = {k: dict(v) if isinstance(v, dict) else v for k, v in tree.items()}
    given = {(b, f) for b, fields in tree.items() if isinstance(fields, dict) for f in fields}
    defaults = {("train", "epochs"): 1, ("train", "batch_size"): 32, ("train", "verbose"): 0,
                ("train", "restore_best"): False, ("train", "prior_bias"): False}
    if users_data:
        defaults[("dataset", "preprocess")] = "none"
    values = {k: v for k, v in defaults.items() if k not in given}
    values.update({FIT_FIELDS[k]: v for k, v in fit.items()  # fit= is the user's word ...
                   if k != "validation_split" or v})  # ... but repairs need a val split
    for (branch, field), value in values.items():
        tree.setdefault(branch, {})[field] = value
    return tree


def _prepare(config: Any, model: Any, data: Any, fit: dict[str, Any] | None
             ) -> tuple[prepare.Prepared, _FirstAid]:
    """``prepare`` the run; a network too broken to start gets its checks' first fix.

    Where the model and labels cannot even be paired (output units ≠ classes, class ids
    scaled like pixels), the checks before training name the cause; its first remedy is
    applied here so the procedure can run, and the repair table shows it as round 0.

    Raises:
        ValueError: the original error, when no check explains it with a remedy.
    """
    try:
        return prepare.prepare(config, model=model, data=data), _FirstAid(model, data, config)
    except ValueError as error:
        if model is None and data is None:
            raise
        checks = preflight.run(config, model=model, data=data,
                               fit=fit if model is not None else None)
        top = next((f for f in checks if f.severity == "error" and f.remedies), None)
        if top is None:
            raise
        base = repair.Attempt("as given", config, model, data, "")
        classes, multilabel = _classes_of(config, data)
        fixed = repair.apply(base, top.remedies[0], label="before training", workdir="",
                             num_classes=classes, multilabel=multilabel)
        try:
            prepared = prepare.prepare(fixed.config, model=fixed.model, data=fixed.data)
        except ValueError:
            raise error from None
        return prepared, _FirstAid(fixed.model, fixed.data, fixed.config, str(error), checks,
                                   top, top.remedies[0])


def _classes_of(config: Any, data: Any) -> tuple[int, bool]:
    """C and multi-label as the data says (2, False when the labels cannot be read yet)."""
    try:
        info = prepare.load_splits(configs.complete(config), data).info
    except ValueError:
        return 2, False
    return int(info.num_classes), bool(info.multilabel)


@dataclasses.dataclass
class _FirstAid:
    """What the procedure runs on: the user's network and data, or their first-aid fix."""

    model: Any
    data: Any
    config: Any
    error: str = ""  # why the run as given could not start
    checks: list[causes.Finding] = dataclasses.field(default_factory=list)
    finding: causes.Finding | None = None
    remedy: causes.Remedy | None = None


def _run_steps(state: _State) -> dict[str, Any]:
    """The steps, in ``state.workdir``; a finished procedure found there is returned as is."""
    path = os.path.join(state.workdir, "babysit.json")
    if os.path.exists(path) and io.read_json(path, what="babysit result").get("finished"):
        return io.read_json(path, what="babysit result")  # a staged run killed before its swap
    with io.logs_to(os.path.join(state.workdir, "babysit.log")):
        return _steps_in_order(state)


def _steps_in_order(state: _State) -> dict[str, Any]:
    """Runs each step of ``state.todo``, then the conclusion; saves after each."""
    for name in state.todo:
        if state.stopped:
            break
        if name == "report":
            _conclude(state)
        if name in _STARTS:  # a step that takes more than a few seconds says so first
            state.echo(f"{'':8}{_STARTS[name](state)} ...")
        start = time.time()
        for step in _RUNNERS[name](state):
            step.seconds = round(time.time() - start, 1)
            state.steps.append(step)
            state.echo(step.line(len(state.steps), state.expected_lines()))
            start = time.time()
        _save(state)
    _conclude(state)
    if state.stopped and "report" in state.todo and "report" not in state.done:
        for step in _report(state):
            state.steps.append(step)
            state.echo(step.line(len(state.steps), len(state.steps)))
    state.finished = True
    _save(state)
    for line in closing_lines(state):
        state.echo(line)
    return _result(state)


def _train_start(state: _State) -> str:
    t = state.cfg.train
    what = "the run as given" if state.fit is not None else "training"
    return f"{what}: {t.epochs} epochs, batch {t.batch_size}, every monitor on"


def _search_start(state: _State) -> str:
    stages = tuning.narrowing.parse_stages(state.cfg.search.stages)
    return (f"search: {sum(st.trials for st in stages)} short trials in {len(stages)} "
            "stage(s), coarse to fine")


_STARTS: dict[str, Callable[[_State], str]] = {
    "sanity": lambda state: "sanity: the initial loss and a raised regularization",
    "overfit": lambda state: "overfit: training on a tiny subset until it is memorized",
    "lr_range": lambda state: (f"lr range: {state.cfg.babysit.lr_points} short runs "
                               f"across {state.cfg.babysit.lr_min:g} .. "
                               f"{state.cfg.babysit.lr_max:g}"),
    "search": _search_start,
    "train": _train_start,
    "repair": lambda state: (f"repair: up to {state.cfg.babysit.repair_rounds} round(s) of "
                             "retraining with the top remedy"),
}


def closing_lines(state: _State) -> list[str]:
    """The block a run ends on: the verdict, where the report and curves are, what next."""
    if not state.verdict:
        return []
    lines = [f"verdict: {state.verdict[0]}{_weights_used(state)}"]
    html = os.path.join(state.shown, "report.html")
    if "report" in state.done:
        shot = os.path.join(state.workdir, "plots", "report.png")
        lines.append(f"report:  open file://{os.path.abspath(html)}"
                     + ("" if os.path.exists(shot) else "  (no PNG screenshot: see above)"))
    tb = os.path.join(state.shown, "tensorboard")
    if os.path.isdir(os.path.join(state.workdir, "tensorboard")):
        lines.append(f"curves:  tensorboard --logdir {os.path.abspath(tb)}")
    nxt = [v.removeprefix("next: ") for v in state.verdict[1:] if v.startswith("next: ")]
    lines.append(f"next:    {nxt[0]}" if nxt else
                 f"next:    python -m recipes.predict "
                 f"--workdir={os.path.normpath(state.final.get('run', state.shown))} "
                 "--input=YOUR_INPUTS.npz --out=predictions.csv")
    return lines


def _weights_used(state: _State) -> str:
    """Which weights the test accuracy comes from, in words."""
    s = state.summary or {}
    if s.get("best_epoch"):
        return f" (epoch {s['best_epoch']}'s weights: the best on validation)"
    if s.get("epochs"):
        return f" (the last epoch's weights, epoch {s['epochs']})"
    return ""


def _conclude(state: _State) -> None:
    """The final model: the best validated run, tested once; then the verdict lines."""
    best = state.best
    if best is None or state.final:
        return
    p = prepare.prepare(best.config, model=best.model, data=best.data)
    model_path = os.path.join(best.workdir, "model.keras")
    with warnings.catch_warnings():  # the fresh model's optimizer has no slots yet
        warnings.simplefilter("ignore", UserWarning)
        p.model.load_weights(model_path)
    scores = train.test_scores(p)
    summary_path = os.path.join(best.workdir, "summary.json")
    best.summary.update(scores)
    io.write_json(summary_path, best.summary)
    final_path = os.path.join(state.workdir, "final.keras")
    train.save_model(p.model, final_path)
    later = [r for r in state.repairs if r.round > 0]
    seconds = state.base.seconds + sum(r.seconds for r in later)
    fit_seconds = state.base.fit_seconds + sum(r.fit_seconds for r in later)
    state.summary = best.summary
    state.final = {**scores, "val_accuracy": best.val_accuracy, "label": best.label,
                   "changes": best.change, "transforms": list(best.transforms),
                   "seconds": round(seconds, 1), "as_given_seconds": state.base.seconds,
                   "fit_seconds": round(fit_seconds, 2),
                   "as_given_fit_seconds": state.base.fit_seconds,
                   "model": os.path.join(state.shown, "final.keras"),
                   "run": os.path.join(state.shown, os.path.relpath(best.workdir,
                                                                    state.workdir))}
    state.verdict = verdict_lines(state)  # said at the very end (closing_lines)


def verdict_lines(state: _State) -> list[str]:
    """The verdict: the final accuracy, what was found and repaired, the next command."""
    final, rows = state.final, [r for r in state.repairs if r.kept]
    acc = final.get("test_tta_accuracy", final.get("test_accuracy", math.nan))
    problems = [f for f in state.findings if causes.serious(f)]
    head = f"test accuracy {acc:.4f}"
    if rows:
        fixed = "; ".join(f"{r.cause}, {r.change}, {_points(r)}" for r in rows)
        causes_fixed = {r.cause for r in rows}
        left = [f for f in state.best.problems() if causes.serious(f)
                and f.cause not in causes_fixed]
        head += (f"; {len(causes_fixed)} problem(s) found and repaired: {fixed}"
                 + (f"; {len(left)} more not repaired" if left else ""))
    elif problems:
        head += (f"; {len(problems)} problem(s) found ({', '.join(f.cause for f in problems)})"
                 + (", no remedy improved validation accuracy" if state.repairs else ""))
    else:
        head += "; no problems found"
    lines = [head]
    nxt = _next_step(state)
    if nxt:
        lines.append(f"next: {nxt}")
    return lines


def _points(r: repair.Repair) -> str:
    if not math.isfinite(r.val_accuracy_before):
        return f"val accuracy {r.val_accuracy_after:.4f} (could not start as given)"
    return f"{100 * (r.val_accuracy_after - r.val_accuracy_before):+.1f} points"


def _next_step(state: _State) -> str:
    """The next command for a problem still open with a remedy the loop did not try."""
    tried = {(r.cause, r.change) for r in state.repairs}
    best = state.best
    findings = best.problems() if best is not None and best is not state.base \
        else state.findings
    for f in findings:
        if not causes.serious(f):
            continue
        for r in f.remedies:
            if (f.cause, r.text) in tried:
                continue
            if r.transform == "lr_range":
                return f"{f.cause}: {r.text} (the lr_range step: --steps=all)"
            if not r.change:
                return f"{f.cause}: {r.text} (models.transform.{r.transform} on your model)"
            flags = causes.flags_for({**(best.change if best else {}), **r.change})
            command = _command()
            return f"{f.cause}: {r.text}: " + (f"{command} {flags}" if command else
                                               f"config overrides {flags}")
    return ""


def _command() -> str:
    """The command line that ran this procedure without its workdir; "" from Python."""
    if not (sys.argv and sys.argv[0].endswith(("babysit.py", "babysit", "__main__.py"))):
        return ""
    kept = [a for a in sys.argv[1:] if not a.startswith(("--workdir", "--overwrite"))]
    return " ".join(["python -m recipes.babysit", *kept, "--workdir=NEW_DIR"])


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
    aid: _FirstAid | None = None  # the network and data the runs use (and a first-aid fix)
    fit: dict[str, Any] | None = None  # the user's own fit settings (the run as written)
    checks: list[Any] = dataclasses.field(default_factory=list)  # before training
    base: repair.Attempt | None = None  # the first training run
    best: repair.Attempt | None = None  # the best validated run (after the repairs)
    repairs: list[repair.Repair] = dataclasses.field(default_factory=list)
    final: dict[str, Any] = dataclasses.field(default_factory=dict)
    verdict: list[str] = dataclasses.field(default_factory=list)

    def expected_lines(self) -> int:
        # sanity prints 3 lines (4 with custom layers)
        extra = 2 * ("sanity" in self.todo)
        return max(len(self.steps), len(self.todo) + extra)

    @property
    def users_model(self) -> bool:
        return self.prepared.source.is_users(self.cfg)


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
        then = ("the search spans it" if "search" in state.todo
                else f"training uses lr {chosen:.1e}")
        yield Step("learning-rate range", True, f"{result.verdict}; {then}")
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


def _checks(state: _State):
    """The checks before training: output vs loss vs labels, input scale, the network."""
    aid = state.aid
    checks = aid.checks if aid.error else preflight.run(
        aid.config, model=aid.model, data=aid.data if aid.data is not None else state.splits,
        fit=state.fit if aid.model is not None else None)
    state.checks = checks
    problems = [f for f in checks if causes.serious(f)]
    if not problems:
        yield Step("checks before training", True, "output, loss, labels, inputs and "
                   "network agree")
    else:
        errors = any(f.severity == "error" for f in problems)
        yield Step("checks before training", False if errors else None,
                   f"{len(problems)} problem(s): " + "; ".join(
                       f"{f.cause} ({f.evidence})" for f in problems[:3]),
                   "; ".join(causes.describe(f) for f in problems))
    state.done.add("checks")


def _train(state: _State):
    """The first training run (the run as written with ``fit=``), every monitor on.

    The test split is not read here: the procedure evaluates its final, best validated
    model once, at the end.
    """
    aid = state.aid
    label = "as given" if state.fit is not None else "train"
    base = repair.Attempt(label, state.cfg, aid.model, state.splits, state.workdir)
    search = state.search.get("search", {}) if state.search else None
    repair.run_attempt(base, users_model=state.users_model, catch=False, search=search,
                       echo=state.echo)
    state.base = state.best = base
    state.summary = base.summary
    state.batch_losses = io.read_json(os.path.join(state.workdir, "batch_losses.json"),
                                      what="per-step losses")
    if aid.error:
        state.repairs.append(_first_aid_row(state, base))
    s = base.summary
    kept = f", epoch {s['best_epoch']}'s weights kept" if s.get("best_epoch") else ""
    yield Step("train", s["stopped_reason"] == "completed",
               f"val accuracy {s.get('val_accuracy', math.nan):.4f} after {s['epochs']} "
               f"epochs{kept} ({s['fit_seconds']:.0f} s); {s['stopped_reason']}"
               + (f"; as given it could not start, so: {aid.remedy.text}" if aid.error else ""))
    state.done.add("train")


def _first_aid_row(state: _State, base: repair.Attempt) -> repair.Repair:
    """Round 0 of the repair table: the fix without which the run as given cannot start."""
    aid = state.aid
    return repair.Repair(0, aid.finding.cause, aid.remedy.text, dict(aid.remedy.change),
                         aid.remedy.transform, math.nan, base.val_accuracy, True,
                         base.seconds, aid.remedy.flags(), state.workdir,
                         f"the run as given could not start: {aid.error}", base.fit_seconds)


def _diagnose(state: _State):
    """The lecture's reading of the curves, with the checks', as one resolved list."""
    if state.base is None:
        yield Step("diagnosis", None, "skipped: no training run (run the train step)")
        return
    # After first aid the checks' problem is fixed in every run: the loop must not see it
    # again, but the findings of the run as given keep it.
    state.base.checks = state.checks if not state.aid.error else []
    findings = causes.resolve([*state.checks, *state.base.findings])
    state.findings = findings
    io.write_json(os.path.join(state.workdir, "findings.json"), diagnose.to_dict(findings))
    serious = [f for f in findings if causes.serious(f)]
    verdict = ("no problems found" if not serious else
               f"{len(serious)} problem(s): " + ", ".join(f.cause for f in serious))
    advice = "; ".join(causes.describe(f) for f in serious)
    yield Step("diagnosis", not any(f.severity == "error" for f in serious), verdict, advice)
    state.done.add("diagnose")


def _repair(state: _State):
    """Apply the top remedy, retrain with the same budget, keep it only if val improves."""
    if state.base is None:
        yield Step("repair", None, "skipped: no training run to repair")
        return
    b = state.cfg.babysit
    budget = max(float(b.repair_budget) * state.base.planned_fit_seconds, REPAIR_MIN_SECONDS)
    info = state.splits.info
    best, rows = repair.loop(state.base, root=os.path.join(state.workdir, "repairs"),
                             rounds=int(b.repair_rounds), budget=budget,
                             users_model=state.users_model, num_classes=info.num_classes,
                             multilabel=bool(info.multilabel), echo=state.echo)
    state.best = best
    state.repairs += rows
    kept = [r for r in rows if r.kept]
    if not rows:
        verdict = "nothing to repair" if not any(causes.serious(f) for f in state.findings) \
            else "no remedy left to try"
    else:
        verdict = (f"{len(rows)} tried, {len(kept)} kept"
                   + (": " + "; ".join(f"{r.cause} ({r.change})" for r in kept) if kept else "")
                   + f"; val accuracy {repair.accuracy_text(state.base.val_accuracy)} → "
                   f"{repair.accuracy_text(best.val_accuracy)}")
    yield Step("repair", None if not kept else True, verdict)
    state.done.add("repair")


def _report(state: _State):
    """report.md and report.html, with a screenshot when Chromium is available."""
    paths = report.write(state.workdir, _context(state))
    shot = os.path.join(state.workdir, "plots", "report.png")
    html = os.path.join(state.shown, os.path.relpath(paths["html"], state.workdir))
    shown_shot = os.path.join(state.shown, os.path.relpath(shot, state.workdir))
    yield Step("report", None, f"{html} {report.screenshot(paths['html'], shot, shown=shown_shot)}")
    state.done.add("report")


_RUNNERS = {"checks": _checks, "sanity": _sanity, "overfit": _overfit,
            "lr_range": _lr_range, "search": _search, "train": _train,
            "diagnose": _diagnose, "repair": _repair, "report": _report}


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
        "verdict": state.verdict,
        "repairs": [r.to_dict() for r in state.repairs] if "repair" in state.done else None,
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
            "verdict": state.verdict,
            "findings": diagnose.to_dict(state.findings) if state.findings else [],
            "repairs": repair.summary_rows(state.repairs),
            "final": io.json_ready(state.final),
            "summary": io.json_ready(state.summary or {}),
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
