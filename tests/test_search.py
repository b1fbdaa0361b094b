"""tuning: narrowing (pure), coarse to fine and early abort on digits, resume, the CLI."""

import gc
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import tuning
from recipes import configs, io, ranges
from tuning import cli, tuners
from tuning import search as tuning_search
from tuning import space as S
from tuning.narrowing import Stage, edge_notes, narrow, parse_stages
from tuning.search import TrialEnd, coarse_to_fine, search_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINE = re.compile(r"^val_acc: \d\.\d{6}, lr: \d\.\d{6}e[+-]\d\d, (?:[\w.]+: [^,]+, )*"
                  r"\((\d+) / (\d+)\)")


def trial(acc, status="completed", **values):
    return {"values": values, "val_accuracy": acc, "status": status}


# -- narrow: a pure function of recorded trials -----------------------------------------------

def test_narrow_fits_log_range_around_top_trials():
    space = S.parse("optimizer.learning_rate=log:1e-6:1e-1")
    trials = [trial(0.9, **{"optimizer.learning_rate": 1e-3}),
              trial(0.8, **{"optimizer.learning_rate": 3e-4}),
              trial(0.85, **{"optimizer.learning_rate": 3e-3}),
              trial(0.2, **{"optimizer.learning_rate": 1e-6 * 1.5}),
              trial(0.1, **{"optimizer.learning_rate": 9e-2})]
    new, notes = narrow(space, trials, keep_top=3, margin=0.1)
    lr = new["optimizer.learning_rate"]
    assert isinstance(lr, S.LogUniform)
    # [min, max] of the top 3 in log10: [-3.52, -2.52], widened by 0.1 * 5 decades each side
    assert math.log10(lr.lo) == pytest.approx(math.log10(3e-4) - 0.5)
    assert math.log10(lr.hi) == pytest.approx(math.log10(3e-3) + 0.5)
    assert lr.lo <= 1e-3 <= lr.hi
    assert [n.kind for n in notes] == ["narrowed"] and not notes[0].warning


def test_narrow_shifts_a_range_whose_best_sits_on_the_edge():
    space = S.parse("optimizer.learning_rate=log:1e-6:1e-3,model.l2=log:1e-5:1e1")
    trials = [trial(0.9, **{"optimizer.learning_rate": 9e-4, "model.l2": 1e-2}),
              trial(0.7, **{"optimizer.learning_rate": 5e-4, "model.l2": 1e-3}),
              trial(0.3, **{"optimizer.learning_rate": 1e-5, "model.l2": 1e0})]
    new, notes = narrow(space, trials, keep_top=2, margin=0.1)
    lr = new["optimizer.learning_rate"]
    # best lr 9e-4 is at 98 % of [1e-6, 1e-3] in log units: the range moves up 1.5 decades
    assert lr.hi == pytest.approx(10 ** -1.5)
    assert lr.lo < 5e-4
    by_param = {n.param: n for n in notes}
    assert by_param["optimizer.learning_rate"].kind == "shifted"
    assert by_param["optimizer.learning_rate"].warning
    assert "high edge" in by_param["optimizer.learning_rate"].message
    assert "shifted the range up" in by_param["optimizer.learning_rate"].message
    assert by_param["model.l2"].kind == "narrowed"
    assert new["model.l2"].lo >= 1e-5 and new["model.l2"].hi <= 1e1


def test_narrow_shifts_down_at_the_low_edge():
    space = S.parse("model.l2=log:1e-4:1e0")
    new, notes = narrow(space, [trial(0.9, **{"model.l2": 1.1e-4}),
                                trial(0.5, **{"model.l2": 1e-2})], keep_top=1)
    assert new["model.l2"].lo == pytest.approx(1e-6)
    assert notes[0].kind == "shifted" and "low edge" in notes[0].message


def test_narrow_keeps_natural_limits_and_rounds_integers():
    space = S.parse("model.dropout=uniform:0:0.5,train.batch_size=int:16:256:log")
    trials = [trial(0.9, **{"model.dropout": 0.01, "train.batch_size": 60}),
              trial(0.8, **{"model.dropout": 0.2, "train.batch_size": 70})]
    new, notes = narrow(space, trials, keep_top=2)
    assert new["model.dropout"].lo == 0.0  # cannot shift below 0
    by_param = {n.param: n for n in notes}
    assert by_param["model.dropout"].kind == "edge" and by_param["model.dropout"].warning
    bs = new["train.batch_size"]
    assert isinstance(bs, S.IntUniform) and bs.log
    assert isinstance(bs.lo, int) and bs.lo <= 60 and bs.hi >= 70 and bs.hi <= 256


def test_narrow_prunes_choices_and_ignores_exploded_trials():
    space = S.parse("model.activation=choice:relu|tanh|sigmoid,"
                    "optimizer.learning_rate=log:1e-6:1e0")
    trials = [trial(0.9, **{"model.activation": "relu", "optimizer.learning_rate": 1e-3}),
              trial(0.8, **{"model.activation": "tanh", "optimizer.learning_rate": 2e-3}),
              trial(0.0, "exploded", **{"model.activation": "sigmoid",
                                        "optimizer.learning_rate": 0.9}),
              trial(0.3, **{"model.activation": "sigmoid", "optimizer.learning_rate": 1e-6})]
    new, notes = narrow(space, trials, keep_top=2)
    assert new["model.activation"].values == ("relu", "tanh")
    assert new["optimizer.learning_rate"].hi < 0.9
    assert {n.kind for n in notes} == {"pruned", "narrowed"}


def test_narrow_without_completed_trials_keeps_the_space_and_is_pure():
    space = S.parse("optimizer.learning_rate=log:1e-6:1e0")
    trials = [trial(0.0, "exploded", **{"optimizer.learning_rate": 0.5})]
    snapshot = json.dumps(trials)
    new, notes = narrow(space, trials)
    assert new == space and notes[0].kind == "kept"
    assert json.dumps(trials) == snapshot
    with pytest.raises(ValueError, match="keep_top"):
        narrow(space, trials, keep_top=0)
    with pytest.raises(ValueError, match="margin"):
        narrow(space, trials, margin=0.5)


def test_edge_notes_match_diagnose_rule():
    from recipes import diagnose

    space = S.parse("optimizer.learning_rate=log:1e-6:1e-3")
    notes = edge_notes(space, {"optimizer.learning_rate": 9e-4})
    assert len(notes) == 1 and notes[0].kind == "edge"
    found = diagnose.diagnose({}, {"search": {"optimizer.learning_rate": {
        "best": 9e-4, "lo": 1e-6, "hi": 1e-3, "log": True}}})
    assert [f.code for f in found] == ["best_at_search_edge"]
    assert not edge_notes(space, {"optimizer.learning_rate": 3e-5})


def test_edge_rule_is_shared_with_diagnose():
    # one position, one margin: 9e-4 in [1e-6, 1e-3] is at 98 % in log units, 90 % linearly
    assert ranges.edge_position(1e-6, 1e-3, 9e-4, log=True) == pytest.approx(
        (math.log(9e-4) - math.log(1e-6)) / (math.log(1e-3) - math.log(1e-6)))
    assert ranges.edge_position(0, 10, 9.5) == pytest.approx(0.95)
    assert [ranges.edge_side(p) for p in (0.05, 0.1, 0.5, 0.9, 0.95)] == [
        "low", None, None, None, "high"]
    assert ranges.edge_side(0.15, margin=0.2) == "low"
    with pytest.raises(ZeroDivisionError):
        ranges.edge_position(1.0, 1.0, 1.0)


def test_parse_stages():
    assert parse_stages("20x2, 10x8") == [Stage(20, 2), Stage(10, 8)]
    assert parse_stages([(3, 1), Stage(2, 4)]) == [Stage(3, 1), Stage(2, 4)]
    for bad in ("", "20x", "x2", "20*2", "20x2,", "0x2", "2x0", "-1x2"):
        with pytest.raises(ValueError, match="stages"):
            parse_stages(bad)


# -- on digits ---------------------------------------------------------------------------------

def _digits_config():
    cfg = configs.get("digits_mlp")
    cfg.dataset.limit = 600
    cfg.train.epochs = 3
    cfg.train.verbose = 0
    cfg.monitor.tensorboard = False
    cfg.search.space = "optimizer.learning_rate=log:1e-5:1e1,model.l2=log:1e-6:1e-2"
    cfg.search.stages = "5x1,3x2"
    cfg.search.keep_top = 2
    cfg.search.seed = 1
    return cfg


@pytest.fixture(scope="module")
def c2f(tmp_path_factory):
    cfg = _digits_config()
    workdir = str(tmp_path_factory.mktemp("c2f"))
    ends = []

    def heard(end):
        ends.append(end)
        FROZEN_AT_TRIAL_END.append(gc.get_freeze_count())

    res = coarse_to_fine(cfg, cfg.search.space, cfg.search.stages, keep_top=2, workdir=workdir,
                         seed=1, verbose=0, on_trial_end=heard)
    return cfg, workdir, res, ends


FROZEN_AT_TRIAL_END: list[int] = []


def test_trials_run_with_the_heap_frozen_and_the_search_hands_it_back(c2f):
    _, _, res, ends = c2f
    # every trial ended with what was alive before the search out of the collector's scans
    assert len(FROZEN_AT_TRIAL_END) == len(ends) == len(res.trials) > 0
    assert min(FROZEN_AT_TRIAL_END) > 100_000  # TensorFlow's and Keras's objects
    assert gc.get_freeze_count() == 0


class _Cycle:
    def __init__(self):
        self.me = self


def test_frozen_heap_still_frees_what_the_block_makes_and_nests():
    import weakref

    assert gc.get_freeze_count() == 0
    with tuners.frozen_heap():
        outer = gc.get_freeze_count()
        assert outer > 0
        made = _Cycle()
        ref = weakref.ref(made)
        del made
        gc.collect()
        assert ref() is None  # a cycle made inside the block is collected
        with tuners.frozen_heap():
            assert gc.get_freeze_count() == outer  # the inner block leaves the outer freeze
        assert gc.get_freeze_count() == outer
    assert gc.get_freeze_count() == 0


def test_coarse_to_fine_narrows_lr_range_around_best(c2f):
    _, workdir, res, _ = c2f
    s1, s2 = res.stages
    assert (s1["trials"], s1["epochs"], s2["trials"], s2["epochs"]) == (5, 1, 3, 2)
    r1 = s1["ranges"]["optimizer.learning_rate"]
    r2 = s2["ranges"]["optimizer.learning_rate"]
    best1 = s1["best"]["values"]["optimizer.learning_rate"]
    assert r2["lo"] <= best1 <= r2["hi"]
    kinds = {n["param"]: n["kind"] for n in s1["notes"]}
    if kinds["optimizer.learning_rate"] == "narrowed":
        assert math.log(r2["hi"] / r2["lo"]) < math.log(r1["hi"] / r1["lo"])
    stage2 = [t for t in res.trials if t["stage"] == 2]
    assert len(stage2) == 3
    for t in stage2:
        assert r2["lo"] <= t["values"]["optimizer.learning_rate"] <= r2["hi"] * (1 + 1e-9)
    assert res.best["stage"] == 2 and res.best["val_accuracy"] > 0.5
    stages_json = io.read_json(os.path.join(workdir, "stages.json"), what="stages")
    assert [s["space"] for s in stages_json] == [s["space"] for s in res.stages]


def test_search_writes_trials_csv_lines_and_plots(c2f):
    _, workdir, res, _ = c2f
    rows = io.read_csv(os.path.join(workdir, "trials.csv"))
    assert len(rows) == 8
    assert {(r["stage"], r["trial"]) for r in rows} == {
        *(("1", str(i)) for i in range(5)), *(("2", str(i)) for i in range(3))}
    for col in ("optimizer.learning_rate", "model.l2", "val_accuracy", "val_loss",
                "epochs_run", "status", "seconds"):
        assert col in rows[0]
    assert all(r["status"] in ("completed", "exploded") for r in rows)
    assert len(res.lines) == 8
    for line in res.lines:
        m = LINE.match(line)
        assert m, line
        assert ", reg: " in line
    assert os.path.exists(os.path.join(workdir, "plots", "lr_reg.png"))
    assert os.path.exists(os.path.join(workdir, "plots",
                                       "val_accuracy_vs_optimizer_learning_rate.png"))
    result = io.read_json(os.path.join(workdir, "result.json"), what="result")
    assert result["epochs_spent"] == res.epochs_spent <= 5 * 1 + 3 * 2
    assert res.epochs_spent == pytest.approx(sum(float(r["epochs_trained"]) for r in rows),
                                             abs=0.01)


def test_best_config_trains_with_recipes_train(c2f, tmp_path):
    from recipes import train

    _, workdir, res, _ = c2f
    tree = io.read_json(os.path.join(workdir, "best_config.json"), what="best config")
    best_lr = res.best["values"]["optimizer.learning_rate"]
    assert tree["optimizer"]["learning_rate"] == best_lr
    from_py = configs.get(os.path.join(workdir, "best_config.py"))
    assert from_py.to_dict() == configs.complete(tree).to_dict()
    assert from_py.optimizer.learning_rate == best_lr
    from_py.train.epochs = 1
    summary = train.run(from_py, str(tmp_path / "final"))
    assert summary["epochs"] == 1 and summary["val_accuracy"] > 0.3


def test_on_trial_end_hears_every_trial_once_its_results_are_written(c2f):
    _, _, res, ends = c2f  # ends: what the hook heard
    assert all(isinstance(e, TrialEnd) and e.role == "none" for e in ends)
    assert [e.finished for e in ends] == list(range(1, 9))
    assert [e.more for e in ends] == [True] * 7 + [False]  # the last trial leaves nothing
    assert [(e.record["stage"], e.record["trial"]) for e in ends] == sorted(
        (t["stage"], t["trial"]) for t in res.trials)


def test_search_step_resumes_the_finished_search(c2f):
    cfg, workdir, res, _ = c2f
    before = io.read_csv(os.path.join(workdir, "trials.csv"))
    start = time.time()
    out = search_step(cfg, workdir=workdir, verbose=0)
    assert time.time() - start < 20  # nothing re-run
    assert io.read_csv(os.path.join(workdir, "trials.csv")) == before
    assert set(out) == {"best_config", "best", "stages", "edge_warnings", "lines", "search",
                        "epochs_spent", "plots"}
    assert out["plots"]["lr_reg"] == os.path.join(workdir, "plots", "lr_reg.png")
    assert os.path.exists(out["plots"]["lr_reg"])
    assert os.path.join(workdir, "plots", "val_accuracy_vs_model_l2.png") in \
        out["plots"]["params"]
    assert all(os.path.exists(p) for p in out["plots"]["params"])
    assert out["best"]["values"] == res.best["values"]
    assert out["best_config"].optimizer.learning_rate == res.best["values"][
        "optimizer.learning_rate"]
    assert set(out["search"]) == {"optimizer.learning_rate", "model.l2"}
    assert out["lines"] == res.lines


def test_another_search_in_the_same_workdir_is_refused(c2f):
    cfg, workdir, _, _ = c2f
    with pytest.raises(ValueError, match=r"holds another search \(differs in space\)"):
        coarse_to_fine(cfg, "optimizer.learning_rate=log:1e-4:1e-1", "5x1,3x2", keep_top=2,
                       workdir=workdir, seed=1, verbose=0)


def test_exploding_trials_are_recorded_and_the_search_carries_on(tmp_path, capsys):
    cfg = _digits_config()
    # Grid order: 1e6, 1e7, 1e8 first -- three explosions in a row, KerasTuner's limit of
    # consecutive failures -- then 1e-2, which must still run.
    res = tuning.search(cfg, "optimizer.learning_rate=choice:1e6|1e7|1e8|1e-2", trials=4,
                        epochs=2, workdir=str(tmp_path), strategy="grid", verbose=1)
    by_lr = {t["values"]["optimizer.learning_rate"]: t for t in res.trials}
    for lr in (1e6, 1e7, 1e8):
        t = by_lr[lr]
        assert t["status"] == "exploded", t
        assert t["epochs_run"] == 1 and t["val_accuracy"] == 0.0
        assert 0 < t["epochs_trained"] < 1  # stopped within its first epoch
        assert "step" in t["reason"] and ("initial" in t["reason"] or "nan" in t["reason"])
    assert by_lr[1e-2]["status"] == "completed" and by_lr[1e-2]["val_accuracy"] > 0.5
    rows = io.read_csv(str(tmp_path / "trials.csv"))
    assert [r["status"] for r in rows].count("exploded") == 3
    out = capsys.readouterr().out
    assert "(1 / 4) exploded: " in out and "(4 / 4)" in out


# -- the command line ---------------------------------------------------------------------------

def run_cli(*args, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "tuning.search", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, **kwargs)


@pytest.mark.parametrize("args, needle", [
    (["--space=optimizer.lr=log:1e-6:1e-3", "--trials=2"], "optimizer.lr"),
    (["--stages=20x"], "'20x'"),
    (["--trials=2", "--stages=2x1"], "not both"),
    (["--role=worker", "--trials=2"], "--oracle"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    workdir = tmp_path / "search"
    proc = run_cli("--config=digits_mlp:quick", f"--workdir={workdir}", *args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tuning.search: error:") and needle in lines[0]
    assert not (workdir / "trials.csv").exists()


def test_killed_search_resumes_without_rerunning_or_duplicating(tmp_path):
    workdir = tmp_path / "search"
    args = ["--config=digits_mlp:quick", f"--workdir={workdir}", "--trials=4", "--epochs=2",
            "--space=optimizer.learning_rate=log:1e-4:1e-1,model.l2=log:1e-6:1e-2"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "tuning.search", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "(2 / 4)" in line:
                break
        assert any("(2 / 4)" in s for s in seen), seen
        third = workdir / "kt" / "stage1" / "trial_2" / "trial.json"
        while time.time() < deadline and not third.exists():
            time.sleep(0.05)  # the 3rd trial has started: kill it mid-way
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    first = {m.group(1) for s in seen if (m := LINE.match(s))}
    assert first >= {"1", "2"}
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    rerun = {m.group(1) for s in again.stdout.splitlines() if (m := LINE.match(s))}
    assert rerun == {"1", "2", "3", "4"} - first  # finished trials are not re-run
    rows = io.read_csv(str(workdir / "trials.csv"))
    assert sorted(r["trial"] for r in rows) == ["0", "1", "2", "3"]
    assert all(r["status"] == "completed" for r in rows)


def test_half_written_kerastuner_state_is_named_with_the_fix(tmp_path):
    # KerasTuner (and babysit before its writes were atomic) could leave an empty trial.json
    # after a kill; KerasTuner itself then fails with a bare JSONDecodeError.
    project = tmp_path / "kt" / "stage2"
    (project / "trial_0").mkdir(parents=True)
    (project / "oracle.json").write_text('{"ongoing_trials": {}}')
    (project / "trial_0" / "trial.json").write_text('{"trial_id": "0", "hyperpar')
    with pytest.raises(ValueError, match=r"trial_0/trial.json is corrupt or half-written.*"
                                         r"move .*stage2 away to rerun stage 2"):
        tuners.check_state(str(project), 2)
    (project / "trial_0" / "trial.json").write_text('{"trial_id": "0"}')
    tuners.check_state(str(project), 2)  # intact state passes
    tuners.check_state(str(tmp_path / "kt" / "stage3"), 3)  # no state yet passes


def test_tuning_search_is_the_module_and_calls_search():
    # DESIGN.md's names: tuning.search(...) and python -m tuning.search (tuning.search.X)
    assert tuning.search is tuning_search and callable(tuning.search)
    assert callable(tuning.search.check_space_values)  # recipes.babysit calls it
    with pytest.raises(ValueError, match="--workdir is required"):
        tuning.search(configs.get("digits_mlp:quick"), None, 2, 1, "")


def test_cli_recycles_only_a_local_search_with_trials_left(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.os, "execv", lambda exe, args: calls.append(args))
    assert cli.recycler(0, ["--trials=3"]) is None  # 0 = never: no hook at all
    hook = cli.recycler(2, ["--trials=3", "--overwrite"], verbose=False)
    hook(TrialEnd(1, True, "none", {}))
    hook(TrialEnd(2, True, "chief", {}))  # a chief serves its workers: never restarted
    hook(TrialEnd(3, False, "none", {}))  # nothing left to resume
    assert calls == []
    hook(TrialEnd(2, True, "none", {}))
    assert calls == [[sys.executable, "-m", "tuning.search", "--trials=3", "--overwrite"]]


@pytest.mark.slow  # 30 one-epoch trials, twice restarted: ~1-2 min on 2 cores
def test_cli_recycles_its_process_so_memory_stays_flat(tmp_path):
    # TensorFlow keeps ~4.5 MB per trained model (benchmarks/search_memory.py); re-executing
    # every 10 trials caps the growth: trial 30's RSS (process 7 trials old) stays near
    # trial 10's, where 20 more trials without recycling would add ~90 MB.
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import search_memory
    finally:
        sys.path.pop(0)
    workdir = str(tmp_path / "s")
    rss = search_memory.search_rss(30, 10, workdir)
    # A sample taken while the process re-executes (trials 10 and 20) may be missing.
    assert set(range(1, 31)) - set(rss) <= {10, 20}, rss
    assert rss[30] - rss[9] < 60, rss
    assert rss[11] < rss[9] - 20 and rss[21] < rss[19] - 20, rss  # each restart frees memory
    rows = io.read_csv(os.path.join(workdir, "trials.csv"))
    assert sorted(int(r["trial"]) for r in rows) == list(range(30))
    assert all(r["status"] == "completed" for r in rows)


def test_recycle_every_must_not_be_negative(tmp_path):
    proc = run_cli("--config=digits_mlp:quick", f"--workdir={tmp_path / 's'}", "--trials=2",
                   "--epochs=1", "--recycle_every=-1",
                   "--space=optimizer.learning_rate=log:1e-4:1e-1")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "tuning.search: error: --recycle_every must be >= 0 (0 = never), got -1"]


@pytest.mark.slow  # two 8-trial searches
def test_recycled_coarse_to_fine_decides_as_an_unrecycled_one(tmp_path):
    # Re-executing mid-stage and between stages changes nothing the search decides.
    args = ["--config=digits_mlp:quick", "--stages=4x1,4x1", "--keep_top=2",
            "--space=optimizer.learning_rate=log:1e-4:1e-1,model.l2=log:1e-6:1e-2"]
    out = {}
    for every in (0, 3):
        workdir = tmp_path / f"r{every}"
        proc = run_cli(*args, f"--workdir={workdir}", f"--recycle_every={every}")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.count("restarting the process") == (2 if every else 0)
        lines = [m.group(1) for s in proc.stdout.splitlines() if (m := LINE.match(s))]
        assert len(lines) == 8  # no finished trial is run (or printed) twice
        rows = [{k: v for k, v in r.items() if k != "seconds"}
                for r in io.read_csv(str(workdir / "trials.csv"))]
        result = json.loads((workdir / "result.json").read_text())
        out[every] = (rows, result["best"]["values"], [s["space"] for s in result["stages"]])
    assert len(out[0][0]) == 8
    assert out[0] == out[3]
