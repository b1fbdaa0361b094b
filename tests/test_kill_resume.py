"""Killing the commands at random moments loses nothing: rerunning resumes to the same result.

``python -m recipes.train`` is SIGKILLed at seeded random moments (start-up, mid-training,
the final evaluation and save) and restarted with the same command until it finishes; its
``history.csv`` and ``summary.json`` must then equal an uninterrupted run's bit for bit, with
no temporary file left and at most one epoch re-run per kill. SIGINT and SIGTERM stop a run
with a line saying how to resume. ``python -m tuning.search`` gets the same treatment: killed
at random moments and restarted, it ends with the trials, values and scores of an
uninterrupted search, re-running at most the trial each kill interrupted.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
from helpers import snapshot

from recipes import io
from recipes import workdir as wd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 6
# Writes after every epoch (train.save_every_seconds=0): "a kill loses at most one epoch".
ARGS = ["--config=digits_mlp:quick", f"--config.train.epochs={EPOCHS}", "--verbose=2",
        "--config.train.save_every_seconds=0"]
#: Summary fields that measure time, not the result.
TIMINGS = ("fit_seconds", "seconds_per_epoch", "total_seconds")
EPOCH_LINE = re.compile(r"^Epoch (\d+)/(\d+)$", re.M)


def start(workdir, log, *extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    # A shell's background job (and some CI runners) start with SIGINT ignored, and a child
    # inherits that: Python then installs no KeyboardInterrupt handler. Restore the default
    # so the run sees Ctrl-C as a terminal user's would.
    return subprocess.Popen([sys.executable, "-m", "recipes.train", *ARGS, f"--workdir={workdir}",
                             *extra], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=_default_sigint)


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def finish(workdir, log_path):
    with open(log_path, "w") as log:
        proc = start(workdir, log)
        assert proc.wait(timeout=300) == 0, open(log_path).read()[-3000:]


def kill_when(proc, ready, delay, signum=signal.SIGKILL):
    """Sends ``signum`` to ``proc`` ``delay`` s after ``ready()`` holds; 1 if it was running."""
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    time.sleep(delay)
    if proc.poll() is not None:
        return 0
    proc.send_signal(signum)
    return 1


def rows_of(workdir):
    path = os.path.join(workdir, "history.csv")
    return io.read_csv(path) if os.path.exists(path) else []


def leftovers(workdir):
    """Temporary or half-written files (io's ``.NAME.XXXXXXXX.tmp[.ext]``)."""
    out = []
    for base, _, files in os.walk(workdir):
        out += [os.path.join(base, f) for f in files if re.search(r"\.tmp(\.|$)", f)]
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("ref") / "run")
    log = os.path.join(os.path.dirname(workdir), "log")
    t0 = time.time()
    finish(workdir, log)
    return workdir, time.time() - t0


def _assert_same_result(workdir, reference_dir):
    ref_rows, rows = rows_of(reference_dir), rows_of(workdir)
    assert [r["epoch"] for r in rows] == [str(e) for e in range(1, EPOCHS + 1)]
    assert list(rows[0]) == list(ref_rows[0])
    for a, b in zip(ref_rows, rows, strict=True):
        assert a == b, f"epoch {a['epoch']}: {a} != {b}"  # the CSV's exact float reprs
    ref = json.load(open(os.path.join(reference_dir, "summary.json")))
    got = json.load(open(os.path.join(workdir, "summary.json")))
    for key in ref.keys() - set(TIMINGS):
        assert got[key] == ref[key], key
    name = "activation_stats.json"  # the monitor's records keep the killed attempts' epochs
    with open(os.path.join(workdir, name)) as a, open(os.path.join(reference_dir, name)) as b:
        assert a.read() == b.read()
    assert not os.path.exists(os.path.join(workdir, "backup"))
    assert leftovers(workdir) == []


@pytest.mark.slow  # 7 restarts of the command: ~45 s idle, over 60 s on 2 loaded cores
def test_train_survives_random_sigkills_bit_for_bit(reference, tmp_path):
    reference_dir, seconds = reference
    rng = random.Random(1234)
    workdir = str(tmp_path / "run")
    log_path = str(tmp_path / "log")
    kills, attempts, epochs_run, per_attempt = 0, 0, 0, []
    # Moments: start-up (TF import), a random time, then a random delay after the k-th epoch's
    # row appears (mid-epoch, mid-backup, mid-write), and the final evaluation and save (right
    # after the last row is written).
    moments = [(0, 0.3), (0, rng.uniform(1.0, 0.6 * seconds)),
               *((k, rng.uniform(0.0, 0.5)) for k in (1, 2, 4, 5)), (EPOCHS, 0.0)]
    summary = os.path.join(workdir, "summary.json")
    for rows_needed, delay in moments:
        if os.path.exists(summary):
            break
        attempts += 1
        with open(log_path, "w") as log:
            proc = start(workdir, log)
            kills += kill_when(proc, lambda n=rows_needed: len(rows_of(workdir)) >= n, delay)
            proc.wait(timeout=60)
        per_attempt.append(EPOCH_LINE.findall(open(log_path).read()))
        epochs_run += len(per_attempt[-1])
    if not os.path.exists(summary):
        attempts += 1
        finish(workdir, log_path)
        epochs_run += len(EPOCH_LINE.findall(open(log_path).read()))
    assert kills >= 5, (kills, attempts)
    # A kill loses at most the epoch it interrupted.
    assert EPOCHS <= epochs_run <= EPOCHS + kills, (epochs_run, kills, moments, per_attempt)
    _assert_same_result(workdir, reference_dir)


@pytest.mark.slow  # 8 killed starts of the command and a finishing one: ~1 min on 2 cores
def test_killed_overwrite_never_touches_the_finished_run(reference, tmp_path):
    reference_dir, seconds = reference
    workdir = str(tmp_path / "run")
    old_args = ["--config=digits_mlp:quick", "--config.train.epochs=2", "--verbose=0",
                f"--workdir={workdir}"]
    proc = subprocess.run([sys.executable, "-m", "recipes.train", *old_args], cwd=ROOT,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before = snapshot(workdir)
    stage = wd.staging_path(workdir)
    rng = random.Random(2024)
    # Eight seeded moments: start-up, a random time, a random delay after the k-th epoch's
    # row of the staged run appears, and right after its last row (final evaluation, save,
    # the swap itself).
    moments = [(0, 0.3), (0, rng.uniform(1.0, 0.6 * seconds)),
               *((k, rng.uniform(0.0, 0.5)) for k in (1, 2, 3, 4, 5)), (EPOCHS, 0.0)]
    log_path = str(tmp_path / "log")
    kills = 0
    for rows_needed, delay in moments:
        with open(log_path, "w") as log:
            proc = start(workdir, log, "--overwrite")
            killed = kill_when(proc, lambda n=rows_needed: len(rows_of(stage)) >= n, delay)
            code = proc.wait(timeout=120)
        now = snapshot(workdir)
        if now != before:  # swapped in before the kill landed (or the run ended): whole
            assert json.loads(now["summary.json"])["epochs"] == EPOCHS, (code, killed)
            assert not os.path.exists(os.path.join(stage, wd.STAGED_MARK))
            break
        kills += killed
    assert kills >= 6, kills
    if not os.path.exists(stage) and snapshot(workdir) == before:
        pytest.fail("no staged run after the kills")
    if os.path.exists(stage) or os.path.exists(os.path.join(workdir, wd.STAGED_MARK)):
        with open(log_path, "w") as log:  # the same command continues (or tidies up)
            assert start(workdir, log, "--overwrite").wait(timeout=300) == 0, \
                open(log_path).read()[-3000:]
    _assert_same_result(workdir, reference_dir)
    parent, name = os.path.split(workdir)
    assert [e for e in os.listdir(parent) if e.startswith(f".{name}.")] == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_train_says_how_to_resume_and_resumes(reference, tmp_path, signum):
    reference_dir, _ = reference
    log_path = str(tmp_path / "log")
    for attempt in range(3):
        # A quick run lasts ~2 s: a test process starved on a busy CI machine can miss it
        # whole (the run ends 0 before the signal is sent; seen once). Only a signal sent
        # while the run was going counts; a fresh run tries again.
        workdir = str(tmp_path / f"run{attempt}")
        with open(log_path, "w") as log:
            proc = start(workdir, log)
            sent = kill_when(proc, lambda w=workdir: len(rows_of(w)) >= 2, 0, signum)
            code = proc.wait(timeout=120)
        if sent:
            break
    else:
        pytest.fail("three runs ended before the signal could be sent")
    out = open(log_path).read()
    assert code != 0, out[-2000:]
    assert "run the same command" in out and "resume" in out, out[-2000:]
    assert "Traceback" not in out
    assert not os.path.exists(os.path.join(workdir, "summary.json"))
    finish(workdir, log_path)
    _assert_same_result(workdir, reference_dir)


# -- tuning.search --------------------------------------------------------------------------

TRIALS = 6
SEARCH_ARGS = ["--config=digits_mlp:quick", f"--trials={TRIALS}", "--epochs=2",
               "--space=optimizer.learning_rate=log:1e-4:1e-1,model.l2=log:1e-6:1e-2"]
TRIAL_LINE = re.compile(r"^val_acc: .*\((\d+) / (\d+)\)", re.M)
#: trials.csv / result.json fields that measure time, not the result.
SEARCH_TIMINGS = ("seconds",)


def start_search(workdir, log):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "tuning.search", *SEARCH_ARGS,
                             f"--workdir={workdir}"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, preexec_fn=_default_sigint)


def finish_search(workdir, log_path):
    with open(log_path, "w") as log:
        proc = start_search(workdir, log)
        assert proc.wait(timeout=300) == 0, open(log_path).read()[-3000:]


def trials_started(workdir):
    stage = os.path.join(workdir, "kt", "stage1")
    if not os.path.isdir(stage):
        return 0
    return sum(1 for d in os.listdir(stage) if d.startswith("trial_"))


def all_trials_written(workdir, log_path):
    """Every trial has its line and its trials.csv row: the search is writing its results."""
    path = os.path.join(workdir, "trials.csv")
    return bool(TRIAL_LINE.findall(open(log_path).read())) and os.path.exists(path) \
        and len(io.read_csv(path)) >= TRIALS


def search_result(workdir):
    """What a search decides: every trial's values and scores, the best config; no timings."""
    rows = [{k: v for k, v in r.items() if k not in SEARCH_TIMINGS}
            for r in io.read_csv(os.path.join(workdir, "trials.csv"))]
    result = json.load(open(os.path.join(workdir, "result.json")))
    for t in [result["best"], *result.get("top", [])]:
        for k in SEARCH_TIMINGS:
            t.pop(k, None)
    best = json.load(open(os.path.join(workdir, "best_config.json")))
    return sorted(rows, key=lambda r: int(r["trial"])), result["best"], best


@pytest.fixture(scope="module")
def search_reference(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("search_ref") / "search")
    t0 = time.time()
    finish_search(workdir, os.path.join(os.path.dirname(workdir), "log"))
    return workdir, time.time() - t0


@pytest.mark.slow  # 6+ restarts of a 6-trial search: ~1-2 min on 2 cores
def test_search_survives_random_sigkills(search_reference, tmp_path):
    reference_dir, seconds = search_reference
    rng = random.Random(4321)
    workdir = str(tmp_path / "search")
    log_path = str(tmp_path / "log")
    # Moments: start-up, a random time, a random delay after the k-th trial's directory
    # appears (mid-trial, mid-write of the oracle or trials.csv), and right after the last
    # trial's line (writing result.json, best_config.*, plots).
    moments = [(0, 0.3), (0, rng.uniform(1.0, 0.5 * seconds)),
               *((k, rng.uniform(0.0, 1.5)) for k in (2, 3, 4, 5)), (TRIALS + 1, 0.0)]
    kills, attempts, trial_lines = 0, 0, 0
    done = os.path.join(workdir, "result.json")
    for trials_needed, delay in moments:
        if os.path.exists(done):
            break
        attempts += 1
        with open(log_path, "w") as log:
            proc = start_search(workdir, log)
            kills += kill_when(proc, lambda n=trials_needed: all_trials_written(workdir, log_path)
                               if n > TRIALS else trials_started(workdir) >= n, delay)
            proc.wait(timeout=60)
        trial_lines += len(TRIAL_LINE.findall(open(log_path).read()))
    if not os.path.exists(done):
        attempts += 1
        finish_search(workdir, log_path)
        trial_lines += len(TRIAL_LINE.findall(open(log_path).read()))
    assert kills >= 5, (kills, attempts)
    # A finished trial is never re-run; a kill costs at most the trial it interrupted (a
    # trial that finished but whose line was cut off by the kill is counted once).
    assert trial_lines <= TRIALS + kills, (trial_lines, kills)
    assert search_result(workdir) == search_result(reference_dir)
    assert leftovers(workdir) == []
