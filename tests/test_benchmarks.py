"""The performance benchmarks' --quick modes, the report generator, the Fashion recipes."""

import json
import os
import sys

import keras
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import (  # noqa: E402
    babysit_cost,
    fashion_race,
    machine,
    overhead,
    performance_report,
    search_efficiency,
)
from benchmarks import pipeline as pipeline_bench  # noqa: E402
from recipes import configs, train  # noqa: E402


def _read(path):
    with open(path) as f:
        return json.load(f)


# --- the recipes ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fashion_fast", "fashion_best"])
def test_fashion_recipes_resolve_by_name_and_train_a_tiny_epoch(name, tmp_path):
    full = configs.get(name)
    assert configs.resolve_path(name).endswith(f"{name}.py")
    assert full.dataset.name == "fashion_mnist" and full.model.arch == "convnet"
    assert full.model.norm == "batch" and full.loss.label_smoothing == pytest.approx(0.1)
    assert full.schedule.name == "one_cycle" and full.optimizer.learning_rate > 1e-3
    assert full.augment.flip == "horizontal" and full.augment.crop_padding > 0
    assert full.evaluate.tta == "ten_crop" and full.model.blocks_per_stage == 2
    cfg = configs.get(f"{name}:quick")
    assert cfg.dataset.name == "digits" and cfg.dataset.limit <= 600
    cfg.train.epochs = 1
    summary = train.run(cfg, str(tmp_path / name))
    assert summary["epochs"] == 1 and summary["dataset"] == "digits"
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    # ten-crop test-time augmentation on 7x7 crops of 8x8 digits
    assert summary["tta_mode"] == "ten_crop" and 0.0 <= summary["test_tta_accuracy"] <= 1.0
    if name == "fashion_best":  # the fast recipe given the rest of the half hour
        assert full.train.epochs > 2 * configs.get("fashion_fast").train.epochs
    with pytest.raises(ValueError, match=f"{name}:quick"):
        configs.get(f"{name}:slow")


# --- machine.py ------------------------------------------------------------------------------


def test_count_macs_from_layer_shapes():
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, padding="same"),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    macs = machine.count_macs(model)
    assert list(macs.values()) == [8 * 8 * 4 * 9 * 1, 256 * 10]


def test_epoch_clock_span_needs_the_epoch():
    clock = machine.EpochClock()
    with pytest.raises(ValueError, match="epoch 1"):
        clock.span(1)


def test_machine_quick_writes_sane_json(tmp_path):
    out = tmp_path / "machine.json"
    machine.main(["--quick", "--out", str(out)])
    d = _read(out)
    assert d["nproc"] >= 1 and d["cpu_model"] and d["date"]
    assert d["matmul"]["gflops"] > 0 and d["matmul"]["n"] == 512
    assert d["model"]["macs_per_example"] == sum(d["model"]["macs_by_layer"].values()) > 0
    assert d["model"]["train_flops_per_example"] == 6 * d["model"]["macs_per_example"]
    variants = d["training"]["variants"]
    assert set(variants) == {"base", "batch256"}
    assert all(v["images_per_second"] > 0 and v["ratio_to_base"] > 0 for v in variants.values())
    assert variants["base"]["ratio_to_base"] == 1.0
    assert d["achieved_gflops"] > 0 and 0 < d["fraction_of_matmul"]
    assert "skipped" in d["threads"]


# --- overhead.py and pipeline.py ------------------------------------------------------------


def test_overhead_quick_writes_ratios(tmp_path):
    out = tmp_path / "overhead.json"
    overhead.main(["--quick", "--out", str(out), "--rounds", "1", "--epochs", "2"])
    d = _read(out)
    assert len(d["runs"]) == 1 and all(set(r) == {"bare", "recipe", "monitored"}
                                       for r in d["runs"])
    assert all(v["steps_per_second"] > 0 for r in d["runs"] for v in r.values())
    for name, target in (("recipe", 0.97), ("monitored", 0.95)):
        c = d["comparisons"][name]
        assert c["median_ratio"] > 0 and len(c["ratios"]) == 1 and c["target"] == target
        run, bare = d["runs"][0][name], d["runs"][0]["bare"]
        assert c["median_ratio"] == pytest.approx(
            run["steps_per_second"] / bare["steps_per_second"], abs=2e-3)
        assert c["median_cpu_ratio"] > 0 and 0 < c["cpu_ratio_full_epoch"] <= 1
    assert d["recipe_ratio"] == d["comparisons"]["recipe"]["median_ratio"]
    assert d["workload"]["dataset"] == "digits" and d["workload"]["timed_epochs"] == "2..2"


def test_pipeline_quick_writes_ratio(tmp_path):
    out = tmp_path / "pipeline.json"
    pipeline_bench.main(["--quick", "--out", str(out)])
    d = _read(out)
    rates = d["images_per_second"]
    assert set(rates) == {"pipeline", "pipeline_no_augment", "fit"}
    assert all(v > 0 for v in rates.values())
    assert d["ratio"] == pytest.approx(rates["pipeline"] / rates["fit"], rel=0.01)
    assert d["pipeline_cores_needed"] > 0
    assert d["workload"]["augment"]["flip"] == "horizontal"


# --- search_efficiency.py ---------------------------------------------------------------------


def test_search_efficiency_quick_compares_three_strategies(tmp_path):
    out = tmp_path / "search_efficiency.json"
    search_efficiency.main(["--quick", "--out", str(out)])
    d = _read(out)
    names = {"random", "coarse_to_fine", "hyperband"}
    assert d["quick"] and set(d["summary"]) == names and d["machine"]["nproc"] >= 1
    assert {s["epochs_planned"] for s in d["strategies"].values()} == {4}  # equal budgets
    for name in names:
        run = d["per_seed"][0][name]
        assert 0 < run["epochs_spent"] <= run["epochs_planned"]
        assert 0.0 <= run["test_accuracy"] <= 1.0 and run["search_seconds"] > 0
        assert d["summary"][name]["test_accuracy"]["median"] == round(run["test_accuracy"], 4)
    assert d["conclusion"] and d["command"].startswith("python benchmarks/search_efficiency.py")


# --- babysit_cost.py ---------------------------------------------------------------------------


def test_babysit_cost_quick_times_every_step(tmp_path):
    out = tmp_path / "babysit_cost.json"
    babysit_cost.main(["--quick", "--out", str(out)])
    d = _read(out)
    row = d["tasks"]["digits_mlp:quick"]
    assert d["quick"] and d["machine"]["loadavg_at_start"] is not None
    assert set(row["steps"]) == {"checks", "sanity", "overfit", "lr_range", "search", "train",
                                 "diagnose", "repair", "report"}
    assert 0 < sum(row["steps"].values()) <= row["total_seconds"] + 1
    assert row["verdicts"][0] == "checks before training: PASS" and len(row["verdicts"]) == 11
    assert 0.0 <= row["test_accuracy"] <= 1.0


# --- fashion_race.py -------------------------------------------------------------------------


def test_seconds_to_threshold():
    curve = [{"seconds": 1.0, "test_accuracy": 0.8}, {"seconds": 2.0, "test_accuracy": 0.93}]
    assert fashion_race.seconds_to(curve, 0.9) == 2.0
    assert fashion_race.seconds_to(curve, 0.8) == 1.0
    assert fashion_race.seconds_to(curve, 0.934) is None


def test_race_quick_writes_curves_and_only_keeps_the_others(tmp_path):
    fashion_race.main(["--quick", "--out", str(tmp_path)])
    d = _read(tmp_path / "race.json")
    assert d["quick"] and d["dataset"] == "digits"
    assert d["thresholds"] == [0.9, 0.925, 0.93, 0.934, 0.945]
    assert set(d["runs"]) == {"a", "b", "c", "d"}
    for r in d["runs"].values():
        seconds = [p["seconds"] for p in r["curve"]]
        assert seconds[0] > 0 and seconds == sorted(seconds)
        assert all(0.0 <= p["test_accuracy"] <= 1.0 for p in r["curve"])
        assert 0.0 <= r["final_test_accuracy"] <= 1.0 and r["final_seconds"] > 0
        assert set(r["seconds_to"]) == {"0.9", "0.925", "0.93", "0.934", "0.945"}
    assert [p["epoch"] for p in d["runs"]["a"]["curve"]] == [1, 2]
    assert d["runs"]["a"]["final_test_accuracy"] > 0.5  # the MLP learns digits in 2 epochs
    assert d["runs"]["d"]["curve"][-1]["tta"] == "ten_crop"  # the ten-crop point comes last
    assert set(d["targets"]) == {"fast_accuracy", "fast_vs_cnn", "best_accuracy"}
    vs = d["targets"]["fast_vs_cnn"]
    assert vs["cnn_final_accuracy"] == d["runs"]["b"]["final_test_accuracy"]
    assert vs["cnn_seconds"] == d["runs"]["b"]["final_seconds"]
    assert os.path.getsize(tmp_path / "race.png") > 1000

    fashion_race.main(["--quick", "--out", str(tmp_path), "--only=b"])
    again = _read(tmp_path / "race.json")
    assert set(again["runs"]) == {"a", "b", "c", "d"}
    for letter in "acd":
        assert again["runs"][letter] == d["runs"][letter]


def test_race_targets_are_read_off_the_curves():
    def run(points, final):
        curve = [{"epoch": i + 1, "seconds": t, "test_accuracy": a}
                 for i, (t, a) in enumerate(points)]
        return {"curve": curve, "final_test_accuracy": final, "final_seconds": points[-1][0]}

    runs = {"b": run([(50.0, 0.88), (100.0, 0.90)], 0.90),
            "c": run([(40.0, 0.905), (500.0, 0.931)], 0.931),
            "d": run([(1000.0, 0.94), (1900.0, 0.946)], 0.946)}
    t = fashion_race.targets(runs)
    assert t["fast_accuracy"] == {"seconds_to_0.93": 500.0, "limit_seconds": 600, "met": True}
    assert t["fast_vs_cnn"]["fast_seconds_to_it"] == 40.0 and t["fast_vs_cnn"]["ratio"] == 0.4
    assert t["fast_vs_cnn"]["met"] is True
    assert t["best_accuracy"]["seconds_to_0.945"] == 1900.0
    assert t["best_accuracy"]["met"] is False  # 0.945, but after 30 minutes
    assert set(fashion_race.targets({"c": runs["c"]})) == {"fast_accuracy"}


def test_race_set_changes_a_recipe_and_records_it(tmp_path, capsys):
    assert fashion_race.parse_sets(["c.train.epochs=3", "d.model.head=global_pool"]) == {
        "c": {"train.epochs": 3}, "d": {"model.head": "global_pool"}}
    for bad in ("a.train.epochs=3", "c.train.nope=1", "c.epochs=3", "c.train.epochs"):
        with pytest.raises(ValueError, match="--set"):
            fashion_race.parse_sets([bad])
    fashion_race.main(["--quick", "--out", str(tmp_path), "--only=c", "--set=c.train.epochs=1"])
    r = _read(tmp_path / "race.json")["runs"]["c"]
    assert r["epochs"] == 1 and r["overrides"] == {"train.epochs": 1}
    assert r["command"].endswith("--config.train.epochs=1") and r["label"].endswith(
        "with train.epochs=1")
    with pytest.raises(SystemExit) as e:
        fashion_race.main(["--quick", "--out", str(tmp_path), "--set=b.train.epochs=1"])
    assert e.value.code == 2 and "--set" in capsys.readouterr().err


def test_race_rejects_unknown_contestant(capsys):
    with pytest.raises(SystemExit) as e:
        fashion_race.main(["--quick", "--only=a,z"])
    assert e.value.code == 2 and "--only" in capsys.readouterr().err


# --- performance_report.py ---------------------------------------------------------------------


def _write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def test_report_from_synthetic_json(tmp_path):
    m = {"cpu_model": "Test CPU", "nproc": 2, "sched_affinity": 2, "tensorflow": "9.9"}
    _write(tmp_path / "fashion_race" / "race.json", {
        "machine": m, "date": "2030-01-01", "command": "python benchmarks/fashion_race.py",
        "quick": False, "thresholds": [0.9, 0.925, 0.934],
        "runs": {"c": {"label": "recipe fashion_fast", "epochs": 12,
                       "final_test_accuracy": 0.9312, "final_seconds": 401.0,
                       "setup_seconds": 3.0,
                       "seconds_to": {"0.9": 77.0, "0.925": 290.0, "0.934": None}}}})
    _write(tmp_path / "overhead.json", {
        "machine": m, "date": "2030-01-02", "command": "python benchmarks/overhead.py",
        "workload": {"config": "fashion_fast", "examples": 5120, "full_epoch_steps": 422},
        "median_steps_per_second": {"bare": 10.0},
        "comparisons": {"recipe": {"median_ratio": 0.9871, "median_cpu_ratio": 0.9912,
                                   "target": 0.97, "meets_target": True,
                                   "meets_target_cpu": True, "extra_cpu_seconds_per_epoch": 0.05,
                                   "cpu_ratio_full_epoch": 0.999}}})
    out = performance_report.main(["--results", str(tmp_path)])
    text = open(out).read()
    assert out == str(tmp_path / "performance.md")
    assert "0.9312" in text and "| 77 s | 290 s | - |" in text and "401 s" in text
    assert "| recipe | 0.987 | 0.991 | 0.97 | yes / yes | 0.050 s | 0.999 |" in text
    assert "2030-01-02" in text and "Test CPU" in text and "(422 steps)" in text
    # contestants and files that were never run
    assert "| a | not yet measured |" in text and "| d | not yet measured |" in text
    assert text.count("not yet measured (no `") == 2  # pipeline.json and machine.json
    assert "--quick run" not in text
    assert "| target | limit |" not in text  # a race without targets has no targets table


def test_report_shows_the_race_targets_met_or_not(tmp_path):
    runs = {"b": {"label": "cnn", "final_test_accuracy": 0.903, "final_seconds": 145.0,
                  "curve": [{"seconds": 145.0, "test_accuracy": 0.903}]},
            "c": {"label": "fast", "final_test_accuracy": 0.9367, "final_seconds": 631.0,
                  "curve": [{"seconds": 240.0, "test_accuracy": 0.904},
                            {"seconds": 508.0, "test_accuracy": 0.9307}]}}
    _write(tmp_path / "fashion_race" / "race.json", {
        "machine": {"cpu_model": "Test CPU"}, "date": "d", "command": "c", "quick": False,
        "thresholds": [0.93], "runs": runs, "targets": fashion_race.targets(runs)})
    text = performance_report.render(str(tmp_path))
    assert "| c reaches 0.930 | <= 600 s | 508 s | yes |" in text
    assert "| c reaches b's final 0.9030 (b: 145 s) | <= 0.5 of b's time | 240 s (1.66 of b's) " \
        "| no |" in text


def test_report_marks_quick_runs_and_bad_files(tmp_path):
    _write(tmp_path / "pipeline.json", {
        "command": "python benchmarks/pipeline.py --quick", "date": "d",
        "images_per_second": {"pipeline": 9000.0, "fit": 3000.0}, "ratio": 3.0,
        "pipeline_cores_needed": 0.25})
    (tmp_path / "machine.json").write_text("{ half")
    text = performance_report.render(str(tmp_path))
    assert "--quick run" in text and "**3.0x**" in text and "9000" in text
    assert "machine.json` is corrupt" in text or "could not read `machine.json`" in text
