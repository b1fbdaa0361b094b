"""Nothing lost, ever: the workdir lock, atomic --overwrite, damaged backups, a full disk.

Python API cases run ``recipes.train.run`` / ``recipes.babysit.run`` / ``tuning`` on tiny
digits runs; process cases run the real commands (exit status 2, one stderr line).
"""

import errno
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import time

import keras
import pytest
from helpers import quick as _quick
from helpers import snapshot

from recipes import babysit, io, train
from recipes import workdir as wd


def quick(**overrides):
    # Writes after every epoch: these tests stop runs after epoch k and read what is on disk.
    return _quick(epochs=1, **{"train.save_every_seconds": 0.0, **overrides})


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def siblings(workdir):
    """Entries beside ``workdir`` that belong to it: staged or discarded runs."""
    parent, name = os.path.split(str(workdir))
    return sorted(e for e in os.listdir(parent) if e.startswith(f".{name}."))


def env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")


def run_cli(module, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(proc, prog):
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines()
             if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{prog}: error:"), lines[0]
    return lines[0]


class Stop(keras.callbacks.Callback):
    """Raises ``error`` when epoch ``epoch`` (1-based) begins: a run that fails midway."""

    def __init__(self, epoch, error=RuntimeError):
        super().__init__()
        self.epoch, self.error = epoch, error

    def on_epoch_begin(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise self.error("stopped by the test")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("finished") / "w"
    train.run(quick(), str(workdir))
    return workdir


# -- the lock -----------------------------------------------------------------------------

HOLD = textwrap.dedent("""
    import sys, time
    from recipes import workdir as wd
    with wd.locked(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def hold_lock(directory, seconds=60):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory), str(seconds)],
                            cwd=ROOT, env=env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path):
    workdir = tmp_path / "w"
    holder = hold_lock(workdir)
    try:
        with pytest.raises(wd.WorkdirBusy, match=rf"is in use by process {holder.pid} "
                                                  r"\(started \d{4}-\d\d-\d\d \d\d:\d\d"):
            train.run(quick(), str(workdir))
        assert os.listdir(workdir) == [wd.LOCK_NAME]  # nothing of ours was written
    finally:
        holder.kill()
        holder.wait()
    summary = train.run(quick(), str(workdir))  # the killed holder's lock is taken over
    assert summary["epochs"] == 1


def test_a_stale_lock_file_is_taken_over(tmp_path):
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / wd.LOCK_NAME).write_text("pid=999999 started=2020-01-01_00:00:00_UTC\n")
    assert train.run(quick(), str(workdir))["epochs"] == 1
    assert f"pid={os.getpid()}" in (workdir / wd.LOCK_NAME).read_text()


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    with wd.locked(str(tmp_path / "w")), wd.locked(str(tmp_path / "w")):
        pass
    holder = hold_lock(tmp_path / "w", seconds=0.1)  # released: another process gets it
    holder.wait()
    assert holder.returncode == 0


def test_two_commands_racing_on_one_workdir(tmp_path):
    workdir = tmp_path / "w"
    args = ["--config=digits_mlp:quick", "--config.train.epochs=400", f"--workdir={workdir}",
            "--verbose=0"]
    first = subprocess.Popen([sys.executable, "-m", "recipes.train", *args], cwd=ROOT,
                             env=env(), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (workdir / "history.csv").exists() and time.time() < deadline:
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.1)
        line = one_error_line(run_cli("recipes.train", *args), "recipes.train")
        assert re.search(rf"{workdir} is in use by process {first.pid} \(started ", line), line
        assert first.poll() is None  # the first run goes on undisturbed
    finally:
        first.kill()
        first.wait()


# -- --overwrite stages the new run and swaps it in only when it has finished -------------

def test_failed_overwrite_leaves_the_old_run_and_a_resumable_stage(finished):
    before = snapshot(finished)
    new = quick(**{"train.epochs": 3})
    with pytest.raises(RuntimeError, match="stopped by the test"):
        train.run(new, str(finished), overwrite=True, extra_callbacks=[Stop(3)])
    assert snapshot(finished) == before
    stage = wd.staging_path(str(finished))
    assert len(io.read_csv(os.path.join(stage, "history.csv"))) == 2
    with pytest.raises(ValueError, match="finished run"):  # without --overwrite: refused
        train.run(new, str(finished))
    summary = train.run(new, str(finished), overwrite=True)  # resumes the staged run
    assert summary["epochs"] == 3
    rows = io.read_csv(str(finished / "history.csv"))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert io.read_json(str(finished / "config.json"), what="c")["train"]["epochs"] == 3
    assert siblings(finished) == []
    assert not (finished / wd.STAGED_MARK).exists()


def test_overwrite_with_a_bad_config_or_bad_data_changes_nothing(finished, tmp_path):
    before = snapshot(finished)
    with pytest.raises(ValueError, match="dataset.name"):
        train.run(quick(**{"dataset.name": "npz:/nonexistent.npz"}), str(finished),
                  overwrite=True)
    with pytest.raises(ValueError, match="transformer"):
        train.run(quick(**{"model.arch": "transformer"}), str(finished), overwrite=True)
    assert snapshot(finished) == before
    assert siblings(finished) == []


def test_a_staged_run_of_another_config_is_started_afresh(tmp_path):
    workdir = tmp_path / "w"
    train.run(quick(), str(workdir))
    with pytest.raises(RuntimeError):
        train.run(quick(**{"train.epochs": 3}), str(workdir), overwrite=True,
                  extra_callbacks=[Stop(2)])
    other = quick(**{"train.epochs": 2, "train.seed": 7})
    assert train.run(other, str(workdir), overwrite=True)["epochs"] == 2
    assert io.read_json(str(workdir / "config.json"), what="c")["train"]["seed"] == 7
    assert siblings(workdir) == []


def test_recover_finishes_a_swap_killed_halfway(tmp_path):
    workdir, stage = tmp_path / "w", tmp_path / ".w.overwrite"
    (workdir).mkdir()
    (workdir / "old.txt").write_text("old")
    stage.mkdir()
    (stage / "new.txt").write_text("new")
    (stage / wd.STAGED_MARK).write_text("")
    # renameat2 swapped them, then the process died: the old run sits unmarked at the stage
    # path and the mark is inside the workdir.
    os.rename(workdir, tmp_path / "tmp")
    os.rename(stage, workdir)
    os.rename(tmp_path / "tmp", stage)
    with wd.locked(str(workdir)):
        wd.recover(str(workdir))
    assert sorted(os.listdir(workdir)) == [wd.LOCK_NAME, "new.txt"]
    assert siblings(workdir) == []


def test_any_run_tidies_up_a_swap_killed_halfway(tmp_path):
    workdir, cfg, _ = interrupted(tmp_path)
    stage = pathlib.Path(wd.staging_path(str(workdir)))
    stage.mkdir()  # an old run swapped out and not yet deleted: no mark
    (stage / "summary.json").write_text("{}")
    (workdir / wd.STAGED_MARK).write_text("")
    assert train.run(cfg, str(workdir))["epochs"] == 4  # resumes, and tidies up first
    assert siblings(workdir) == []
    assert not (workdir / wd.STAGED_MARK).exists()


def test_recover_after_the_two_rename_fallback_was_killed(tmp_path):
    workdir, stage = tmp_path / "w", tmp_path / ".w.overwrite"
    stage.mkdir()
    (stage / "new.txt").write_text("new")
    (stage / wd.STAGED_MARK).write_text("")
    trash = tmp_path / ".w.replaced-1-2"  # the old run, renamed away; the stage never moved
    trash.mkdir()
    (trash / "old.txt").write_text("old")
    with wd.locked(str(workdir)):
        wd.recover(str(workdir))
    assert sorted(os.listdir(workdir)) == [wd.LOCK_NAME, "new.txt"]
    assert siblings(workdir) == []


def test_the_fallback_swap_without_renameat2(tmp_path, monkeypatch):
    monkeypatch.setattr(wd, "_exchange", lambda a, b: False)
    workdir = tmp_path / "w"
    train.run(quick(), str(workdir))
    assert train.run(quick(**{"train.epochs": 2}), str(workdir), overwrite=True)["epochs"] == 2
    assert len(io.read_csv(str(workdir / "history.csv"))) == 2
    assert siblings(workdir) == []


def test_babysit_refuses_a_finished_workdir_whatever_the_steps(finished):
    before = snapshot(finished)
    for steps in ("sanity,report", "report", "diagnose"):
        with pytest.raises(ValueError, match="finished run"):
            babysit.run(quick(), str(finished), steps=steps, echo=lambda s: None)
    assert snapshot(finished) == before


def test_babysit_overwrite_replaces_only_when_done(finished, tmp_path):
    workdir = tmp_path / "b"
    babysit.run(quick(), str(workdir), steps="sanity,report", echo=lambda s: None)
    before = snapshot(workdir)
    with pytest.raises(ValueError, match="finished run"):
        babysit.run(quick(), str(workdir), steps="sanity", echo=lambda s: None)
    lines = []
    result = babysit.run(quick(), str(workdir), steps="sanity,report", overwrite=True,
                         echo=lines.append)
    assert result["finished"] and len(result["steps"]) == 4
    assert f" {workdir}/report.html" in lines[-1]  # the user's path, not the stage's
    assert ".overwrite" not in lines[-1]
    assert snapshot(workdir).keys() == before.keys()
    assert siblings(workdir) == []


# -- the search -----------------------------------------------------------------------------

def test_search_overwrite_with_bad_data_keeps_the_finished_search(tmp_path):
    import tuning

    workdir = tmp_path / "s"
    space = "optimizer.learning_rate=log:1e-3:1e-1"
    tuning.search(quick(), space, 2, 1, str(workdir), verbose=0)
    before = snapshot(workdir)
    assert "result.json" in before
    with pytest.raises(ValueError, match="dataset.name"):
        tuning.search(quick(**{"dataset.name": "npz:/nonexistent.npz"}), space, 2, 1,
                      str(workdir), verbose=0, overwrite=True)
    assert snapshot(workdir) == before
    result = tuning.search(quick(), space, 3, 1, str(workdir), verbose=0, overwrite=True)
    assert len(result.trials) == 3 and result.workdir == str(workdir)
    assert ".overwrite" not in (workdir / "best_config.py").read_text()
    assert len(io.read_csv(str(workdir / "trials.csv"))) == 3
    assert siblings(workdir) == []


@pytest.mark.parametrize("space, needle", [
    ("model.activation=choice:relu|relu6x", r"model.activation=relu6x .*relu6x"),
    ("model.dropout=uniform:0:1.5", r"model.dropout=1.5"),
    ("optimizer.name=choice:adam|sgdd", r"optimizer.name=sgdd"),
    ("train.batch_size=int:32:100000", r"train.batch_size=100000"),
    ("schedule.name=choice:constant|cosinus", r"schedule.name=cosinus"),
])
def test_a_bad_value_in_the_space_is_refused_before_the_search_writes(tmp_path, space,
                                                                       needle):
    import tuning

    workdir = tmp_path / "s"
    with pytest.raises(ValueError, match=r"search.space: " + needle):
        tuning.search(quick(), space, 2, 1, str(workdir), verbose=0)
    assert not workdir.exists()


# -- workdirs that cannot hold a run ----------------------------------------------------------

@pytest.mark.parametrize("path", ["/proc/babysit_run", "/sys/babysit_run"])
def test_pseudo_filesystems_are_refused(path):
    if wd.filesystem_type(os.path.dirname(path)) not in ("proc", "sysfs"):
        pytest.skip(f"{os.path.dirname(path)} is not a pseudo filesystem here")
    with pytest.raises(ValueError, match="pseudo filesystem"):
        train.run(quick(), path)


def test_a_workdir_without_room_for_a_checkpoint_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "free_bytes", lambda path: 4096)
    with pytest.raises(ValueError, match=r"only 4.0 KiB free.*a checkpoint needs about"):
        train.run(quick(), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_a_model_without_activation_layers_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"monitor.activations_every=1: .*"
                                         r"--config.monitor.activations_every=0"):
        train.run(quick(**{"model.hidden": ()}), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()
    summary = train.run(quick(**{"model.hidden": (), "monitor.activations_every": 0}),
                        str(tmp_path / "w"))
    assert summary["epochs"] == 1


# -- damaged backups ------------------------------------------------------------------------

def interrupted(tmp_path, epochs=4, stop=3):
    """A run stopped as epoch ``stop`` began: its backup keeps epochs stop-1 and stop-2."""
    workdir = tmp_path / "w"
    cfg = quick(**{"train.epochs": epochs})
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg, str(workdir), extra_callbacks=[Stop(stop, KeyboardInterrupt)])
    meta = io.read_json(str(workdir / "backup" / "training_metadata.json"), what="backup")
    return workdir, cfg, meta


def test_a_truncated_newest_backup_falls_back_to_the_epoch_before(tmp_path, capfd):
    workdir, cfg, meta = interrupted(tmp_path)
    newest = workdir / "backup" / meta["weights"]
    newest.write_bytes(newest.read_bytes()[:1000])
    summary = train.run(cfg, str(workdir))
    assert summary["epochs"] == 4
    err = capfd.readouterr().err
    assert re.search(r"newest backup is unreadable: .*epoch00002.weights.h5.*resuming from "
                     r"epoch 1 instead", err), err
    assert [r["epoch"] for r in io.read_csv(str(workdir / "history.csv"))] == \
        ["1", "2", "3", "4"]


def test_every_backup_damaged_is_one_clear_error(tmp_path):
    workdir, cfg, meta = interrupted(tmp_path)
    for name in (meta["weights"], meta["previous"]["weights"]):
        (workdir / "backup" / name).write_bytes(b"not hdf5 at all")
    with pytest.raises(ValueError, match=r"every backup in .*backup is unreadable: .*"
                                         r"epoch00002.*epoch00001.*move .* away"):
        train.run(cfg, str(workdir))


# -- a full disk ----------------------------------------------------------------------------

def test_no_room_for_a_checkpoint_is_an_oserror_naming_the_file(tmp_path, monkeypatch):
    workdir = tmp_path / "w"
    cfg = quick(**{"train.epochs": 3})
    real = io.free_bytes
    calls = {"n": 0}

    def shrinking(path):  # room at the start, none once the first backup is written
        calls["n"] += 1
        return real(path) if calls["n"] <= 2 else 1000

    monkeypatch.setattr(io, "free_bytes", shrinking)
    with pytest.raises(OSError) as e:
        train.run(cfg, str(workdir))
    assert e.value.errno == errno.ENOSPC
    assert e.value.filename.endswith(".weights.h5") or e.value.filename.endswith(".keras")
    assert "free there" in io.describe_os_error(e.value)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow  # 200 short epochs over two runs: ~40 s
def test_disk_full_mid_run_is_one_line_and_resumable(tiny_tmpfs):
    # The run's own artifacts fill the disk: the tmpfs keeps room for the start-up check
    # (a checkpoint and 1 MiB) and a little more, not for 200 epochs of records, images and
    # TensorBoard events. (Filling it from another process races with the run's writes: a
    # disk that empties in the middle of an HDF5 write can crash h5py, whatever we check.)
    workdir = tiny_tmpfs / "w"
    filler = tiny_tmpfs / "filler"
    free = io.free_bytes(str(tiny_tmpfs))
    filler.write_bytes(b"\0" * (free - (1 << 20) - (128 << 10)))  # ~120 epochs' worth
    # Every epoch's files written as it ends (train.save_every_seconds=0): the disk fills
    # whatever the machine's speed.
    args = ["--config=digits_mlp:quick", "--config.train.epochs=200", f"--workdir={workdir}",
            "--verbose=0", "--config.train.save_every_seconds=0"]
    proc = run_cli("recipes.train", *args)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert re.match(rf"recipes.train: error: {workdir}/\S+: No space left on device.* free "
                    r"there\); free some space and run the same command again", lines[0]), \
        lines[0]
    assert not [f for _, _, files in os.walk(workdir) for f in files if ".tmp" in f]
    rows = io.read_csv(str(workdir / "history.csv"))  # whole rows only
    assert rows and all(r["epoch"].isdigit() for r in rows) and len(rows) < 200
    os.remove(filler)
    proc = run_cli("recipes.train", *args)  # room again: the same command resumes
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(io.read_csv(str(workdir / "history.csv"))) == 200
