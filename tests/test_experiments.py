"""The experiment recipes' quick modes, so they never rot (issue 9 runs them in full)."""

import json

from recipes.experiments import ensembles_distillation


def test_ensembles_distillation_quick_writes_every_number(tmp_path):
    r = ensembles_distillation.run_experiment(str(tmp_path), quick=True, members=2)
    assert len(r["members"]) == 2
    for m in r["members"]:
        assert 0 < m["test_accuracy"] <= 1 and 0 < m["test_ten_crop_accuracy"] <= 1
    assert 0 < r["ensemble"]["test_accuracy"] <= 1
    assert len(r["ensemble"]["member_accuracy"]) == 2
    assert 0 < r["teacher"]["test_accuracy"] <= 1
    assert 0 < r["student_scratch"]["test_accuracy"] <= 1
    assert 0 < r["student_distilled"]["test_accuracy"] <= 1
    # the student is the teachers' network: the same size as each, half their ensemble
    runs = r["student_scratch"]["runs"]
    assert [x["run"] for x in runs] == r["teacher"]["runs"] == ["fashion_fast_no_ls",
                                                                  "fashion_fast"]
    assert [x["label_smoothing"] for x in runs] == [0.0, 0.1]
    assert r["student_scratch"]["test_accuracy"] == max(x["test_accuracy"] for x in runs)
    assert r["student_distilled"]["parameters"] == runs[0]["parameters"] == runs[1]["parameters"]
    assert r["teacher"]["parameters"] == 2 * r["student_distilled"]["parameters"]
    assert 0 < r["student_distilled"]["val_accuracy"] <= 1
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["ensemble"] == r["ensemble"]
    assert on_disk["student_distilled"] == r["student_distilled"]


def test_ensembles_distillation_reuses_finished_runs(tmp_path):
    first = ensembles_distillation.run_experiment(str(tmp_path), quick=True, members=2)
    stamp = (tmp_path / "member_0" / "summary.json").stat().st_mtime_ns
    again = ensembles_distillation.run_experiment(str(tmp_path), quick=True, members=2)
    assert (tmp_path / "member_0" / "summary.json").stat().st_mtime_ns == stamp  # not retrained
    assert again["members"][0]["test_accuracy"] == first["members"][0]["test_accuracy"]
    assert again["teacher"] == first["teacher"]
