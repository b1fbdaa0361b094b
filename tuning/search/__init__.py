"""Random search in log space and coarse-to-fine search, on KerasTuner.

CS231n "Training Neural Networks II", hyperparameter optimization: random search beats a
grid; search scale parameters in log space; go coarse to fine; break out early when the
cost explodes; and "if your best results are on the edge of your search range, shift the
range".

* :func:`search` — one stage: ``keras_tuner.RandomSearch`` (or ``GridSearch`` with the same
  budget, for comparison) over a :mod:`tuning.space`, each trial a whole run built from the
  config tree (:class:`tuning.hypermodel.ConfigHyperModel`).
* :func:`coarse_to_fine` — several stages; between them ``tuning.narrowing.narrow`` (pure)
  fits every range around the top-k trials and shifts a range whose best sits on its edge.
* ``strategy="hyperband"`` — each stage is ``keras_tuner.Hyperband`` (Li et al. 2018,
  "Hyperband"): a stage ``TRIALSxEPOCHS`` runs with ``max_epochs`` = EPOCHS and
  ``search.hyperband_factor`` (3), for the whole Hyperband iterations whose trial-epochs come
  closest to TRIALS × EPOCHS (at least one; ``tuning.tuners.hyperband_plan``: one
  iteration of max_epochs 3 spends 11 trial-epochs in 6 trials, of max_epochs 9, 75 in 23).
  Trials of a later round continue their parent's checkpoint for the epochs between; each
  trial's ``epochs_trained`` counts only its own, so ``epochs_spent`` is what the stage
  really trained. ``stages.json`` holds the plan, each record its ``hyperband`` round.
* :func:`search_step` — the babysitting procedure's hook, driven by ``config.search``.

The command line (``python -m tuning.search``, which runs ``tuning/search/__main__.py``:
resumable, recycling its process, distributable with KerasTuner's chief/worker mode) is
:mod:`tuning.cli`; the KerasTuner subclasses are :mod:`tuning.tuners`; see docs/search.md.

Workdir: ``search.json`` (the request; a rerun must match it), ``trials.csv``,
``stages.json``, ``result.json``, ``best_config.json``/``.py``, ``plots/`` and ``kt/`` (the
KerasTuner projects, one per stage: the state a rerun resumes from).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
import types
from collections.abc import Callable
from typing import Any

import keras
import keras_tuner as kt
import ml_collections

from recipes import configs, data, io, prepare, train
from recipes import workdir as wd
from recipes.ranges import EDGE_MARGIN
from tuning import hypermodel as hm_lib
from tuning import request as request_lib
from tuning import results, tuners
from tuning import space as space_lib
from tuning.narrowing import (
    Note,
    Stage,
    check_keep_top,
    check_margin,
    edge_notes,
    narrow,
    parse_stages,
)
from tuning.results import SearchResult

__all__ = ["search", "coarse_to_fine", "search_step", "check_space_values", "TrialEnd",
           "SearchResult", "Stage", "Note", "narrow", "edge_notes", "parse_stages",
           "STRATEGIES", "DATA_FIELDS"]

logger = logging.getLogger(__name__)

STRATEGIES = tuners.STRATEGIES
#: Config fields that change the data itself: a search over them loads data per trial.
DATA_FIELDS = ("dataset.name", "dataset.data_dir", "dataset.val_size", "dataset.seed",
               "dataset.limit")


@dataclasses.dataclass(frozen=True)
class TrialEnd:
    """What ``on_trial_end`` hears after each trial this process's oracle saw end.

    A local search's oracle sees its own trials; a chief's sees every worker's.

    Attributes:
        finished: trials ended in this process so far (all stages; a resumed search counts
            from 0 again).
        more: whether trials remain, in this stage or a later one.
        role: ``none`` (a local search) or ``chief``.
        record: the trial's record (``tuning.results.record``).
    """

    finished: int
    more: bool
    role: str
    record: dict[str, Any]


# -- checks before anything is written ---------------------------------------------------------

def check_space_values(cfg: ml_collections.ConfigDict, space: space_lib.Space,
                       splits: data.Splits, *, model: Any = None) -> None:
    """Builds a run at every edge of the space before the search writes anything.

    Each ``choice`` member and both bounds of every range are set into the config and
    prepared (``recipes.train.prepare``: data pipeline, model, optimizer, schedule), so a bad
    value fails now, naming it, rather than when a trial happens to draw it. ``model``: the
    user's network, as the trials get it.

    Raises:
        ValueError: ``search.space: PATH=VALUE ...: the reason``.
    """
    for path, value in space_lib.edge_values(space):
        if path in DATA_FIELDS:
            continue  # each trial loads its own data; data.load checks these
        try:
            train.prepare(space_lib.apply(cfg, {path: value}), model=model, splits=splits)
        except ValueError as e:
            raise ValueError(f"search.space: {path}={space_lib.value_text(value)} is not a "
                             f"valid value: {e}") from None


def _checked(config: Any, space: Any, stages: Any, workdir: str, strategy: str, seed: Any,
             keep_top: Any, margin: float
             ) -> tuple[ml_collections.ConfigDict, space_lib.Space, list[Stage]]:
    """The arguments of :func:`coarse_to_fine`, checked in order; the full config tree."""
    if not workdir:
        raise ValueError("--workdir is required: give a directory for the search")
    if strategy not in STRATEGIES:
        raise ValueError(f"search.strategy (--strategy) = {strategy!r}: use "
                         f"{', '.join(STRATEGIES[:-1])} or {STRATEGIES[-1]}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed must be an integer >= 0, got {seed!r}")
    cfg = configs.complete(config)
    if strategy == "hyperband":
        tuners.hyperband_plan(1, 1, hyperband_factor(cfg))  # checks the factor
    space = space_lib.from_mapping(space, cfg)
    stages = parse_stages(stages)
    check_keep_top(keep_top)
    check_margin(margin)
    if cfg.dataset.val_size in (0, 0.0):
        raise ValueError("a search needs a validation split: set dataset.val_size > 0")
    return cfg, space, stages


def hyperband_factor(cfg: ml_collections.ConfigDict) -> Any:
    """``search.hyperband_factor`` (3 where the tree lacks it)."""
    return cfg.search.get("hyperband_factor", 3)


# -- one search's stages -----------------------------------------------------------------------

def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


@dataclasses.dataclass(eq=False)
class _Run:
    """One search's shared state: config, data, workdir, records of the finished stages."""

    cfg: ml_collections.ConfigDict
    stages: list[Stage]
    workdir: str  # where it writes: the user's, or a staged ``--overwrite`` replacement
    strategy: str
    splits: data.Splits | None
    seed: int
    verbose: int
    role: str
    host: str | None
    port: int | None
    tuner_id: str | None
    keep_top: int
    margin: float
    params: list[str]
    on_trial_end: Callable[[TrialEnd], None] | None = None
    model: Any = None  # the user's network (None: model.arch)

    def __post_init__(self):
        self.names = results.short_names(self.params)
        self.done: list[dict[str, Any]] = []  # records of the finished stages
        self.factor = float(self.cfg.monitor.explosion_factor)
        self.ended_here = 0  # trials this process finished (for on_trial_end)
        self.shown = self.workdir  # the path to print: the user's workdir

    def plan(self, stage: Stage) -> tuners.HyperbandPlan | None:
        """The Hyperband plan of ``stage`` (None for random and grid search)."""
        if self.strategy != "hyperband":
            return None
        return tuners.hyperband_plan(stage.trials, stage.epochs, hyperband_factor(self.cfg))

    # -- per trial (oracle hook: local process or chief) --
    def _stage_records(self, oracle: kt.Oracle, index: int) -> list[dict[str, Any]]:
        recs = [self._record(t, index) for t in oracle.trials.values()]
        return sorted(recs, key=lambda r: (r["number"], r["trial"]))

    def _record(self, trial: Any, index: int) -> dict[str, Any]:
        """``results.record``; a Hyperband trial's round goes to its ``hyperband`` entry."""
        rec = results.record(tuners.trial_view(trial), stage=index, config=self.cfg,
                             explosion_factor=self.factor)
        _, hb = tuners.hyperband_values(trial.hyperparameters.values)
        if hb:
            parent = hb.get("tuner/trial_id")
            rec["hyperband"] = {
                "bracket": int(hb.get("tuner/bracket", 0)), "round": int(hb.get("tuner/round", 0)),
                "from_epoch": int(hb.get("tuner/initial_epoch", 0)),
                "to_epoch": int(hb.get("tuner/epochs", 0)),
                "parent": None if parent is None else str(parent)}
        return rec

    def on_end(self, index: int, stage: Stage, clock: dict[str, float], oracle: kt.Oracle,
               trial: Any) -> None:
        recs = self._stage_records(oracle, index)
        results.write_trials_csv(os.path.join(self.workdir, "trials.csv"), self.done + recs,
                                 self.params)
        rec = next((r for r in recs if r["trial"] == str(trial.trial_id)), None)
        if rec is None or rec["status"] == "running":
            return
        clock["ended"] += 1
        finished = sum(r["status"] != "running" for r in recs)
        left = max(stage.trials - finished, 0)
        if self.verbose:
            elapsed = time.time() - clock["start"]
            eta = elapsed / clock["ended"] * left
            print(results.line(rec, stage.trials, self.names) +
                  f"  [stage {index}/{len(self.stages)}, {_duration(elapsed)}, "
                  f"eta {_duration(eta)}]", flush=True)
        self.ended_here += 1
        if self.on_trial_end is not None:
            more = left > 0 or index < len(self.stages)
            self.on_trial_end(TrialEnd(self.ended_here, more, self.role, rec))

    def on_worker_trial(self, index: int, stage: Stage, tuner: kt.Tuner, trial: Any) -> None:
        if not self.verbose:
            return
        last = tuner.hypermodel.last
        if last is None or str(trial.status).upper() != "COMPLETED":
            print(f"trial {int(trial.trial_id) + 1} / {stage.trials} failed  [{self.tuner_id}, "
                  f"stage {index}]", flush=True)
            return
        values, _ = tuners.hyperband_values(trial.hyperparameters.values)
        rec = {"values": space_lib.decode(values, self.cfg),
               "val_accuracy": last.val_accuracy, "number": int(trial.trial_id) + 1,
               "status": "exploded" if last.exploded else "completed", "reason": last.reason}
        print(results.line(rec, stage.trials, self.names) + f"  [{self.tuner_id}, stage "
              f"{index}]", flush=True)

    # -- per stage --
    def run_stage(self, index: int, stage: Stage, space: space_lib.Space
                  ) -> list[dict[str, Any]]:
        points = space_lib.grid_points(space, stage.trials) if self.strategy == "grid" else None
        model = hm_lib.ConfigHyperModel(self.cfg, space, epochs=stage.epochs,
                                        splits=self.splits, grid_points=points,
                                        model=self.model)
        clock = {"start": time.time(), "ended": 0}
        plan = self.plan(stage)
        if plan is not None:  # the trials Hyperband runs, for "(n / total)" and what is left
            stage = Stage(plan.trials, stage.epochs)
        oracle = tuners.make_oracle(self.strategy, max_trials=stage.trials,
                                    seed=self.seed * 1000 + index, plan=plan,
                                    on_end=lambda o, t: self.on_end(index, stage, clock, o, t))
        port = None if self.port is None else self.port + index - 1
        tuners.check_state(os.path.join(self.workdir, "kt", f"stage{index}"), index)
        with tuners.environment(self.role, self.host, port, self.tuner_id), \
                tuners.quiet_stdout():
            tuner = tuners.make_tuner(
                self.strategy, model, oracle=oracle, directory=os.path.join(self.workdir, "kt"),
                project_name=f"stage{index}",
                on_worker_trial=lambda tn, t: self.on_worker_trial(index, stage, tn, t))
            self._search(tuner, index)
        keras.backend.clear_session()
        if self.role == "worker":
            return []
        return self._stage_records(tuner.oracle, index)

    def _search(self, tuner: kt.Tuner, index: int) -> None:
        """Runs the stage's tuner; a worker late for a stage the chief closed moves on.

        A resumed chief whose stage already holds every trial skips it: KerasTuner's server
        would wait for a worker to ask, and the workers skip the stages ``stages.json``
        lists.
        """
        if self.role == "chief" and tuner.oracle.finished():
            return
        with tuners.stage_watch(tuner, lambda: self._chief_closed(index)):
            try:
                tuner.search(verbose=0)
            except Exception:
                if self.role != "worker" or not self._chief_closed(index):
                    raise
                if self.verbose:
                    print(f"stage {index}: the chief had closed it  [{self.tuner_id}]",
                          flush=True)

    def _chief_closed(self, index: int) -> bool:
        """Whether the chief's ``stages.json`` lists stage ``index`` (its trials all ended)."""
        path = os.path.join(self.workdir, "stages.json")
        try:
            return any(s.get("stage") == index
                       for s in io.read_json(path, what="the chief's stages"))
        except (OSError, ValueError, AttributeError):
            return False


def _search_in(run: _Run, space: space_lib.Space, request: dict[str, Any]) -> SearchResult:
    """The search's stages, in ``run.workdir`` (the user's, or a staged replacement)."""
    workdir, role, stages, verbose = run.workdir, run.role, run.stages, run.verbose
    if role != "worker":
        io.remove_stale_temps(workdir)  # a SIGKILLed attempt's half-written files
        io.write_json(os.path.join(workdir, "search.json"), request)
    stage_info: list[dict[str, Any]] = []
    warnings_: list[str] = []
    current = space
    for index, stage in enumerate(stages, 1):
        plan = run.plan(stage)
        if verbose:
            over = ("the chief's ranges" if role == "worker"
                    else space_lib.to_string(current))
            print(f"stage {index}/{len(stages)}: {_stage_text(stage, plan)}, {run.strategy} "
                  f"search over {over}", flush=True)
        recs = run.run_stage(index, stage, current)
        if role == "worker":
            continue
        run.done += recs
        info = {"stage": index, "trials": plan.trials if plan else stage.trials,
                "epochs": stage.epochs, "space": space_lib.to_string(current),
                "ranges": space_lib.describe(current), "notes": [],
                "best": results.best_of(recs), "epochs_spent": results.epochs_spent(recs)}
        if plan is not None:
            info["hyperband"] = plan.to_dict()
        stage_info.append(info)
        if index < len(stages):
            current, notes = narrow(current, recs, run.keep_top, run.margin)
            info["notes"] = [dataclasses.asdict(n) for n in notes]
            for n in notes:
                if n.warning:
                    warnings_.append(n.message)
                    _warn(n.message, verbose)
        io.write_json(os.path.join(workdir, "stages.json"), stage_info)

    if role == "worker":
        return SearchResult(None, None, [], [], [], [], workdir)
    return _finish(run, stage_info, warnings_, current)


def _stage_text(stage: Stage, plan: tuners.HyperbandPlan | None) -> str:
    """``20 trials x 2 epochs``, or a Hyperband stage's plan."""
    if plan is None:
        return f"{stage.trials} trials x {stage.epochs} epochs"
    shortest = min(b[0][2] for b in plan.brackets)
    return (f"{plan.trials} trials of {shortest} to {plan.max_epochs} epochs (factor "
            f"{plan.factor}, {plan.iterations} iteration(s), at most "
            f"{plan.trial_epochs} trial-epochs for {stage.trials}x{stage.epochs})")


def _warn(message: str, verbose: int) -> None:
    """A warning on the search's own output when it prints, else through logging."""
    if verbose:
        print(f"warning: {message}", flush=True)
    else:
        logger.warning("%s", message)


def _plots(run: _Run, stage_info: list[dict[str, Any]]) -> dict[str, Any]:
    """Writes ``plots/``; returns ``{"lr_reg": path or None, "params": [paths]}`` as shown.

    The paths are the user's (``run.shown``), where a staged ``--overwrite`` search's files
    end up once it is swapped in.
    """
    plots_dir = os.path.join(run.workdir, "plots")
    lr_reg, params = None, []
    try:
        params = results.plot_params(run.done, stage_info[0]["ranges"], plots_dir)
        lr_reg = results.plot_lr_reg(run.done, [s["ranges"] for s in stage_info],
                                     os.path.join(plots_dir, "lr_reg.png"))
    except Exception as e:  # noqa: BLE001 - a plot must never lose a finished search
        logger.warning("search plots failed: %s: %s", type(e).__name__, e)

    def shown(path: str) -> str:
        return os.path.join(run.shown, os.path.relpath(path, run.workdir))

    return {"lr_reg": shown(lr_reg) if lr_reg else None, "params": [shown(p) for p in params]}


def _finish(run: _Run, stage_info: list[dict[str, Any]], warnings_: list[str],
            final: space_lib.Space) -> SearchResult:
    """Writes the final artifacts: trials.csv, plots, best_config.*, result.json."""
    workdir, recs = run.workdir, run.done
    results.write_trials_csv(os.path.join(workdir, "trials.csv"), recs, run.params)
    last = [r for r in recs if r["stage"] == len(stage_info)]
    best = results.best_of(last) or results.best_of(recs)
    totals = {s["stage"]: s["trials"] for s in stage_info}
    lines = [results.line(r, totals[r["stage"]], run.names) for r in recs
             if r["status"] != "running"]
    best_config = None
    if best is not None:
        for n in edge_notes(final, best["values"], run.margin):
            warnings_.append(n.message)
            _warn(n.message, run.verbose)
        best_config = space_lib.apply(run.cfg, best["values"])
        results.write_best_config(workdir, best_config, best, shown=run.shown)
    plots = _plots(run, stage_info)
    result = SearchResult(best_config, best, recs, stage_info, warnings_, lines, run.shown,
                          plots)
    io.write_json(os.path.join(workdir, "result.json"), {
        "best": best, "edge_warnings": warnings_, "epochs_spent": result.epochs_spent,
        "trials": len([r for r in recs if r["status"] != "running"]),
        "exploded": sum(r["status"] == "exploded" for r in recs),
        "failed": sum(r["status"] == "failed" for r in recs),
        "stages": [{k: s[k] for k in ("stage", "trials", "epochs", "space", "epochs_spent")}
                   for s in stage_info],
        "search": result.diagnose_stats(), "lines": lines,
    })
    if run.verbose and best is not None:
        print(f"best: {results.line(best, totals[best['stage']], run.names)} "
              f"(stage {best['stage']}); {result.epochs_spent:g} trial-epochs; "
              f"best config: {os.path.join(run.shown, 'best_config.py')}", flush=True)
    return result


def _search_locked(run: _Run, space: space_lib.Space, request: dict[str, Any],
                   overwrite: bool) -> SearchResult:
    """Runs the search holding the workdir's lock; ``overwrite`` stages it beside the old."""
    workdir = run.workdir
    with wd.locked(workdir), tuners.frozen_heap():
        wd.recover(workdir)  # what a replacement killed mid-swap left behind
        request_lib.check(workdir, request, overwrite)  # it may have changed meanwhile
        if overwrite and wd.holds_files(workdir) and not request_lib.continues(workdir, request):
            with wd.replacing(workdir,
                              can_continue=lambda d: request_lib.continues(d, request, True)) as d:
                run.workdir = d
                return _search_in(run, space, request)
        return _search_in(run, space, request)


# -- public API ----------------------------------------------------------------------------------

def search(config: Any, space: Any, trials: int, epochs: int, workdir: str, *,
           strategy: str = "random", splits: data.Splits | None = None, seed: int = 0,
           role: str | None = None, oracle: str | None = None, tuner_id: str | None = None,
           verbose: int = 1, overwrite: bool = False,
           on_trial_end: Callable[[TrialEnd], None] | None = None, model: Any = None,
           data: Any = None) -> SearchResult:
    """Random (or grid) search: ``trials`` runs of ``epochs`` epochs each.

    Each trial applies its sampled values to a copy of ``config`` and trains the whole run
    (``recipes.train.prepare``) under ``ExplosionGuard``. Rerun with the same arguments and
    workdir, it resumes: finished trials are kept, an interrupted one is rerun.

    Args:
        config: the base config tree (ConfigDict or partial dict).
        space: a :mod:`tuning.space` mapping or its string (None: ``config.search.space``).
        trials: how many trials.
        epochs: epochs per trial.
        workdir: directory for ``trials.csv``, ``best_config.*``, plots and KerasTuner state.
        strategy: ``random`` (``keras_tuner.RandomSearch``), ``grid`` (``GridSearch``,
            as many points per range as fit in ``trials``) or ``hyperband``
            (``keras_tuner.Hyperband`` with ``max_epochs=epochs`` and
            ``search.hyperband_factor``, about ``trials × epochs`` trial-epochs: see the
            module's docstring).
        splits: already-loaded data shared by the trials (None: loaded once here).
        seed: the oracle's sampling seed.
        role: ``chief`` / ``worker`` for KerasTuner's distributed mode (None: from the
            ``KERASTUNER_*`` variables if set, else a local search).
        oracle: ``HOST:PORT`` of the chief (the address a chief binds).
        tuner_id: a worker's id (unique per worker; a stable id lets a restarted worker
            resume its trial).
        verbose: 0 quiet, else one lecture-format line per finished trial.
        overwrite: discard a previous search in ``workdir``.
        on_trial_end: as for :func:`coarse_to_fine`.
        model: as for :func:`coarse_to_fine`.
        data: as for :func:`coarse_to_fine`.

    Returns:
        A :class:`SearchResult`.

    Raises:
        ValueError: a bad space, config, argument or workdir.
    """
    return coarse_to_fine(config, space, [Stage(trials, epochs)], keep_top=1, workdir=workdir,
                          strategy=strategy, splits=splits, seed=seed, role=role, oracle=oracle,
                          tuner_id=tuner_id, verbose=verbose, overwrite=overwrite,
                          on_trial_end=on_trial_end, model=model, data=data)


def coarse_to_fine(config: Any, space: Any, stages: Any, keep_top: int = 5, workdir: str = "",
                   *, strategy: str = "random", splits: data.Splits | None = None,
                   seed: int = 0, margin: float = EDGE_MARGIN, role: str | None = None,
                   oracle: str | None = None, tuner_id: str | None = None, verbose: int = 1,
                   overwrite: bool = False,
                   on_trial_end: Callable[[TrialEnd], None] | None = None, model: Any = None,
                   data: Any = None) -> SearchResult:
    """Coarse-to-fine search: stage after stage, each range fitted around the top trials.

    CS231n: "first stage: only a few epochs to get a rough idea of what params work; second
    stage: longer running time, finer search". After every stage but the last, ``narrow``
    fits each range to the ``keep_top`` best trials and shifts a range whose best value sits
    on its edge (with a warning). The ranges of every stage go to ``stages.json``. The best
    trial is the best of the last (longest) stage.

    Args:
        config: the base config tree.
        space: a space mapping or string (None: ``config.search.space``).
        stages: ``[Stage(trials, epochs), ...]`` or ``"20x2,10x8"``.
        keep_top: how many top trials the next stage's ranges span.
        workdir: the search's directory (required).
        strategy: ``random``, ``grid`` or ``hyperband`` (each stage a Hyperband run of
            about TRIALS × EPOCHS trial-epochs, ``max_epochs`` = EPOCHS).
        splits: already-loaded data shared by all trials.
        seed: sampling seed (stage ``i`` uses ``seed * 1000 + i``).
        margin: fraction of a range for the widening and the edge test.
        role: ``chief`` / ``worker`` (distributed; each stage uses port ``PORT + i - 1``).
        oracle: the chief's ``HOST:PORT``.
        tuner_id: a worker's id.
        verbose: 0 quiet, else one line per finished trial and the stage ranges.
        overwrite: discard a previous search in ``workdir``.
        on_trial_end: called with a :class:`TrialEnd` after each trial this process's
            oracle saw end (local search or chief), its results already on disk; the
            command line restarts its process from here (``tuning.cli``).
        model: the user's network: a ``keras.Model`` (every trial trains a fresh copy,
            ``keras.models.clone_model``) or a function returning one; None builds
            ``model.arch``. A space naming ``model.*`` fields other than ``model.kwargs.*``
            is refused for it (they configure the built-in networks).
        data: the user's data (``recipes.data.from_user``'s forms), instead of ``splits``.

    Returns:
        A :class:`SearchResult` (empty on a worker: the chief holds the results).

    Raises:
        ValueError: a bad space, stage list, config, argument or workdir.
    """
    cfg, space, stages = _checked(config, space, stages, workdir, strategy, seed, keep_top,
                                  margin)
    if data is not None:
        splits = prepare.load_splits(cfg, data)
    if model is not None or splits is not None:
        cfg = prepare.resolve(config, model=model, splits=splits)
    space_lib.check_applicable(space, user_model=prepare.model_source(model).is_users(cfg),
                               arch=cfg.model.arch)
    role, host, port, tuner_id = tuners.resolve_role(role, oracle, tuner_id)
    if port is not None and port + len(stages) - 1 > 65535:
        raise ValueError(f"--oracle port {port}: stage i uses port+i-1; choose a lower port")
    request = request_lib.make(cfg, space, stages, strategy=strategy, keep_top=keep_top,
                               seed=seed, margin=margin)
    if role != "worker":
        request_lib.check(workdir, request, overwrite)
    if splits is None and role != "chief" and not any(p in space for p in DATA_FIELDS):
        splits = prepare.load_splits(cfg)
    if splits is not None:
        check_space_values(cfg, space, splits, model=model)
    run = _Run(cfg, stages, workdir, strategy, splits, seed, verbose, role, host, port,
               tuner_id, keep_top, margin, list(space), on_trial_end, model)
    if role == "worker":  # shares the chief's workdir: the chief holds its lock
        os.makedirs(workdir, exist_ok=True)
        return _search_in(run, space, request)
    return _search_locked(run, space, request, overwrite)


def search_step(config: Any, *, splits: data.Splits | None = None, workdir: str,
                verbose: int = 1, model: Any = None) -> dict[str, Any]:
    """The babysitting procedure's search step, driven by ``config.search``.

    Runs :func:`coarse_to_fine` with ``config.search.space``, ``stages``, ``keep_top``,
    ``strategy`` and ``seed``.

    Args:
        config: the full config tree.
        splits: already-loaded data.
        workdir: the step's directory.
        verbose: 0 quiet, else a line per trial.
        model: the user's network, as for :func:`coarse_to_fine`.

    Returns:
        ``{"best_config": ConfigDict, "best": {"values", "val_accuracy", ...},
        "stages": [per-stage ranges], "edge_warnings": [...], "lines": [...],
        "search": diagnose's stats["search"], "epochs_spent": float,
        "plots": {"lr_reg": path or None, "params": [paths]}}``; ``best`` and
        ``best_config`` are None when no trial completed (all exploded).
    """
    cfg = configs.complete(config)
    s = cfg.search
    res = coarse_to_fine(cfg, s.space, s.stages, keep_top=int(s.keep_top), workdir=workdir,
                         strategy=s.strategy, splits=splits, seed=int(s.seed), verbose=verbose,
                         model=model)
    return {"best_config": res.best_config, "best": res.best, "stages": res.stages,
            "edge_warnings": res.edge_warnings, "lines": res.lines,
            "search": res.diagnose_stats(), "epochs_spent": res.epochs_spent,
            "plots": {"lr_reg": res.plots.get("lr_reg"),
                      "params": list(res.plots.get("params", []))}}


# -- ``tuning.search`` is this module and, called, :func:`search` --------------------------------
# DESIGN.md's public names need both: ``tuning.search(config, space, ...)`` and ``python -m
# tuning.search`` (so a module of that name, here a package whose ``__main__`` is the command
# line) with ``tuning.search.X``. A function of the same name on the package ``tuning``
# cannot coexist with the submodule (the import system sets ``tuning.search`` to the module
# when it is first imported, and ``import tuning.search as s`` reads that attribute), so the
# module itself is made callable.

class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> SearchResult:
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
