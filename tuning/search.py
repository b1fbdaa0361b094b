"""Random search in log space and coarse-to-fine search, on KerasTuner.

CS231n "Training Neural Networks II", hyperparameter optimization: random search beats a
grid; search scale parameters in log space; go coarse to fine ("first stage: only a few
epochs to get a rough idea of what params work; second stage: longer running time, finer
search"); break out early when the cost explodes; and "if your best results are on the edge
of your search range, shift the range".

* :func:`search` — one stage: ``keras_tuner.RandomSearch`` (or ``GridSearch`` with the same
  budget, for comparison) over a :mod:`tuning.space`, each trial a whole run built from the
  config tree (:class:`tuning.hypermodel.ConfigHyperModel`).
* :func:`coarse_to_fine` — several stages (:class:`Stage`); between them :func:`narrow` (a pure
  function) fits every range around the top-k trials and shifts a range whose best value
  sits on its edge.
* :func:`search_step` — the babysitting procedure's hook, driven by ``config.search``.
* ``python -m tuning.search`` — the command line, resumable, distributable with KerasTuner's
  chief/worker mode (``--role``, ``--oracle``); see docs/search.md.

Workdir: ``search.json`` (the request; a rerun must match it), ``trials.csv``,
``stages.json``, ``result.json``, ``best_config.json``/``.py``, ``plots/`` and ``kt/`` (the
KerasTuner projects, one per stage: the state a rerun resumes from).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import socket
import sys
import time
import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import keras
import keras_tuner as kt
import ml_collections

from recipes import configs, data, io, train
from recipes import workdir as wd
from recipes.diagnose import EDGE_MARGIN
from tuning import hypermodel as hm_lib
from tuning import results
from tuning import space as space_lib

__all__ = ["Stage", "Note", "SearchResult", "search", "coarse_to_fine", "search_step", "narrow",
           "edge_notes", "parse_stages", "main"]

logger = logging.getLogger(__name__)

STRATEGIES = ("random", "grid")
ROLES = ("none", "chief", "worker")
#: Config fields that change the data itself: a search over them loads data per trial.
_DATA_FIELDS = ("dataset.name", "dataset.data_dir", "dataset.val_size", "dataset.seed",
                "dataset.limit")
#: Natural limits of fields a shifted range must not cross (beyond "a range that starts at
#: >= 0 stays >= 0"): probabilities and decay factors live in [0, 1].
DOMAINS = {
    "model.dropout": (0.0, 1.0),
    "optimizer.momentum": (0.0, 1.0),
    "optimizer.beta_1": (0.0, 1.0),
    "optimizer.beta_2": (0.0, 1.0),
    "optimizer.rho": (0.0, 1.0),
    "optimizer.momentum_start": (0.0, 1.0),
    "loss.label_smoothing": (0.0, 1.0),
    "augment.erasing": (0.0, 1.0),
    "schedule.decay_rate": (0.0, None),
    "schedule.epoch_decay": (0.0, 1.0),
    "schedule.alpha": (0.0, 1.0),
}
_FILES = ("search.json", "trials.csv", "stages.json", "result.json", "best_config.json",
          "best_config.py")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One coarse-to-fine stage: ``trials`` runs of ``epochs`` epochs each."""

    trials: int
    epochs: int

    def __post_init__(self):
        for name in ("trials", "epochs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Stage.{name} must be an integer >= 1, got {v!r}")

    def __str__(self) -> str:
        return f"{self.trials}x{self.epochs}"


def parse_stages(text: str | Sequence[Stage | Sequence[int]]) -> list[Stage]:
    """Parses ``"20x2,10x8"`` (trials x epochs per stage) or a list of stages/pairs.

    Raises:
        ValueError: naming the malformed fragment, e.g. ``'20x'``.
    """
    if not isinstance(text, str):
        out = []
        for s in text:
            out.append(s if isinstance(s, Stage) else Stage(*s))
        if not out:
            raise ValueError("stages: give at least one stage, e.g. 20x2,10x8")
        return out
    if not text.strip():
        raise ValueError("--stages is empty; write TRIALSxEPOCHS per stage, e.g. 20x2,10x8")
    out = []
    for fragment in text.split(","):
        frag = fragment.strip().lower()
        t, x, e = frag.partition("x")
        if not x or not t.strip().isdigit() or not e.strip().isdigit():
            raise ValueError(f"--stages: {fragment.strip()!r} is not TRIALSxEPOCHS; write e.g. "
                             "20x2,10x8 (20 trials of 2 epochs, then 10 of 8)")
        try:
            out.append(Stage(int(t), int(e)))
        except ValueError as err:
            raise ValueError(f"--stages: {fragment.strip()!r}: {err}") from None
    return out


# -- narrowing (pure) ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Note:
    """What :func:`narrow` did to one range, and why.

    ``kind``: ``narrowed`` (fitted around the top trials), ``shifted`` (the best sat on an
    edge: the range moved past it — a warning), ``edge`` (the best sits on an edge that
    cannot or will not move — a warning), ``pruned`` (choices no top trial used were
    dropped) or ``kept`` (unchanged).
    """

    param: str
    kind: str
    message: str

    @property
    def warning(self) -> bool:
        return self.kind in ("shifted", "edge")

    def __str__(self) -> str:
        return self.message


def _unit(dim: space_lib.Dimension) -> tuple[Any, Any]:
    """The axis a range is uniform on, and back: log for log ranges, identity otherwise."""
    if dim.log:
        return math.log, math.exp
    return float, float


def _domain(path: str, dim: space_lib.Dimension) -> tuple[float | None, float | None]:
    lo, hi = DOMAINS.get(path, (None, None))
    if lo is None and dim.lo >= 0:
        lo = 1.0 if isinstance(dim, space_lib.IntUniform) and dim.lo >= 1 else 0.0
    if dim.log and (lo is None or lo <= 0):
        lo = None  # a log range never reaches 0
    return lo, hi


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _position(dim: space_lib.Dimension, value: float) -> float:
    f, _ = _unit(dim)
    return (f(value) - f(dim.lo)) / (f(dim.hi) - f(dim.lo))


def edge_notes(space: Mapping[str, space_lib.Dimension], best: Mapping[str, Any],
               margin: float = EDGE_MARGIN) -> list[Note]:
    """Warnings for numeric parameters whose best value lies within ``margin`` of an edge.

    Args:
        space: the ranges searched.
        best: the best trial's values (path → value).
        margin: fraction of the range (in log units for log ranges).

    Returns:
        One ``edge`` note per parameter on an edge.
    """
    out = []
    for path, dim in space.items():
        if not isinstance(dim, space_lib.NUMERIC) or path not in best:
            continue
        pos = _position(dim, float(best[path]))
        if margin <= pos <= 1 - margin:
            continue
        side = "low" if pos < 0.5 else "high"
        out.append(Note(path, "edge",
                        f"{path}: best {_fmt(best[path])} is at {100 * pos:.0f} % of "
                        f"[{_fmt(dim.lo)}, {_fmt(dim.hi)}]{' (log scale)' if dim.log else ''}, "
                        f"within {100 * margin:.0f} % of the {side} edge: shift the range "
                        f"past its {side} edge, the optimum may lie outside"))
    return out


def narrow(space: Mapping[str, space_lib.Dimension], trials: Sequence[Mapping[str, Any]],
           keep_top: int = 5, margin: float = EDGE_MARGIN
           ) -> tuple[space_lib.Space, list[Note]]:
    """Fits every range around the top-k trials; shifts a range whose best sits on an edge.

    CS231n coarse-to-fine: the next stage samples where the good trials were. A numeric
    range becomes ``[min, max]`` of the top-k values widened by ``margin`` × the old width
    on each side (in log units for log ranges) and clipped to the old range — unless the
    best value lies within ``margin`` of an edge: then that side moves past the edge by half
    the old width (the lecture's "shift the range"), within the field's natural limits
    (``DOMAINS``; a range starting at >= 0 stays >= 0). Integer ranges are rounded outwards;
    a choice keeps the values the top-k trials used. Pure: no I/O, no randomness.

    Args:
        space: path → distribution of the stage that ran.
        trials: its trials, each ``{"values": {path: value}, "val_accuracy": float,
            "status": "completed" | "exploded" | ...}`` (status defaults to completed);
            exploded and failed trials never count as top trials.
        keep_top: how many of the best trials the new ranges span.
        margin: fraction of a range's width, for the widening and the edge test.

    Returns:
        ``(new_space, notes)``: a space of the same paths and kinds, and one or more notes
        per parameter; ``note.warning`` marks the edge cases.

    Raises:
        ValueError: ``keep_top < 1`` or ``margin`` outside [0, 0.5).
    """
    if isinstance(keep_top, bool) or not isinstance(keep_top, int) or keep_top < 1:
        raise ValueError(f"keep_top must be an integer >= 1, got {keep_top!r}")
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin!r}")
    ok = [t for t in trials if t.get("status", "completed") == "completed"
          and t.get("val_accuracy") is not None and math.isfinite(t["val_accuracy"])]
    if not ok:
        return dict(space), [Note("*", "kept", "no completed trial to narrow around: "
                                  "ranges unchanged")]
    top = sorted(ok, key=lambda t: -t["val_accuracy"])[:keep_top]
    best = top[0]["values"]
    new: space_lib.Space = {}
    notes: list[Note] = []
    for path, dim in space.items():
        vals = [t["values"][path] for t in top if path in t["values"]]
        if not vals:
            new[path] = dim
            notes.append(Note(path, "kept", f"{path}: no top trial has a value; kept"))
        elif isinstance(dim, space_lib.Choice):
            used = {space_lib._text(v) for v in vals}
            keep = tuple(v for v in dim.values if space_lib._text(v) in used) or dim.values
            new[path] = space_lib.Choice(keep)
            if len(keep) < len(dim.values):
                notes.append(Note(path, "pruned", f"{path}: kept {new[path].spec()} (the "
                                  f"values of the top {len(top)} trials)"))
            else:
                notes.append(Note(path, "kept", f"{path}: every choice is among the top "
                                  f"{len(top)} trials; kept"))
        else:
            new[path], note = _narrow_range(path, dim, [float(v) for v in vals],
                                            float(best[path]), margin, len(top))
            notes.append(note)
    return new, notes


def _narrow_range(path: str, dim: space_lib.Dimension, vals: list[float], best: float,
                  margin: float, k: int) -> tuple[space_lib.Dimension, Note]:
    f, finv = _unit(dim)
    lo, hi = f(dim.lo), f(dim.hi)
    width = hi - lo
    u = [f(v) for v in vals]
    a = max(min(u) - margin * width, lo)
    b = min(max(u) + margin * width, hi)
    pos = (f(best) - lo) / width
    side = "low" if pos < margin else "high" if pos > 1 - margin else None
    if side == "low":
        a = lo - width / 2
    elif side == "high":
        b = hi + width / 2
    dlo, dhi = _domain(path, dim)
    if dlo is not None:
        a = max(a, f(dlo)) if not dim.log or dlo > 0 else a
    if dhi is not None:
        b = min(b, f(dhi))
    if b - a < 1e-3 * width:  # all top values equal and margin 0: keep a sliver around them
        a, b = a - 5e-4 * width, b + 5e-4 * width
    new = _make(dim, finv(a), finv(b))
    old = f"[{_fmt(dim.lo)}, {_fmt(dim.hi)}]"
    now = f"[{_fmt(new.lo)}, {_fmt(new.hi)}]"
    scale = " (log scale)" if dim.log else ""
    if side is None:
        return new, Note(path, "narrowed", f"{path}: {old} -> {now}, around the top {k} "
                         f"trials ({_fmt(min(vals))} .. {_fmt(max(vals))})")
    moved = (new.lo < dim.lo) if side == "low" else (new.hi > dim.hi)
    where = f"best {_fmt(best)} is within {100 * margin:.0f} % of the {side} edge of {old}{scale}"
    if not moved:
        return new, Note(path, "edge", f"{path}: {where}, which is the field's limit; "
                         f"range {now}")
    return new, Note(path, "shifted", f"{path}: {where}; shifted the range "
                     f"{'down' if side == 'low' else 'up'} to {now}")


def _make(dim: space_lib.Dimension, lo: float, hi: float) -> space_lib.Dimension:
    if isinstance(dim, space_lib.IntUniform):
        ilo, ihi = math.floor(lo + 1e-9), math.ceil(hi - 1e-9)
        if dim.log:
            ilo = max(ilo, 1)
        if ihi <= ilo:
            ihi = ilo + 1
        return space_lib.IntUniform(ilo, ihi, dim.log)
    return type(dim)(lo, hi)


# -- results -------------------------------------------------------------------------------

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
    """

    best_config: ml_collections.ConfigDict | None
    best: dict[str, Any] | None
    trials: list[dict[str, Any]]
    stages: list[dict[str, Any]]
    edge_warnings: list[str]
    lines: list[str]
    workdir: str

    @property
    def epochs_spent(self) -> float:
        """Trial-epochs actually trained; an aborted epoch counts the fraction it ran."""
        return _spent(self.trials)

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


def _spent(records: Sequence[Mapping[str, Any]]) -> float:
    total = 0.0
    for r in records:
        if r["status"] != "running":
            v = r.get("epochs_trained")
            total += float(v if v is not None else (r["epochs_run"] or 0))
    return round(total, 3)


# -- KerasTuner plumbing -----------------------------------------------------------------------

class _Hooked:
    """An oracle that calls ``on_end(oracle, trial)`` after every ended trial.

    On the chief of a distributed search the oracle is the only place that sees every
    trial end (its tuner blocks in the gRPC server), so the results are written here.

    Its state files are written atomically: KerasTuner writes ``oracle.json`` and each
    ``trial.json`` in place, and a SIGKILL mid-write leaves an empty file that no rerun can
    reload (found by tests/test_kill_resume.py).
    """

    on_end = None

    def save(self):
        io.write_json(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial):
        io.write_json(os.path.join(self._get_trial_dir(trial.trial_id), "trial.json"),
                      trial.get_state())

    def reload(self):
        # KerasTuner retries the trials its saved state lists as ongoing. A stop between
        # ``create_trial``'s two saves (the trial's file, then the oracle's) leaves a trial
        # RUNNING on disk but in no list: retry it too, or it is lost.
        super().reload()
        for trial_id, trial in self.trials.items():
            if trial.status == kt.engine.trial.TrialStatus.RUNNING and \
                    trial_id not in self._retry_queue:
                self._retry_queue.append(trial_id)

    @kt.synchronized
    def end_trial(self, trial):
        super().end_trial(trial)
        # KerasTuner saves its state *before* it drops the trial from ``ongoing_trials``, so a
        # process stopped here would re-run this finished trial on resume; save again.
        self.save()
        if self.on_end is not None:
            self.on_end(self, trial)


class _RandomOracle(_Hooked, kt.oracles.RandomSearchOracle):
    pass


class _GridOracle(_Hooked, kt.oracles.GridSearchOracle):
    pass


class _TunerMixin:
    """Declares the space without building a model, records explosions, frees memory.

    Like the oracle's, the tuner's state file (``tuner0.json``) is written atomically.
    """

    def save(self):
        if not self._is_worker():
            self.oracle.save()
        io.write_json(self._get_tuner_fname(), self.get_state())

    def _populate_initial_space(self):
        # KerasTuner builds the model once to discover the space; ours is declared upfront.
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def run_trial(self, trial, *args, **kwargs):
        out = super().run_trial(trial, *args, **kwargs)
        last = self.hypermodel.last
        trial.message = last.reason if last is not None and last.exploded else None
        return out

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        keras.backend.clear_session()  # memory stays flat (KerasTuner clears only on build)
        if self._is_worker() and self.on_worker_line is not None:
            self.on_worker_line(trial)

    on_worker_line = None


class _RandomTuner(_TunerMixin, kt.RandomSearch):
    """``keras_tuner.RandomSearch`` with the hooked ``RandomSearchOracle``."""

    def __init__(self, hypermodel, *, oracle, **kwargs):
        kt.Tuner.__init__(self, oracle, hypermodel, **kwargs)


class _GridTuner(_TunerMixin, kt.GridSearch):
    """``keras_tuner.GridSearch`` with the hooked ``GridSearchOracle``."""

    def __init__(self, hypermodel, *, oracle, **kwargs):
        kt.Tuner.__init__(self, oracle, hypermodel, **kwargs)


@contextlib.contextmanager
def _env(values: Mapping[str, str | None]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _distribution(role: str | None, oracle: str | None, tuner_id: str | None
                  ) -> tuple[str, str | None, int | None, str | None]:
    """Resolves role/oracle/tuner id from the arguments or KerasTuner's env variables."""
    env_ip = os.environ.get("KERASTUNER_ORACLE_IP")
    env_id = os.environ.get("KERASTUNER_TUNER_ID")
    if role in (None, "", "none") and not oracle and env_ip:
        role = "chief" if env_id and "chief" in env_id else "worker"
        oracle = f"{env_ip}:{os.environ.get('KERASTUNER_ORACLE_PORT', '')}"
        tuner_id = tuner_id or env_id
    role = role or "none"
    if role not in ROLES:
        raise ValueError(f"--role={role!r}: use chief, worker or none")
    if role == "none":
        if oracle:
            raise ValueError("--oracle needs --role=chief or --role=worker")
        return role, None, None, None
    if not oracle:
        raise ValueError(f"--role={role} needs --oracle=HOST:PORT (the chief's address)")
    host, _, port = oracle.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--oracle={oracle!r}: expected HOST:PORT, e.g. 10.0.0.1:8000")
    if role == "chief":
        tuner_id = "chief"
    else:
        tuner_id = tuner_id or env_id or f"worker-{socket.gethostname()}-{os.getpid()}"
        if "chief" in tuner_id:
            raise ValueError(f"--tuner_id={tuner_id!r}: a worker's id must not contain "
                             "'chief' (KerasTuner treats such a tuner as the chief)")
    return role, host, int(port), tuner_id


def _check_request(workdir: str, request: dict[str, Any], overwrite: bool) -> None:
    """Refuses a workdir that holds another search (or a finished one) unless ``overwrite``.

    Writes nothing: with ``overwrite`` the new search is staged beside the old one and
    swapped in once it has finished (``recipes.workdir.replacing``).
    """
    wd.check_path(workdir)
    path = os.path.join(workdir, "search.json")
    if overwrite:
        return
    if os.path.exists(path):
        old = io.read_json(path, what="search request")
        diff = _differences(old, request)
        if diff:
            raise ValueError(f"--workdir {workdir} holds another search (differs in "
                             f"{', '.join(diff)}); rerun the same command to resume it, use "
                             "a new workdir, or --overwrite to replace it once the new "
                             "search has finished")
    elif os.path.isdir(os.path.join(workdir, "kt")):
        raise ValueError(f"--workdir {workdir} holds KerasTuner state but no search.json; "
                         "use a new workdir or --overwrite")


def _continues(directory: str, request: dict[str, Any], finished_too: bool = False) -> bool:
    """Whether ``directory`` holds this very search, unfinished (or finished too)."""
    path = os.path.join(directory, "search.json")
    if not os.path.exists(path):
        return False
    if os.path.exists(os.path.join(directory, "result.json")) and not finished_too:
        return False
    try:
        return not _differences(io.read_json(path, what="search request"), request)
    except ValueError:
        return False


def check_space_values(cfg: ml_collections.ConfigDict, space: space_lib.Space,
                       splits: data.Splits) -> None:
    """Builds a run at every edge of the space before the search writes anything.

    Each ``choice`` member and both bounds of every range are set into the config and
    prepared (``recipes.train.prepare``: data pipeline, model, optimizer, schedule), so a bad
    value fails now, naming it, rather than when a trial happens to draw it.

    Raises:
        ValueError: ``search.space: PATH=VALUE ...: the reason``.
    """
    for path, value in space_lib.edge_values(space):
        if path in _DATA_FIELDS:
            continue  # each trial loads its own data; data.load checks these
        try:
            train.prepare(space_lib.apply(cfg, {path: value}), splits=splits)
        except ValueError as e:
            raise ValueError(f"search.space: {path}={space_lib.value_text(value)} is not a "
                             f"valid value: {e}") from None


def _check_state(project_dir: str, index: int) -> None:
    """Names a corrupt KerasTuner state file (e.g. half-written by an older version).

    KerasTuner would fail with a bare ``JSONDecodeError``; this says which file and the fix.
    """
    if not os.path.isdir(project_dir):
        return
    for base, _, files in os.walk(project_dir):
        for name in sorted(files):
            if not name.endswith(".json") or name.startswith("."):
                continue
            path = os.path.join(base, name)
            try:
                with open(path, encoding="utf-8") as f:
                    json.load(f)
            except (ValueError, UnicodeDecodeError) as e:
                raise ValueError(f"KerasTuner state {path} is corrupt or half-written ({e}); "
                                 f"move {project_dir} away to rerun stage {index}, or use a "
                                 "new workdir") from e


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON trees differ (``config.optimizer.name``, ``space``)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            if prefix.startswith("config.") and (key not in old or key not in new):
                continue  # a field a newer babysit added (or dropped): not the user's change
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [prefix.rstrip(".")] if _canonical(old) != _canonical(new) else []


def _canonical(x: Any) -> str:
    return json.dumps(json.loads(json.dumps(x, default=list)), sort_keys=True)


def _request_config(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    tree = json.loads(json.dumps(cfg.to_dict(), default=list))
    tree.get("train", {}).pop("verbose", None)  # changes no result
    return tree


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


class _Run:
    """One search's shared state: config, data, workdir, records of the finished stages."""

    def __init__(self, cfg: ml_collections.ConfigDict, stages: list[Stage], *, workdir: str,
                 strategy: str, splits: data.Splits | None, seed: int, verbose: int, role: str,
                 host: str | None, port: int | None, tuner_id: str | None, keep_top: int,
                 margin: float):
        self.cfg = cfg
        self.stages = stages
        self.workdir = workdir
        self.strategy = strategy
        self.splits = splits
        self.seed = seed
        self.verbose = verbose
        self.role, self.host, self.port, self.tuner_id = role, host, port, tuner_id
        self.keep_top, self.margin = keep_top, margin
        self.params: list[str] = []
        self.names: dict[str, str] = {}
        self.done: list[dict[str, Any]] = []  # records of the finished stages
        self.factor = float(cfg.monitor.explosion_factor)
        self.ended_here = 0  # trials this process finished (for _RECYCLE)
        self.shown = workdir  # the user's workdir (self.workdir may be its staged copy)

    # -- per trial (oracle hook: local process or chief) --
    def _stage_records(self, oracle: kt.Oracle, index: int) -> list[dict[str, Any]]:
        recs = [results.record(t, stage=index, config=self.cfg, explosion_factor=self.factor)
                for t in oracle.trials.values()]
        return sorted(recs, key=lambda r: (r["number"], r["trial"]))

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
        more = left > 0 or index < len(self.stages)
        if more and self.role == "none" and 0 < _RECYCLE["every"] <= self.ended_here:
            _reexec(self.ended_here)

    def on_worker_line(self, index: int, stage: Stage, tuner: kt.Tuner, trial: Any) -> None:
        if not self.verbose:
            return
        last = tuner.hypermodel.last
        if last is None or str(trial.status).upper() != "COMPLETED":
            print(f"trial {int(trial.trial_id) + 1} / {stage.trials} failed  [{self.tuner_id}, "
                  f"stage {index}]", flush=True)
            return
        rec = {"values": space_lib.decode(trial.hyperparameters.values, self.cfg),
               "val_accuracy": last.val_accuracy, "number": int(trial.trial_id) + 1,
               "status": "exploded" if last.exploded else "completed", "reason": last.reason}
        print(results.line(rec, stage.trials, self.names) + f"  [{self.tuner_id}, stage "
              f"{index}]", flush=True)

    # -- per stage --
    def run_stage(self, index: int, stage: Stage, space: space_lib.Space
                  ) -> list[dict[str, Any]]:
        points = space_lib.grid_points(space, stage.trials) if self.strategy == "grid" else None
        model = hm_lib.ConfigHyperModel(self.cfg, space, epochs=stage.epochs,
                                        splits=self.splits, grid_points=points)
        oracle_cls = _GridOracle if self.strategy == "grid" else _RandomOracle
        oracle = oracle_cls(objective=kt.Objective("val_accuracy", "max"),
                            max_trials=stage.trials, seed=self.seed * 1000 + index)
        clock = {"start": time.time(), "ended": 0}
        oracle.on_end = lambda o, t: self.on_end(index, stage, clock, o, t)
        env: dict[str, str | None] = {"KERASTUNER_TUNER_ID": None, "KERASTUNER_ORACLE_IP": None,
                                      "KERASTUNER_ORACLE_PORT": None}
        if self.role != "none":
            env = {"KERASTUNER_TUNER_ID": self.tuner_id, "KERASTUNER_ORACLE_IP": self.host,
                   "KERASTUNER_ORACLE_PORT": str(self.port + index - 1)}
        tuner_cls = _GridTuner if self.strategy == "grid" else _RandomTuner
        _check_state(os.path.join(self.workdir, "kt", f"stage{index}"), index)
        with _env(env), contextlib.redirect_stdout(_Quiet(sys.stdout)):
            tuner = tuner_cls(model, oracle=oracle, directory=os.path.join(self.workdir, "kt"),
                              project_name=f"stage{index}", overwrite=False)
            tuner.on_worker_line = lambda t: self.on_worker_line(index, stage, tuner, t)
            tuner.search(verbose=0)
        keras.backend.clear_session()
        if self.role == "worker":
            return []
        return self._stage_records(tuner.oracle, index)


class _Quiet:
    """Stdout without KerasTuner's chatter ("Reloading Tuner from ...", its oracle display)."""

    _DROP = ("Reloading Tuner from", "Reloading Oracle from")

    def __init__(self, stream):
        self._stream = stream
        self._dropped = False

    def write(self, text: str) -> int:
        dropped, self._dropped = self._dropped, text.startswith(self._DROP)
        if self._dropped or (dropped and text == "\n"):
            return len(text)
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


# -- public API ----------------------------------------------------------------------------------

def search(config: Any, space: Any, trials: int, epochs: int, workdir: str, *,
           strategy: str = "random", splits: data.Splits | None = None, seed: int = 0,
           role: str | None = None, oracle: str | None = None, tuner_id: str | None = None,
           verbose: int = 1, overwrite: bool = False) -> SearchResult:
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
        strategy: ``random`` (``keras_tuner.RandomSearch``) or ``grid`` (``GridSearch``,
            as many points per range as fit in ``trials``).
        splits: already-loaded data shared by the trials (None: loaded once here).
        seed: the oracle's sampling seed.
        role: ``chief`` / ``worker`` for KerasTuner's distributed mode (None: from the
            ``KERASTUNER_*`` variables if set, else a local search).
        oracle: ``HOST:PORT`` of the chief (the address a chief binds).
        tuner_id: a worker's id (unique per worker; a stable id lets a restarted worker
            resume its trial).
        verbose: 0 quiet, else one lecture-format line per finished trial.
        overwrite: discard a previous search in ``workdir``.

    Returns:
        A :class:`SearchResult`.

    Raises:
        ValueError: a bad space, config, argument or workdir.
    """
    return coarse_to_fine(config, space, [Stage(trials, epochs)], keep_top=1, workdir=workdir,
                          strategy=strategy, splits=splits, seed=seed, role=role, oracle=oracle,
                          tuner_id=tuner_id, verbose=verbose, overwrite=overwrite)


def coarse_to_fine(config: Any, space: Any, stages: Any, keep_top: int = 5, workdir: str = "",
                   *, strategy: str = "random", splits: data.Splits | None = None,
                   seed: int = 0, margin: float = EDGE_MARGIN, role: str | None = None,
                   oracle: str | None = None, tuner_id: str | None = None, verbose: int = 1,
                   overwrite: bool = False) -> SearchResult:
    """Coarse-to-fine search: stage after stage, each range fitted around the top trials.

    CS231n: "first stage: only a few epochs to get a rough idea of what params work; second
    stage: longer running time, finer search". After every stage but the last, :func:`narrow`
    fits each range to the ``keep_top`` best trials and shifts a range whose best value sits
    on its edge (with a warning). The ranges of every stage go to ``stages.json``. The best
    trial is the best of the last (longest) stage.

    Args:
        config: the base config tree.
        space: a space mapping or string (None: ``config.search.space``).
        stages: ``[Stage(trials, epochs), ...]`` or ``"20x2,10x8"``.
        keep_top: how many top trials the next stage's ranges span.
        workdir: the search's directory (required).
        strategy: ``random`` or ``grid``.
        splits: already-loaded data shared by all trials.
        seed: sampling seed (stage ``i`` uses ``seed * 1000 + i``).
        margin: fraction of a range for the widening and the edge test.
        role: ``chief`` / ``worker`` (distributed; each stage uses port ``PORT + i - 1``).
        oracle: the chief's ``HOST:PORT``.
        tuner_id: a worker's id.
        verbose: 0 quiet, else one line per finished trial and the stage ranges.
        overwrite: discard a previous search in ``workdir``.

    Returns:
        A :class:`SearchResult` (empty on a worker: the chief holds the results).

    Raises:
        ValueError: a bad space, stage list, config, argument or workdir.
    """
    if not workdir:
        raise ValueError("--workdir is required: give a directory for the search")
    if strategy not in STRATEGIES:
        raise ValueError(f"--strategy={strategy!r}: use random or grid")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed must be an integer >= 0, got {seed!r}")
    cfg = configs.complete(config)
    space = space_lib.from_mapping(space, cfg)
    stages = parse_stages(stages)
    if isinstance(keep_top, bool) or not isinstance(keep_top, int) or keep_top < 1:
        raise ValueError(f"--keep_top must be an integer >= 1, got {keep_top!r}")
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin!r}")
    if cfg.dataset.val_size in (0, 0.0):
        raise ValueError("a search needs a validation split: set dataset.val_size > 0")
    role, host, port, tuner_id = _distribution(role, oracle, tuner_id)
    if port is not None and port + len(stages) - 1 > 65535:
        raise ValueError(f"--oracle port {port}: stage i uses port+i-1; choose a lower port")

    request = {"config": _request_config(cfg), "space": space_lib.to_string(space),
               "stages": [[s.trials, s.epochs] for s in stages], "strategy": strategy,
               "keep_top": keep_top, "seed": seed, "margin": margin}
    if role != "worker":
        _check_request(workdir, request, overwrite)
    if splits is None and role != "chief" and not any(p in space for p in _DATA_FIELDS):
        splits = data.load(cfg.dataset.name, data_dir=cfg.dataset.data_dir or None,
                           val_size=cfg.dataset.val_size, seed=cfg.dataset.seed,
                           limit=cfg.dataset.limit)
    if splits is not None:
        check_space_values(cfg, space, splits)
    run = _Run(cfg, stages, workdir=workdir, strategy=strategy, splits=splits, seed=seed,
               verbose=verbose, role=role, host=host, port=port, tuner_id=tuner_id,
               keep_top=keep_top, margin=margin)
    run.params = list(space)
    run.names = results.short_names(run.params)
    run.shown = workdir  # the path to print: run.workdir may become a staged replacement
    if role == "worker":  # shares the chief's workdir: the chief holds its lock
        os.makedirs(workdir, exist_ok=True)
        return _search_in(run, space, request)
    with wd.locked(workdir):
        _check_request(workdir, request, overwrite)  # it may have changed meanwhile
        if overwrite and wd.holds_files(workdir) and not _continues(workdir, request):
            with wd.replacing(workdir, can_continue=lambda d: _continues(d, request, True)) as d:
                run.workdir = d
                return _search_in(run, space, request)
        return _search_in(run, space, request)


def _search_in(run: _Run, space: space_lib.Space, request: dict[str, Any]) -> SearchResult:
    """The search's stages, in ``run.workdir`` (the user's, or a staged replacement)."""
    workdir, role, stages, verbose = run.workdir, run.role, run.stages, run.verbose
    strategy, keep_top, margin = run.strategy, run.keep_top, run.margin
    if role != "worker":
        io.remove_stale_temps(workdir)  # a SIGKILLed attempt's half-written files
        io.write_json(os.path.join(workdir, "search.json"), request)
    stage_info: list[dict[str, Any]] = []
    warnings_: list[str] = []
    current = space
    for index, stage in enumerate(stages, 1):
        if verbose:
            over = ("the chief's ranges" if role == "worker"
                    else space_lib.to_string(current))
            print(f"stage {index}/{len(stages)}: {stage.trials} trials x {stage.epochs} "
                  f"epochs, {strategy} search over {over}", flush=True)
        recs = run.run_stage(index, stage, current)
        if role == "worker":
            continue
        run.done += recs
        info = {"stage": index, "trials": stage.trials, "epochs": stage.epochs,
                "space": space_lib.to_string(current), "ranges": space_lib.describe(current),
                "notes": [], "best": results.best_of(recs),
                "epochs_spent": _spent(recs)}
        stage_info.append(info)
        if index < len(stages):
            current, notes = narrow(current, recs, keep_top, margin)
            info["notes"] = [dataclasses.asdict(n) for n in notes]
            for n in notes:
                if n.warning:
                    warnings_.append(n.message)
                    _warn(n.message, verbose)
        io.write_json(os.path.join(workdir, "stages.json"), stage_info)

    if role == "worker":
        return SearchResult(None, None, [], [], [], [], workdir)
    return _finish(run, stage_info, warnings_, current)


def _warn(message: str, verbose: int) -> None:
    """A warning on the search's own output when it prints, else through logging."""
    if verbose:
        print(f"warning: {message}", flush=True)
    else:
        logger.warning("%s", message)


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
    plots_dir = os.path.join(workdir, "plots")
    try:
        results.plot_params(recs, stage_info[0]["ranges"], plots_dir)
        results.plot_lr_reg(recs, [s["ranges"] for s in stage_info],
                            os.path.join(plots_dir, "lr_reg.png"))
    except Exception as e:  # noqa: BLE001 - a plot must never lose a finished search
        logger.warning("search plots failed: %s: %s", type(e).__name__, e)
    result = SearchResult(best_config, best, recs, stage_info, warnings_, lines, run.shown)
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


def search_step(config: Any, *, splits: data.Splits | None = None, workdir: str,
                verbose: int = 1) -> dict[str, Any]:
    """The babysitting procedure's search step, driven by ``config.search``.

    Runs :func:`coarse_to_fine` with ``config.search.space``, ``stages``, ``keep_top``,
    ``strategy`` and ``seed``.

    Args:
        config: the full config tree.
        splits: already-loaded data.
        workdir: the step's directory.
        verbose: 0 quiet, else a line per trial.

    Returns:
        ``{"best_config": ConfigDict, "best": {"values", "val_accuracy", ...},
        "stages": [per-stage ranges], "edge_warnings": [...], "lines": [...],
        "search": diagnose's stats["search"] (also under "edges"), "epochs_spent": float}``;
        ``best`` and ``best_config`` are None when no trial completed (all exploded).
    """
    cfg = configs.complete(config)
    s = cfg.search
    res = coarse_to_fine(cfg, s.space, s.stages, keep_top=int(s.keep_top), workdir=workdir,
                         strategy=s.strategy, splits=splits, seed=int(s.seed), verbose=verbose)
    return {"best_config": res.best_config, "best": res.best, "stages": res.stages,
            "edge_warnings": res.edge_warnings, "lines": res.lines,
            "search": res.diagnose_stats(), "edges": res.diagnose_stats(),
            "epochs_spent": res.epochs_spent}


# -- command line ----------------------------------------------------------------------------

#: Set by the CLI only: re-execute the command after this many finished trials (0 = never).
_RECYCLE: dict[str, Any] = {"every": 0, "argv": None, "verbose": True, "cli_argv": []}


def _reexec(trials: int) -> None:
    """Replaces this process by a fresh run of the same command, which resumes the search.

    TensorFlow keeps every trained model's traced functions (~4.5 MB per model with Keras
    3.15 / TF 2.21, in plain ``model.fit`` too; ``keras.backend.clear_session`` and
    ``gc.collect`` do not free them), so a long search's memory grows with its trials.
    Like a web server's ``max_requests``, the CLI starts afresh every ``--recycle_every``
    trials: the state on disk is complete at any moment (tests/test_kill_resume.py kills
    the search at random), so the new process resumes where this one stopped, same PID.
    """
    if _RECYCLE["verbose"]:
        print(f"(restarting the process after {trials} trials to free TensorFlow's memory; "
              "the search resumes)", flush=True)
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "tuning.search", *_RECYCLE["argv"]])

def _define_flags() -> None:
    from absl import flags

    if "space" in flags.FLAGS:
        return
    flags.DEFINE_string("space", None, "Search space, e.g. optimizer.learning_rate=log:1e-6:"
                        "1e-3,model.l2=log:1e-5:1e5 (default: the config's search.space). "
                        "See docs/search.md.")
    flags.DEFINE_integer("trials", None, "Trials of a one-stage search.")
    flags.DEFINE_integer("epochs", None, "Epochs per trial of a one-stage search (default: "
                         "the config's train.epochs).")
    flags.DEFINE_string("stages", None, "Coarse-to-fine stages TRIALSxEPOCHS, e.g. 20x2,10x8 "
                        "(default without --trials: the config's search.stages).")
    flags.DEFINE_integer("keep_top", None, "Top trials the next stage's ranges span "
                         "(default: search.keep_top).")
    flags.DEFINE_string("strategy", None, "random | grid (default: search.strategy).")
    flags.DEFINE_integer("seed", None, "Sampling seed (default: search.seed).")
    flags.DEFINE_string("role", None, "Distributed search: chief | worker (default: none, or "
                        "from KERASTUNER_TUNER_ID).")
    flags.DEFINE_string("oracle", None, "The chief's HOST:PORT (or KERASTUNER_ORACLE_IP/"
                        "_PORT); stage i uses PORT+i-1.")
    flags.DEFINE_string("tuner_id", None, "A worker's unique id (or KERASTUNER_TUNER_ID).")
    flags.DEFINE_integer("recycle_every", 25, "Restart the process (it resumes) every N "
                         "finished trials so TensorFlow's per-model memory is freed; 0 = "
                         "never. Local searches only.")


def _cli(cfg: ml_collections.ConfigDict, flags: Any) -> None:
    s = cfg.search
    if flags.stages and (flags.trials is not None or flags.epochs is not None):
        raise ValueError("give either --stages (coarse to fine) or --trials/--epochs "
                         "(one stage), not both")
    if flags.epochs is not None and flags.trials is None:
        raise ValueError("--epochs needs --trials (or use --stages=TRIALSxEPOCHS,...)")
    if flags.trials is not None:
        stages = [Stage(flags.trials, flags.epochs if flags.epochs is not None
                        else int(cfg.train.epochs))]
    else:
        stages = parse_stages(flags.stages or s.stages)
    verbose = 0 if flags.verbose == 0 else 1
    if flags.recycle_every < 0:
        raise ValueError(f"--recycle_every must be >= 0 (0 = never), got {flags.recycle_every}")
    # A restart re-runs the same command, --overwrite included: an unfinished search of the
    # same request resumes where it is, in the workdir or in its staged replacement.
    _RECYCLE.update(every=flags.recycle_every, verbose=bool(verbose),
                    argv=list(_RECYCLE["cli_argv"][1:]))
    try:
        coarse_to_fine(cfg, flags.space or s.space, stages,
                       keep_top=flags.keep_top if flags.keep_top is not None else int(s.keep_top),
                       workdir=flags.workdir, strategy=flags.strategy or s.strategy,
                       seed=flags.seed if flags.seed is not None else int(s.seed),
                       role=flags.role, oracle=flags.oracle, tuner_id=flags.tuner_id,
                       verbose=verbose, overwrite=flags.overwrite)
    finally:  # in-process callers (tests, notebooks) never re-exec later
        _RECYCLE.update(every=0, argv=None)


def main(argv: list[str] | None = None) -> None:
    """``python -m tuning.search --config=NAME_OR_PATH --space=... --trials=N --epochs=E``."""
    from recipes import cli

    _define_flags()
    argv = list(argv if argv is not None else sys.argv)
    _RECYCLE["cli_argv"] = argv  # what a recycled process re-executes
    cli.main_for(_cli, argv, prog="tuning.search")


class _CallableModule(types.ModuleType):
    """``tuning.search`` is both this module and, called, :func:`search` (DESIGN.md's names)."""

    def __call__(self, *args: Any, **kwargs: Any) -> SearchResult:
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    # Run the package's copy of this module (``tuning`` imports it), not a second one.
    import importlib

    importlib.import_module("tuning.search").main()
