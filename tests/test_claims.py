"""The generated lecture-claims page: rendering, derived verdicts, the committed copy, the CLI."""

import copy
import json
import os
import subprocess
import sys

import pytest

from recipes.experiments import claims

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def claim(cid, verdict, why=""):
    return {"id": cid, "claim": f"claim {cid} | with a pipe", "source": f"slide {cid}",
            "verdict": verdict, "measured": f"numbers of {cid}", "why": why}


def full(name, *items, **extra):
    return {"experiment": name, "dataset": "fashion_mnist", "quick": False,
            "command": f"python -m recipes.experiments.{name} --workdir=DIR",
            "variants": {}, "claims": list(items), **extra}


def rows(page):
    return [line for line in page.splitlines() if line.startswith("| ") and "---" not in line
            and not line.startswith("| claim |")]


def test_render_one_row_per_claim_grouped_by_experiment_with_why_only_when_not_confirmed():
    page = claims.render({
        "optimizers": full("optimizers", claim("adam_fast", "confirmed", why="ignored"),
                           claim("sgd_slow", "not confirmed here", why="too few epochs")),
        "activations": full("activations", claim("relu", "depends", why="lr dependent"),
                            date="2025-01-02", machine="2 CPU cores"),
    })
    assert "do not edit" in page and page.startswith("# ")
    assert len(rows(page)) == 3
    # lecture order: activations before optimizers, each under its own heading and command
    assert page.index("## activations") < page.index("## optimizers")
    assert "`python -m recipes.experiments.optimizers --workdir=DIR`" in page
    assert "2025-01-02" in page and "2 CPU cores" in page
    other = claims.render({"optimizers": full("optimizers", claim("a", "confirmed"),
                                              machine={"cpu_model": "Xeon X", "nproc": 2,
                                                       "date": "2025-02-03T10:00:00+00:00"})})
    assert "date 2025-02-03T10:00:00+00:00, machine Xeon X, 2 cores" in other
    by_id = {r.split(" | ")[0]: r for r in rows(page)}
    adam = by_id["| claim adam_fast \\| with a pipe"]
    assert "**confirmed**" in adam and "ignored" not in adam and "slide adam_fast" in adam
    assert "too few epochs" in by_id["| claim sgd_slow \\| with a pipe"]
    assert "lr dependent" in by_id["| claim relu \\| with a pipe"]
    assert "1 confirmed, 1 depends, 1 not confirmed here, over 2 experiments" in page
    assert page.endswith("\n") and not page.endswith("\n\n")


def test_missing_and_quick_experiments_are_listed_as_not_yet_run_in_full():
    page = claims.render({"batchnorm": {**full("batchnorm", claim("bn_fast", "confirmed")),
                                        "quick": True}})
    pending = page[page.index("## Not yet run in full"):]
    for name in claims.EXPERIMENTS:
        assert f"**{name}**" in pending, name
    assert "only a `--quick` run" in pending.split("**batchnorm**")[1].splitlines()[0]
    assert "bn_fast" not in page and not rows(page)  # quick numbers are not evidence
    assert "0 confirmed" in page


def test_an_unknown_experiment_is_appended_and_render_is_deterministic():
    res = {"zz_new": full("zz_new", claim("a", "confirmed")),
           "init_stats": None}
    first = claims.render(res)
    assert first == claims.render(copy.deepcopy(res))
    assert "## zz_new" in first and first.index("## zz_new") < first.index("## Not yet run")


INIT_SUMMARY = {
    "tanh+small": {"first_std": 0.2, "last_std": 3e-7, "std_ratio": 7e5, "last_saturated": 0.0},
    "tanh+large": {"first_std": 0.98, "last_std": 0.98, "std_ratio": 1.0,
                   "last_saturated": 0.9},
    "relu+xavier": {"first_std": 0.58, "last_std": 0.022, "std_ratio": 26.3,
                    "last_saturated": 0.0},
    "relu+he": {"first_std": 0.82, "last_std": 0.71, "std_ratio": 1.16, "last_saturated": 0.0},
    "tanh+small+batch": {"first_std": 0.62, "last_std": 0.62, "std_ratio": 1.0,
                         "last_saturated": 0.006},
    "relu+he+batch": {"first_std": 0.58, "last_std": 0.58, "std_ratio": 1.0,
                      "last_saturated": 0.0},
}


def test_init_stats_verdicts_follow_the_numbers():
    got = {c["id"]: c for c in claims.init_stats_claims({"summary": INIT_SUMMARY})}
    assert set(got) == {"init_small_collapses", "init_large_saturates",
                        "init_relu_xavier_shrinks", "init_relu_he_holds",
                        "init_batchnorm_fixes_all"}
    assert all(c["verdict"] == "confirmed" for c in got.values())
    assert "90.0%" in got["init_large_saturates"]["measured"]
    bad = copy.deepcopy(INIT_SUMMARY)
    bad["tanh+small"].update(last_std=0.1, std_ratio=2.0)  # no collapse
    bad["relu+he"]["std_ratio"] = 5.0  # shrinks
    bad["relu+he+batch"]["last_saturated"] = 0.3  # BN did not fix it
    got = {c["id"]: c for c in claims.init_stats_claims({"summary": bad})}
    for cid in ("init_small_collapses", "init_relu_he_holds", "init_batchnorm_fixes_all"):
        assert got[cid]["verdict"] == "not confirmed here" and got[cid]["why"], cid
    assert got["init_large_saturates"]["verdict"] == "confirmed"
    # an init_stats run with fewer units is a quick run
    assert claims.is_quick("init_stats", {"setup": {"units": 100}})
    assert not claims.is_quick("init_stats", {"setup": {"units": 500}})


def ens_results(members, ensemble, ens_ten, scratch, distilled):
    return {"dataset": "fashion_mnist", "quick": False,
            "members": [{"seed": i, "test_accuracy": c, "test_ten_crop_accuracy": t}
                        for i, (c, t) in enumerate(members)],
            "ensemble": {"test_accuracy": ensemble, "test_ten_crop_accuracy": ens_ten},
            "student_scratch": {"test_accuracy": scratch},
            "student_distilled": {"test_accuracy": distilled, "temperature": 4.0,
                                  "alpha": 0.1}}


def test_ensembles_distillation_verdicts_follow_the_numbers():
    good = ens_results([(0.80, 0.81), (0.82, 0.83)], 0.83, 0.84, 0.75, 0.78)
    got = {c["id"]: c for c in claims.ensembles_distillation_claims(good)}
    assert [got[k]["verdict"] for k in ("ensemble_gain", "ten_crop_gain",
                                        "distillation_beats_scratch")] == ["confirmed"] * 3
    assert "+2.00 points over the mean member" in got["ensemble_gain"]["measured"]
    mixed = ens_results([(0.80, 0.79), (0.82, 0.83)], 0.812, 0.811, 0.75, 0.74)
    got = {c["id"]: c for c in claims.ensembles_distillation_claims(mixed)}
    assert got["ensemble_gain"]["verdict"] == "not confirmed here"  # +0.2 points < 1
    assert got["ten_crop_gain"]["verdict"] == "depends"
    assert got["distillation_beats_scratch"]["verdict"] == "not confirmed here"
    assert all(got[k]["why"] for k in got)
    two = ens_results([(0.80, 0.81)], 0.81, 0.82, 0.922, 0.923)
    two["teacher"] = {"test_accuracy": 0.924, "runs": ["fashion_fast_no_ls", "fashion_fast"]}
    two["student_scratch"]["runs"] = [{"run": "fashion_fast_no_ls", "test_accuracy": 0.922},
                                      {"run": "fashion_fast", "test_accuracy": 0.921}]
    got = {c["id"]: c for c in claims.ensembles_distillation_claims(two)}
    got = got["distillation_beats_scratch"]
    assert got["verdict"] == "confirmed"
    assert "from the ensemble of 2 fashion_fast runs" in got["claim"]
    assert "vs scratch 92.20 % / 92.10 % (+0.10 points over the best" in got["measured"]
    assert "validation" not in got["measured"]  # none reported
    two["student_distilled"]["val_accuracy"] = 0.93
    for run, val in zip(two["student_scratch"]["runs"], (0.928, 0.929)):
        run["val_accuracy"] = val
    got = {c["id"]: c for c in claims.ensembles_distillation_claims(two)}
    assert got["distillation_beats_scratch"]["measured"].endswith(
        "; validation: distilled 93.00 % vs 92.80 % / 92.90 %")
    worse = ens_results([(0.80, 0.79)], 0.80, 0.79, 0.75, 0.76)
    got = {c["id"]: c for c in claims.ensembles_distillation_claims(worse)}
    assert got["ten_crop_gain"]["verdict"] == "not confirmed here"


def test_committed_page_is_up_to_date_with_docs_results():
    committed = open(os.path.join(ROOT, "docs", "lecture_claims.md"), encoding="utf-8").read()
    assert claims.generate(os.path.join(ROOT, "docs", "results")) == committed, (
        "docs/lecture_claims.md is stale: run python -m recipes.experiments.claims "
        "--results=docs/results --out=docs/lecture_claims.md")
    # the committed full runs show up with their derived claims
    assert "## init_stats" in committed and "## ensembles_distillation" in committed


def test_cli_writes_checks_and_rejects_a_bad_folder(tmp_path):
    results = tmp_path / "results" / "optimizers"
    results.mkdir(parents=True)
    (results / "results.json").write_text(json.dumps(full("optimizers",
                                                          claim("x", "confirmed"))))
    out = tmp_path / "claims.md"
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [sys.executable, "-m", "recipes.experiments.claims",
           f"--results={tmp_path / 'results'}", f"--out={out}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_text() == claims.generate(str(tmp_path / "results"))
    check = subprocess.run(cmd + ["--check"], env=env, capture_output=True, text=True,
                           timeout=300)
    assert check.returncode == 0 and "up to date" in check.stdout
    bad = subprocess.run([sys.executable, "-m", "recipes.experiments.claims",
                          f"--results={tmp_path / 'nope'}", f"--out={out}"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "--results" in bad.stderr


def test_load_rejects_a_corrupt_results_file(tmp_path):
    (tmp_path / "activations").mkdir()
    (tmp_path / "activations" / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        claims.load(str(tmp_path))
