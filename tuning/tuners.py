"""KerasTuner plumbing: hooked oracles and tuners, atomic state, distribution, state checks.

``keras_tuner.RandomSearch`` / ``GridSearch`` / ``Hyperband`` as the search runs them:

* the oracle calls ``on_end(oracle, trial)`` after every ended trial (on a distributed
  search's chief, the only place that sees every trial end), and writes its state
  atomically, so a SIGKILL at any moment resumes (tests/test_kill_resume.py);
* the tuner declares the space without building a model, records why a trial exploded and
  clears Keras' session after each trial;
* :func:`resolve_role` and :func:`environment` set KerasTuner's chief/worker variables;
  :func:`stage_watch` ends a worker's wait on a stage the chief has already closed;
* :func:`hyperband_plan` says how many trials and trial-epochs a Hyperband stage spends
  (Li et al. 2018, "Hyperband"), :func:`hyperband_values` splits KerasTuner's bookkeeping
  (``tuner/epochs``, ``tuner/trial_id``, ...) off a trial's values;
* :func:`check_state` names a corrupt state file instead of KerasTuner's bare
  ``JSONDecodeError``; :class:`QuietStdout` drops KerasTuner's "Reloading ..." chatter.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import json
import math
import os
import socket
import sys
import threading
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TextIO

import keras
import keras_tuner as kt

from recipes import io

__all__ = ["ROLES", "STRATEGIES", "HYPERBAND_KEYS", "HyperbandPlan", "hyperband_plan",
           "hyperband_values", "trial_view", "make_oracle", "make_tuner", "check_state",
           "resolve_role", "environment", "stage_watch", "QuietStdout", "quiet_stdout",
           "frozen_heap"]

ROLES = ("none", "chief", "worker")
STRATEGIES = ("random", "grid", "hyperband")
#: The values KerasTuner's Hyperband adds to a trial's hyperparameters (not config paths).
HYPERBAND_KEYS = ("tuner/epochs", "tuner/initial_epoch", "tuner/bracket", "tuner/round",
                  "tuner/trial_id")
_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


# -- oracles -----------------------------------------------------------------------------------

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

    def finished(self) -> bool:
        """Every trial exists and ended, none waits for a retry (a resumed, finished stage)."""
        return bool(self.max_trials) and len(self.trials) >= self.max_trials and \
            not self._retry_queue and not self.ongoing_trials

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


class _HyperbandOracle(_Hooked, kt.oracles.HyperbandOracle):
    pass


@dataclasses.dataclass(frozen=True)
class HyperbandPlan:
    """What one Hyperband stage runs: KerasTuner's brackets, ``iterations`` times over.

    Attributes:
        max_epochs: the longest a trial trains (the stage's EPOCHS).
        factor: Hyperband's reduction factor (``search.hyperband_factor``).
        iterations: whole Hyperband iterations (every bracket once each).
        brackets: per bracket (most aggressive first, as KerasTuner runs them), per round
            ``(trials, from_epoch, to_epoch)``; a round after the first continues the best
            ``trials`` of the round before from their checkpoints.
    """

    max_epochs: int
    factor: int
    iterations: int
    brackets: tuple[tuple[tuple[int, int, int], ...], ...]

    @property
    def trials(self) -> int:
        """Trials the stage runs (a continued one counts again)."""
        return self.iterations * sum(n for b in self.brackets for n, _, _ in b)

    @property
    def trial_epochs(self) -> int:
        """Trial-epochs the stage trains at most (an aborted trial spends less)."""
        return self.iterations * sum(n * (to - frm) for b in self.brackets for n, frm, to in b)

    def to_dict(self) -> dict[str, Any]:
        return {"max_epochs": self.max_epochs, "factor": self.factor,
                "iterations": self.iterations, "trials": self.trials,
                "trial_epochs": self.trial_epochs,
                "brackets": [[list(r) for r in b] for b in self.brackets]}


def _brackets(max_epochs: int, factor: int) -> tuple[tuple[tuple[int, int, int], ...], ...]:
    """KerasTuner's ``HyperbandOracle`` arithmetic (``_get_size``, ``_get_epochs``)."""
    count, e = 0, float(max_epochs)
    while e >= 1:  # _get_num_brackets, min_epochs 1
        e, count = e / factor, count + 1
    end = math.ceil(1 + math.log(max_epochs, factor))

    def epochs(b: int, r: int) -> int:
        return math.ceil(max_epochs / factor ** (b - r))

    return tuple(
        tuple((math.ceil(end / (b + 1) * factor ** (b - r)), epochs(b, r - 1) if r else 0,
               epochs(b, r)) for r in range(b + 1))
        for b in reversed(range(count)))


def hyperband_plan(trials: int, epochs: int, factor: int = 3) -> HyperbandPlan:
    """The Hyperband run standing for a stage ``TRIALSxEPOCHS`` (Li et al. 2018, "Hyperband").

    ``max_epochs`` is the stage's EPOCHS; the iterations are as many as bring the stage's
    trial-epochs closest to the ``trials × epochs`` a random stage would spend, at least
    one. One iteration spends ``sum over rounds of trials × (to_epoch - from_epoch)``: with
    factor 3, 11 trial-epochs for max_epochs 3 (3 trials × 1 epoch, the best continued to 3,
    2 × 3), 75 for max_epochs 9 (23 trials). An exploded trial spends less, so the actual
    count (``epochs_spent``) is at most :attr:`HyperbandPlan.trial_epochs`.

    Args:
        trials: the stage's TRIALS.
        epochs: the stage's EPOCHS (Hyperband's ``max_epochs``).
        factor: the reduction factor, an integer >= 2.

    Raises:
        ValueError: a factor below 2.
    """
    ok = isinstance(factor, int) or (isinstance(factor, float) and factor.is_integer())
    if isinstance(factor, bool) or not ok or factor < 2:
        raise ValueError(f"search.hyperband_factor must be an integer >= 2, got {factor!r}")
    brackets = _brackets(int(epochs), int(factor))
    once = HyperbandPlan(int(epochs), int(factor), 1, brackets).trial_epochs
    iterations = max(1, math.floor(trials * epochs / once + 0.5))
    return HyperbandPlan(int(epochs), int(factor), iterations, brackets)


def hyperband_values(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config values, Hyperband's bookkeeping)`` of a trial's hyperparameter values."""
    return ({k: v for k, v in values.items() if k not in HYPERBAND_KEYS},
            {k: v for k, v in values.items() if k in HYPERBAND_KEYS})


def trial_view(trial: Any) -> Any:
    """``trial`` whose hyperparameter values hold only config paths (the trial if so already).

    A shallow copy: metrics, status and message are the trial's own.
    """
    values, extra = hyperband_values(trial.hyperparameters.values)
    if not extra:
        return trial
    view = copy.copy(trial)
    view.hyperparameters = types.SimpleNamespace(values=values)
    return view


def make_oracle(strategy: str, *, max_trials: int, seed: int,
                on_end: Callable[[kt.Oracle, Any], None] | None = None,
                plan: HyperbandPlan | None = None) -> kt.Oracle:
    """The hooked ``RandomSearchOracle``, ``GridSearchOracle`` or ``HyperbandOracle``.

    Args:
        strategy: ``random``, ``grid`` or ``hyperband``.
        max_trials: the stage's trials (``hyperband``: ``plan.trials``).
        seed: the sampling seed.
        on_end: called as ``on_end(oracle, trial)`` after every ended trial, with the
            oracle's state already saved.
        plan: ``hyperband``'s :func:`hyperband_plan`.
    """
    objective = kt.Objective("val_accuracy", "max")
    if strategy == "hyperband":
        if plan is None:
            raise ValueError("a hyperband oracle needs its plan (tuning.tuners.hyperband_plan)")
        oracle = _HyperbandOracle(objective=objective, max_epochs=plan.max_epochs,
                                  factor=plan.factor, hyperband_iterations=plan.iterations,
                                  seed=seed)
        oracle.max_trials = plan.trials  # the plan's count exactly: ends the stage on resume
    else:
        cls = _GridOracle if strategy == "grid" else _RandomOracle
        oracle = cls(objective=objective, max_trials=max_trials, seed=seed)
    oracle.on_end = on_end
    return oracle


# -- tuners ------------------------------------------------------------------------------------

class _TunerMixin:
    """Declares the space without building a model, records explosions, frees memory.

    Like the oracle's, the tuner's state file (``tuner0.json``) is written atomically.
    """

    on_worker_trial = None

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
        # Memory stays flat (KerasTuner clears only on build). No collection here: the next
        # build collects twice (KerasTuner's clear_session and gc.collect), the stage's end
        # once, so a third per trial would only cost time.
        keras.backend.clear_session(free_memory=False)
        if self._is_worker() and self.on_worker_trial is not None:
            self.on_worker_trial(self, trial)


class _RandomTuner(_TunerMixin, kt.RandomSearch):
    """``keras_tuner.RandomSearch`` with the hooked ``RandomSearchOracle``."""

    def __init__(self, hypermodel, *, oracle, **kwargs):
        kt.Tuner.__init__(self, oracle, hypermodel, **kwargs)


class _GridTuner(_TunerMixin, kt.GridSearch):
    """``keras_tuner.GridSearch`` with the hooked ``GridSearchOracle``."""

    def __init__(self, hypermodel, *, oracle, **kwargs):
        kt.Tuner.__init__(self, oracle, hypermodel, **kwargs)


class _HyperbandTuner(_TunerMixin, kt.Hyperband):
    """``keras_tuner.Hyperband`` with the hooked ``HyperbandOracle``.

    KerasTuner sets ``tuner/epochs`` and ``tuner/initial_epoch`` on every trial and passes
    them to ``fit`` as ``epochs`` / ``initial_epoch``; a trial of a later round also names
    ``tuner/trial_id``, whose checkpoint (weights and optimizer state) it continues from.
    Here the continued trial also gets its parent's initial loss, so the 3× rule still
    applies, and a trial whose parent exploded is recorded as exploded without training
    (there is nothing sane to continue).
    """

    def __init__(self, hypermodel, *, oracle, **kwargs):
        kt.Tuner.__init__(self, oracle, hypermodel, **kwargs)

    def run_trial(self, trial, *args, **kwargs):
        parent_id = trial.hyperparameters.values.get("tuner/trial_id")
        if parent_id is not None:
            parent = self.oracle.get_trial(parent_id)
            m = parent.metrics
            if m.exists("exploded") and m.get_last_value("exploded") > 0:
                out = self.hypermodel.parent_exploded(f"its parent trial {parent_id} exploded")
                trial.message = self.hypermodel.last.reason
                return out
            if m.exists("initial_loss"):
                kwargs["initial_loss"] = float(m.get_last_value("initial_loss"))
        return super().run_trial(trial, *args, **kwargs)


_TUNERS = {"random": _RandomTuner, "grid": _GridTuner, "hyperband": _HyperbandTuner}


def make_tuner(strategy: str, hypermodel: kt.HyperModel, *, oracle: kt.Oracle,
               directory: str, project_name: str,
               on_worker_trial: Callable[[kt.Tuner, Any], None] | None = None) -> kt.Tuner:
    """The tuner of ``strategy`` over ``oracle``, resuming the project's state if any.

    Args:
        strategy: ``random``, ``grid`` or ``hyperband``.
        hypermodel: a ``tuning.hypermodel.ConfigHyperModel``.
        oracle: from :func:`make_oracle`.
        directory: KerasTuner's directory (``WORKDIR/kt``).
        project_name: the stage's project (``stage1``, ...).
        on_worker_trial: on a distributed worker, called as ``on_worker_trial(tuner,
            trial)`` after each of its trials (the chief's oracle sees the others).
    """
    tuner = _TUNERS[strategy](hypermodel, oracle=oracle, directory=directory,
                              project_name=project_name, overwrite=False)
    tuner.on_worker_trial = on_worker_trial
    return tuner


def check_state(project_dir: str, index: int) -> None:
    """Names a corrupt KerasTuner state file (e.g. half-written by an older version).

    KerasTuner would fail with a bare ``JSONDecodeError``; this says which file and the fix.

    Args:
        project_dir: a stage's KerasTuner project (``WORKDIR/kt/stageN``); may be absent.
        index: the stage's number, for the message.

    Raises:
        ValueError: naming the file, and the directory to move away.
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


# -- distribution ------------------------------------------------------------------------------

def resolve_role(role: str | None, oracle: str | None, tuner_id: str | None
                 ) -> tuple[str, str | None, int | None, str | None]:
    """Resolves role/oracle/tuner id from the arguments or KerasTuner's env variables.

    Returns:
        ``(role, host, port, tuner_id)``; role ``none`` has no host, port or id.

    Raises:
        ValueError: a bad role, a missing or malformed ``HOST:PORT``, a worker id with
            ``chief`` in it.
    """
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


@contextlib.contextmanager
def environment(role: str, host: str | None, port: int | None, tuner_id: str | None
                ) -> Iterator[None]:
    """KerasTuner's ``KERASTUNER_*`` variables for one stage, restored afterwards.

    A chief or worker gets its id and the stage's oracle address; a local search (role
    ``none``) runs with the variables unset, whatever the caller's environment holds.
    """
    values: dict[str, str | None] = dict.fromkeys(_ENV)
    if role != "none":
        values = {"KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": host,
                  "KERASTUNER_ORACLE_PORT": str(port)}
    saved = {k: os.environ.get(k) for k in values}
    try:
        _set_env(values)
        yield
    finally:
        _set_env(saved)


def _set_env(values: dict[str, str | None]) -> None:
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@contextlib.contextmanager
def stage_watch(tuner: kt.Tuner, closed: Callable[[], bool], poll: float = 1.0
                ) -> Iterator[None]:
    """On a worker: stops waiting on a chief that has already closed this stage.

    KerasTuner's chief shuts a stage's oracle server once every trial has ended and every
    worker that asked has been told to stop. A worker that asks later (still starting while
    the others ran the last trials) finds the stream cut mid-call, or waits on a closed port
    for up to an hour (``wait_for_ready``). Written by hand: KerasTuner has no such
    timeout. The worker's stub gets a channel this watch owns, and a thread closes it once
    ``closed()`` (the chief has recorded the stage); the pending call then raises, which
    the caller reads as the end of the stage. A local search or a chief: no-op.

    Args:
        tuner: the stage's tuner, made by :func:`make_tuner` inside :func:`environment`.
        closed: True once the chief has finished the stage (read from its workdir).
        poll: seconds between looks.
    """
    if not tuner._is_worker():  # noqa: SLF001 - KerasTuner's own test of the role
        yield
        return
    import grpc  # noqa: PLC0415 - only a distributed worker needs gRPC
    from keras_tuner.src import protos  # noqa: PLC0415

    host, port = os.environ["KERASTUNER_ORACLE_IP"], os.environ["KERASTUNER_ORACLE_PORT"]
    channel = grpc.insecure_channel(f"{host}:{port}")
    tuner.oracle.stub = protos.get_service_grpc().OracleStub(channel)
    done = threading.Event()

    def watch() -> None:
        while not done.wait(poll):
            if closed():
                channel.close()
                return

    thread = threading.Thread(target=watch, name="stage-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        channel.close()


# -- output ------------------------------------------------------------------------------------

class QuietStdout:
    """Stdout without KerasTuner's chatter ("Reloading Tuner from ...", its oracle display)."""

    _DROP = ("Reloading Tuner from", "Reloading Oracle from")

    def __init__(self, stream: TextIO):
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


def quiet_stdout() -> contextlib.AbstractContextManager:
    """Redirects ``sys.stdout`` through :class:`QuietStdout` for the ``with`` block."""
    return contextlib.redirect_stdout(QuietStdout(sys.stdout))


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Keeps the objects alive at the start out of every garbage collection in the block.

    Every trial came with three full collections (KerasTuner's ``clear_session`` and
    ``gc.collect`` before each build, and one after each trial, now dropped): with
    TensorFlow and Keras loaded each scans ~420 000 objects, 0.21 s on 2 AMD EPYC cores
    (another job running), a third of a digits search under cProfile; the search fell from
    55 to 37 s (``benchmarks/babysit_cost.py``). ``gc.freeze`` (CPython 3.7+, made for exactly
    this) moves what is alive now to a permanent generation the collector skips, so the
    per-trial collections scan only what the trials made and still free it; the objects
    are handed back to the collector (``gc.unfreeze``) when the block ends. A block inside
    another leaves the outer one's freeze in place.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
