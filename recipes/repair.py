"""The repair loop: apply the top remedy, retrain with the same budget, keep it if it helps.

AUTOTRAINER (Zhang et al., ICSE 2021) detects a training problem, retrains with candidate
repairs and keeps the one that works; CS231n lecture 6 reads the same symptoms by eye.
Here the cause comes from ``recipes.causes`` (one vocabulary, one resolution rule), the
remedies are config overrides or a named ``models.transform`` of the user's network, and
a change is kept only when the validation accuracy improves. The test split is never
read: the caller evaluates the final, best validated model once.

Each attempt trains in its own directory under ``WORKDIR/repairs/``; a round tries the
top cause's candidate remedies in order until one improves or ``babysit.repair_budget``
(a multiple of the first run's training seconds) is spent.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import ml_collections
import numpy as np

from models import transform as transforms
from recipes import causes, diagnose, io, lr_range, pipeline, preflight, tasks, train
from recipes import data as data_lib
from recipes.callbacks.progress import EpochETA
from recipes.callbacks.stuck import StopWhenFlat, chance_bound
from recipes.causes import Finding, Remedy

__all__ = ["Attempt", "Repair", "run_attempt", "context_of", "loop", "apply",
           "accuracy_text", "chance_of"]


@dataclasses.dataclass
class Attempt:
    """One training run of the procedure: its settings, where it ran and what it showed."""

    label: str
    config: ml_collections.ConfigDict
    model: Any  # what train.run gets as model= (None: the config's model.arch)
    data: Any  # what train.run gets as data=
    workdir: str
    change: dict[str, Any] = dataclasses.field(default_factory=dict)  # vs the run as given
    transforms: tuple[str, ...] = ()
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)
    findings: list[Finding] = dataclasses.field(default_factory=list)
    checks: list[Finding] = dataclasses.field(default_factory=list)  # before training
    seconds: float = 0.0
    error: str = ""  # why it could not train (a mismatch the checks found)

    @property
    def val_accuracy(self) -> float:
        """The validation accuracy of the weights it kept (NaN when it could not train)."""
        return float(self.summary.get("val_accuracy", math.nan))

    @property
    def fit_seconds(self) -> float:
        return float(self.summary.get("fit_seconds", self.seconds))

    @property
    def planned_fit_seconds(self) -> float:
        """Its training time had it run every planned epoch (a stopped run is scaled up)."""
        run = max(int(self.summary.get("epochs", 0)), 1)
        planned = max(int(self.summary.get("epochs_planned", run)), run)
        return self.fit_seconds * planned / run

    def problems(self) -> list[Finding]:
        """Its checks and curve findings, resolved into one ordered list."""
        return causes.resolve([*self.checks, *self.findings])


@dataclasses.dataclass
class Repair:
    """One tried remedy: a row of the report's repair table and of ``babysit.json``."""

    round: int
    cause: str
    change: str  # the remedy in words
    overrides: dict[str, Any]
    transform: str
    val_accuracy_before: float
    val_accuracy_after: float
    kept: bool
    seconds: float  # the attempt's wall time: preparing, training, evaluating
    flags: str = ""
    workdir: str = ""
    note: str = ""
    fit_seconds: float = 0.0  # model.fit alone

    def to_dict(self) -> dict[str, Any]:
        return io.json_ready(dataclasses.asdict(self))


def context_of(cfg: ml_collections.ConfigDict, *, users_model: bool, train_size: int
               ) -> causes.Context:
    """The remedies' context: the run's lr, batch, epochs and what kind of network it is.

    A user's dropout rates are read by the checks before training (``recipes.preflight``);
    here only the built-in network's ``model.dropout`` is known.
    """
    dropout = 0.0 if users_model else float(cfg.model.dropout or 0.0)
    return causes.Context(learning_rate=float(cfg.optimizer.learning_rate),
                          batch_size=int(cfg.train.batch_size), epochs=int(cfg.train.epochs),
                          train_size=int(train_size), users_model=users_model,
                          activation=str(cfg.model.activation), dropout=dropout,
                          restore_best=bool(cfg.train.restore_best))


def run_attempt(a: Attempt, *, users_model: bool, catch: bool = True,
                search: dict | None = None, echo: Callable[[str], None] | None = None
                ) -> Attempt:
    """Trains ``a`` (test split unread) and diagnoses its curves; fills summary and findings.

    With ``catch``, a training run that fails on a value error (a network the checks
    flagged as broken) becomes an attempt with ``error`` set rather than an exception.
    With ``echo``, a quiet run says how far it is every 10 s (``EpochETA``).
    """
    start = time.time()
    recorder = lr_range.BatchLossRecorder()
    flat = StopWhenFlat(int(a.config.train.epochs), chance=chance_of(a.data, a.config))
    extra = [recorder, flat]
    if echo is not None and not int(a.config.train.verbose):
        extra.append(EpochETA(echo, a.label))
    try:
        a.summary = train.run(a.config, a.workdir, model=a.model, data=a.data, test=False,
                              extra_callbacks=extra)
    except ValueError as e:
        if not catch:
            raise
        a.error, a.seconds = str(e), round(time.time() - start, 1)
        return a
    io.write_json(os.path.join(a.workdir, "batch_losses.json"),
                  [float(v) for v in recorder.losses])
    a.seconds = round(time.time() - start, 1)
    if flat.stopped_epoch:
        a.summary["stopped_reason"] = flat.reason()
    a.findings = findings_of(a, users_model=users_model, search=search)
    return a


def chance_of(data: Any, cfg: ml_collections.ConfigDict) -> float | None:
    """The validation accuracy of a network that learnt nothing, for :class:`StopWhenFlat`.

    Read from the labels the caller gave (arrays or ``Splits``): the largest class's share,
    plus the noise of a validation split of ``dataset.val_size``. None where the labels are
    not at hand (a named dataset, ``tf.data``) or are not class ids (multi-label tags).
    """
    if isinstance(data, data_lib.Splits):
        y, n_val = (data.val.y, len(data.val)) if len(data.val) else (data.train.y, 0)
    elif isinstance(data, (tuple, list)) and len(data) in (2, 4) \
            and all(hasattr(v, "shape") for v in data[:2]):
        y, n_val = data[1], 0
    else:
        return None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        if not np.allclose(y.sum(axis=1), 1.0):
            return None  # multi-label tags
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if not len(y) or not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
        return None  # not class ids (scaled labels are relabelled first)
    if not n_val:
        size = float(cfg.dataset.get("val_size", 0.1) or 0.1)
        n_val = int(round(size * len(y))) if size < 1 else int(size)
    share = np.unique(y, return_counts=True)[1].max() / len(y)
    return chance_bound(float(share), n_val)


def findings_of(a: Attempt, *, users_model: bool, search: dict | None = None) -> list[Finding]:
    """The diagnosis of ``a``'s finished run, with remedies for its settings."""
    cfg, s = a.config, a.summary
    n_train = int(s.get("num_train", 0))
    return diagnose.read_run(
        a.workdir, num_classes=_num_classes(s),
        loss="svm" if str(cfg.loss.name) in ("svm", "hinge") else "softmax",  # chance: ln C
        steps_per_epoch=pipeline.steps_per_epoch(n_train, cfg) if n_train else None,
        search=search, context=context_of(cfg, users_model=users_model, train_size=n_train),
        num_val=int(s.get("num_val", 0)), planned_epochs=int(s.get("epochs_planned", 0)))


def _num_classes(summary: dict[str, Any]) -> int:
    return len(summary.get("class_names") or []) or 10


# -- applying a remedy -------------------------------------------------------------------------

def apply(base: Attempt, remedy: Remedy, *, label: str, workdir: str,
          num_classes: int, multilabel: bool) -> Attempt:
    """A new attempt: ``base`` with ``remedy``'s overrides and transformation applied.

    Raises:
        ValueError: the transformation cannot apply to this network (e.g. subclassed).
    """
    cfg = ml_collections.ConfigDict(copy.deepcopy(_tree(base.config)))
    for path, value in remedy.change.items():
        branch, field = path.split(".", 1)
        if branch not in cfg:
            cfg[branch] = ml_collections.ConfigDict()
        cfg[branch][field] = tuple(value) if isinstance(value, list) else value
    model, data = base.model, base.data
    change = dict(remedy.change)
    if remedy.transform == "relabel":
        data = preflight.relabel_splits(data)
    elif remedy.transform == "lr_range":
        change["optimizer.learning_rate"] = measured_lr(cfg, model, data)
        cfg.optimizer.learning_rate = change["optimizer.learning_rate"]
    elif remedy.transform:
        model = _transformed(base.model, remedy.transform, num_classes=num_classes,
                             multilabel=multilabel)
    transform = remedy.transform if remedy.transform not in ("", "lr_range") else ""
    return Attempt(label, cfg, model, data, workdir, change={**base.change, **change},
                   transforms=base.transforms + ((transform,) if transform else ()))


def measured_lr(cfg: ml_collections.ConfigDict, model: Any, data: Any) -> float:
    """The low end of the lr range test's good range (as the procedure's lr_range step).

    Raises:
        ValueError: no learning rate trained well.
    """
    splits = data if isinstance(data, data_lib.Splits) else None
    result = lr_range.run(cfg, splits=splits, model=model,
                          data=None if splits is not None else data)
    if result.range is None:
        raise ValueError(f"the lr range test found no learning rate that trains: "
                         f"{result.verdict}")
    return float(f"{result.range[0]:.3g}")


def _tree(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def _transformed(model: Any, name: str, *, num_classes: int, multilabel: bool) -> keras.Model:
    """The user's network with ``name`` applied, compiled as the user compiled it."""
    source = model() if callable(model) and not isinstance(model, keras.Model) else model
    kwargs: dict[str, Any] = {}
    if name == "fix_output":
        kind = ("multilabel" if multilabel else
                "binary" if num_classes == 2 and tasks.output_units(source) == 1
                else "multiclass")
        kwargs = {"kind": kind, "num_classes": num_classes}
    new = transforms.apply(name, source, **kwargs)
    compiled = source.get_compile_config() if getattr(source, "compiled", False) else None
    if compiled:
        new.compile_from_config(compiled)
    return new


# -- the loop ----------------------------------------------------------------------------------

@dataclasses.dataclass
class _Loop:
    root: str
    rounds: int
    budget: float  # seconds of repair training allowed (math.inf: no first run to scale)
    users_model: bool
    num_classes: int
    multilabel: bool
    echo: Callable[[str], None]
    spent: float = 0.0
    tried: set = dataclasses.field(default_factory=set)
    repairs: list[Repair] = dataclasses.field(default_factory=list)


def loop(base: Attempt, *, root: str, rounds: int, budget: float, users_model: bool,
         num_classes: int, multilabel: bool, echo: Callable[[str], None] = print
         ) -> tuple[Attempt, list[Repair]]:
    """Repairs ``base`` round by round; returns the best validated attempt and the rows.

    Args:
        base: the run as given, trained (or failed, with ``error`` set) and diagnosed.
        root: the directory of the attempts (``WORKDIR/repairs``).
        rounds: ``babysit.repair_rounds``.
        budget: ``babysit.repair_budget`` × the first run's training seconds.
        users_model: remedies transform the user's network instead of ``model.*`` fields.
        num_classes: C of the labels.
        multilabel: the labels are 0/1 tags.
        echo: where each tried remedy's line goes.
    """
    state = _Loop(root, rounds, budget, users_model, num_classes, multilabel, echo)
    best = base
    for index in range(1, rounds + 1):
        top = _next_problem(best, state)
        if top is None:
            break
        best, tried_any = _round(state, index, best, top)
        if not tried_any:
            break
    return best, state.repairs


def _next_problem(best: Attempt, state: _Loop) -> Finding | None:
    """The most serious unexplained problem with a remedy not tried yet, if any."""
    for f in best.problems():
        if causes.serious(f) and any(_key(f.cause, r) not in state.tried for r in f.remedies):
            return f
    return None


def _key(cause: str, r: Remedy) -> str:
    return f"{cause}|{sorted(r.change.items())!r}|{r.transform}"


def _round(state: _Loop, index: int, best: Attempt, top: Finding) -> tuple[Attempt, bool]:
    """Tries ``top``'s remedies in order until one improves ``best`` or the budget ends."""
    tried_any = False
    for k, remedy in enumerate(top.remedies):
        key = _key(top.cause, remedy)
        if key in state.tried:
            continue
        state.tried.add(key)
        cost = _estimate(best, remedy)
        if state.spent + cost > state.budget:
            state.echo(f"repair: skipped {remedy.text} (about {cost:.0f} s; the repair budget "
                       f"has {max(state.budget - state.spent, 0):.0f} s left)")
            continue
        cand = _try(state, index, k, best, top, remedy)
        tried_any = True
        if cand is not None and _better(cand, best):
            return cand, True
    return best, tried_any


def _estimate(best: Attempt, remedy: Remedy) -> float:
    """Seconds a retrain with ``remedy`` should take: the run's, scaled by its epochs."""
    epochs = float(remedy.change.get("train.epochs", best.config.train.epochs))
    if remedy.transform == "lr_range":  # the range runs come first
        b = best.config.babysit
        epochs += float(b.lr_points) * float(b.lr_epochs)
    return best.planned_fit_seconds * epochs / max(float(best.config.train.epochs), 1.0)


def _better(cand: Attempt, best: Attempt) -> bool:
    if cand.error or not math.isfinite(cand.val_accuracy):
        return False
    return not math.isfinite(best.val_accuracy) or cand.val_accuracy > best.val_accuracy


def _try(state: _Loop, index: int, k: int, best: Attempt, top: Finding, remedy: Remedy
         ) -> Attempt | None:
    """Trains one candidate and records its row; None when the remedy cannot apply."""
    workdir = os.path.join(state.root, f"{index:02d}{'abcdefgh'[k % 8]}-{top.cause}")
    start = time.time()
    try:
        cand = apply(best, remedy, label=f"round {index}: {remedy.text}", workdir=workdir,
                     num_classes=state.num_classes, multilabel=state.multilabel)
        # A candidate is judged by its validation accuracy and its curves: the pictures for
        # people (TensorBoard events, first-layer images) stay with the first run.
        cand.config.monitor.tensorboard, cand.config.monitor.first_layer_every = False, 0
        cand.checks = preflight.run(cand.config, model=cand.model, data=cand.data)
    except ValueError as e:
        spent = round(time.time() - start, 1)  # an lr range test that found nothing ran too
        state.spent += spent
        state.repairs.append(Repair(index, top.cause, remedy.text, dict(remedy.change),
                                    remedy.transform, best.val_accuracy, math.nan, False, spent,
                                    remedy.flags(), "", f"not applicable: {e}", spent))
        return None
    measuring = time.time() - start  # the lr range test's runs are training time too
    run_attempt(cand, users_model=state.users_model, echo=state.echo)
    cand.seconds = round(cand.seconds + measuring, 1)
    state.spent += cand.seconds
    kept = _better(cand, best)
    applied = {k: v for k, v in cand.change.items() if best.change.get(k, None) != v}
    text = remedy.text
    if remedy.transform == "lr_range":
        text += f": lr {best.config.optimizer.learning_rate:.3g} → " \
                f"{cand.config.optimizer.learning_rate:.3g}"
    state.repairs.append(Repair(index, top.cause, text, applied, remedy.transform,
                                best.val_accuracy, cand.val_accuracy, kept, cand.seconds,
                                causes.flags_for(applied), workdir, cand.error,
                                float(cand.summary.get("fit_seconds", 0.0))
                                + (measuring if remedy.transform == "lr_range" else 0.0)))
    state.echo(f"repair {index}: {top.cause}: {text}: val accuracy "
               f"{accuracy_text(best.val_accuracy)} → {accuracy_text(cand.val_accuracy)} "
               f"({'kept' if kept else 'not kept'}, {cand.seconds:.0f} s)")
    return cand


def accuracy_text(v: float) -> str:
    """An accuracy with 4 decimals, or ``n/a`` when the run could not train."""
    return f"{v:.4f}" if math.isfinite(v) else "n/a"


def summary_rows(repairs: Sequence[Repair]) -> list[dict[str, Any]]:
    """The repairs as ``babysit.json`` rows."""
    return [r.to_dict() for r in repairs]
