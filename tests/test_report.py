"""Tests for recipes.report and recipes.plots: a full and a partial context, HTML safety,
and a report built from a tiny real babysitting run."""

import html
import json
import os
import re
import shutil

import numpy as np
import pytest

from recipes import diagnose, plots, report

FIGURES = ("images", "loss", "accuracy", "lr", "update_ratios", "activations", "lr_range")


def _context(tmp_path):
    rng = np.random.default_rng(0)
    epochs = 10
    loss = list(2.3 * np.exp(-0.3 * np.arange(epochs)) + 0.1)
    history = [{"epoch": str(e + 1), "loss": str(loss[e]), "accuracy": str(0.1 + 0.08 * e),
                "val_loss": str(loss[e] * 1.1), "val_accuracy": str(0.1 + 0.07 * e),
                "lr": str(1e-3 * 0.9 ** e), "update_ratio_median": str(1e-3)}
               for e in range(epochs)]
    first_layer = tmp_path / "first_layer_epoch010.png"
    plots.image_grid(rng.normal(size=(4, 5, 5, 3)), [0, 1, 0, 1], ["a", "b"], first_layer)
    layer = {"mean": 0.2, "std": 0.5, "saturated": 0.0, "dead": 0.05,
             "hist": {"counts": [1, 4, 2], "edges": [0.0, 0.5, 1.0, 1.5]}}
    return {
        "title": "digits_mlp babysitting",
        "command": "python -m recipes.babysit --config=digits_mlp --workdir=/tmp/r",
        "config": {"optimizer": {"learning_rate": 3e-4, "name": "adam"},
                   "model": {"hidden": (64, 32)}},
        "config_name": "digits_mlp",
        "origins": {"model": "model.arch=mlp", "task": "multiclass, 3 classes, logits",
                    "notes": []},
        "base_config": {"optimizer": {"learning_rate": 1e-3, "name": "adam"},
                        "model": {"hidden": (50,)}},
        "dataset": {"name": "digits", "source": "sklearn", "sizes": {"train": 1200, "val": 150},
                    "num_classes": 3, "class_names": ["zero", "<b>one</b>", "two"]},
        "steps": [{"name": "initial_loss", "passed": True, "verdict": "VERDICT-loss-ln10",
                   "advice": "", "seconds": 0.4},
                  {"name": "overfit_small", "passed": False, "verdict": "VERDICT-no-overfit",
                   "advice": "raise lr", "seconds": 3.0},
                  {"name": "search", "passed": None, "verdict": "VERDICT-skipped",
                   "advice": "", "seconds": None}],
        "images": {"x": rng.normal(size=(12, 8, 8, 1)).astype("float32"),
                   "y": np.eye(3)[rng.integers(0, 3, 12)], "class_names": None},
        "history": history,
        "batch_losses": list(np.repeat(loss, 20) + rng.normal(0, 0.05, 200).clip(-0.09)),
        "update_ratios": [{"step": s, "ratios": {"dense/kernel": 1e-3 * (1 + s / 100),
                                                 "dense/bias": 3e-4}} for s in range(0, 200, 20)],
        "activation_stats": [dict(layer, name="act_1", activation="relu"),
                             dict(layer, name="act_2", activation="relu")],
        "first_layer_png": str(first_layer),
        "lr_range": {"runs": [{"lr": lr, "final_loss": fl, "classification": c,
                               "losses": [2.3, 2.3 - 0.1 * i]}
                              for i, (lr, fl, c) in enumerate(
                                  [(1e-6, 2.3, "too_low"), (1e-4, 1.2, "good"),
                                   (1e-2, 0.9, "good"), (1.0, float("nan"), "diverged")])],
                     "recommended": [1e-4, 1e-2]},
        "search": {"lines": ["val_acc: 0.912, lr: 3.1e-04, reg: 1.2e-05, (1 / 20)"],
                   "stages": [{"trials": 20, "epochs": 1}]},
        "findings": [diagnose.Finding("noisy", "warning", "σ 0.2 of start", "raise batch size"),
                     {"code": "overfitting", "severity": "error", "evidence": "gap 0.3",
                      "advice": "more regularization <i>now</i>"}],
        "summary": {"test_accuracy": 0.91, "test_tta_accuracy": 0.93, "tta_mode": "ten_crop",
                    "epochs": 10, "seconds": 12.5},
        "verdict": ["VERDICT-LINE test accuracy 0.93"],
        "repairs": [{"round": 1, "cause": "learning_rate_too_high", "change": "REPAIR-lr",
                     "val_accuracy_before": 0.8, "val_accuracy_after": 0.9, "kept": True,
                     "seconds": 3.0, "flags": "--config.optimizer.learning_rate=0.01"}],
    }


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    paths = report.write(str(tmp / "run"), _context(tmp))
    with open(paths["html"], encoding="utf-8") as f:
        page = f.read()
    with open(paths["md"], encoding="utf-8") as f:
        md = f.read()
    return paths, page, md


def test_full_context_writes_every_figure(full):
    paths, page, md = full
    for name in FIGURES:
        assert os.path.getsize(paths[name]) > 0, name
    # one inlined PNG per figure plus the first-layer image
    assert page.count('src="data:image/png;base64,') == len(FIGURES) + 1
    assert "not run" not in page
    assert "multiclass, 3 classes, logits" in page  # the Model section: origins


def test_html_is_self_contained_and_escaped(full):
    _, page, _ = full
    assert 'src="http' not in page and "<link" not in page and "<script" not in page
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", page)
    assert "&lt;b&gt;one&lt;/b&gt;" in page and "<b>one</b>" not in page
    assert "&lt;i&gt;now&lt;/i&gt;" in page
    for text in ("VERDICT-LINE", "REPAIR-lr", "0.8 → 0.9",
                 "VERDICT-loss-ln10", "VERDICT-no-overfit", "VERDICT-skipped", "noisy",
                 "overfitting", 'class="sev-error"', 'class="fail"', "ten_crop", "0.93"):
        assert text in page, text


def test_markdown_references_existing_pngs(full):
    paths, _, md = full
    root = os.path.dirname(paths["md"])
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(refs) == len(FIGURES) + 1
    for ref in refs:
        assert os.path.isfile(os.path.join(root, ref)), ref
    assert "plots/loss.png" in md and "VERDICT-no-overfit" in md
    assert "--config.optimizer.learning_rate=0.0003" in md
    assert "--config.model.hidden='(64, 32)'" in md
    assert "--config.optimizer.name" not in md  # unchanged keys are not overrides


def test_partial_context_says_not_run(tmp_path):
    history = {"loss": [2.3, 1.5, 1.0], "accuracy": [0.2, 0.5, 0.7]}
    paths = report.write(str(tmp_path), {"history": history})
    assert set(paths) == {"md", "html", "loss", "accuracy"}
    page = open(paths["html"], encoding="utf-8").read()
    md = open(paths["md"], encoding="utf-8").read()
    assert page.count("data:image/png;base64,") == 2
    for text in (page, md):
        assert text.count("not run") >= 8
        assert "learning rate: not recorded" in text


def test_empty_context_and_bad_figure_still_write(tmp_path):
    paths = report.write(str(tmp_path), {"images": {"x": np.zeros((2, 7))}, "findings": []})
    page = open(paths["html"], encoding="utf-8").read()
    assert "figure images failed" in page and "No findings" in page


def test_monitor_record_forms_and_given_pngs(tmp_path):
    png = plots.lr_curve([1, 2], [1e-3, 1e-4], tmp_path / "given.png")
    layers = [{"name": "act_1", "mean": 0.1, "std": 1.0, "saturated": 0.0, "dead": 0.0,
               "hist": {"counts": [1, 2], "edges": [0.0, 1.0, 2.0]}}]
    context = {"history": {"loss": [2.0, 1.0], "update_ratio_min": [1e-4, 2e-4],
                           "update_ratio_median": [1e-3, 2e-3], "update_ratio_max": [1e-2, 2e-2]},
               "activation_stats": [{"epoch": 1, "layers": layers},
                                    {"epoch": 5, "layers": layers}],
               "lr_range_png": png, "search": {"plot_png": str(tmp_path / "missing.png")}}
    paths = report.write(str(tmp_path / "run"), context)
    assert {"update_ratios", "activations"} <= set(paths) and "lr_range" not in paths
    page = open(paths["html"], encoding="utf-8").read()
    assert page.count("data:image/png;base64,") == 4  # loss, ratios, activations, given lr png
    assert "no search image at" in page


def test_display_images_rescales_each_image():
    x = np.stack([np.full((2, 2, 1), 5.0), np.arange(4.0).reshape(2, 2, 1) - 10])
    d = plots.display_images(x)
    assert d.shape == (2, 2, 2, 1)
    assert np.all(d[0] == 0.5) and d[1].min() == 0 and d[1].max() == 1
    assert plots.display_images(np.zeros((3, 16))).shape == (3, 4, 4, 1)


def test_overrides_formats_cli_values():
    import ml_collections

    base = ml_collections.ConfigDict({"a": {"b": False, "d": 1, "h": (50,)}})
    flags = report.overrides({"a": {"b": True, "c": "x y", "d": 1, "h": [50]}}, base)
    assert flags == ["--config.a.b=True", "--config.a.c='x y'"]


def test_render_screenshot(full, tmp_path):
    if report.find_chromium() is None:
        pytest.skip("chromium / chromium-browser not on PATH (apt-get install chromium)")
    paths, _, _ = full
    png = os.environ.get("BABYSIT_SCREENSHOT") or str(tmp_path / "report.png")
    assert report.render_screenshot(paths["html"], png, timeout=120)
    import matplotlib.image

    pixels = matplotlib.image.imread(png)
    assert pixels.size and not np.all(pixels == pixels.reshape(-1, pixels.shape[-1])[0])


def test_render_screenshot_without_chromium(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert report.render_screenshot(str(tmp_path / "x.html"), str(tmp_path / "x.png")) is False


# -- a report from a small real run ------------------------------------------------------------


def _tiny_babysit(workdir):
    """A tiny real babysitting run: lr range, a two-stage search, train, diagnose, report."""
    from helpers import quick

    from recipes import babysit

    cfg = quick(epochs=3)
    cfg.monitor.update_ratio_every = 2
    cfg.babysit.lr_min, cfg.babysit.lr_max, cfg.babysit.lr_points = 1e-3, 1.0, 4
    cfg.babysit.lr_epochs = 2
    cfg.search.stages = "3x1,2x1"
    babysit.run(cfg, str(workdir), steps="lr_range,search,train,diagnose,report",
                echo=lambda line: None)
    return workdir


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """(workdir, report.html text) of a tiny real babysitting run (~30 s on 2 cores)."""
    workdir = _tiny_babysit(tmp_path_factory.mktemp("real") / "run")
    return workdir, (workdir / "report.html").read_text(encoding="utf-8")


def _sections(page):
    return re.findall(r'<section id="([^"]+)">(.*?)</section>', page, flags=re.S)


def test_real_report_opens_with_the_headline(real):
    workdir, page = real
    summary = json.loads((workdir / "summary.json").read_text())
    secs = _sections(page)
    assert secs[0][0] == "headline"
    head = secs[0][1]
    assert 'class="headline ' in head
    assert page.index('<section id="headline">') < page.index("<nav>")
    assert f"{100 * summary['test_accuracy']:.1f} %" in head
    assert f"{summary['test_accuracy']:.4f} single view" in head
    best = summary.get("best_epoch")
    weights = (f"best validation epoch {best} of {summary['epochs']}" if best
               else f"last epoch ({summary['epochs']}")
    assert "Weights used" in head and weights in head
    for label in ("Verdict", "Problems", "Total time"):
        assert f"<td>{label}</td>" in head, label


def test_real_report_tables_have_no_nan_and_plain_labels(real):
    _, page = real
    cells = re.findall(r"<t[dh]>(.*?)</t[dh]>", page, flags=re.S)
    assert cells
    assert not [c for c in cells if re.search(r"\bnan\b", c, flags=re.I)]
    summary = dict(_sections(page))["summary"]
    for label in ("test accuracy", "train loss, clean", "weights used", "what it is"):
        assert label in summary, label
    assert "train_loss" not in summary and "best_epoch" not in summary
    assert "running mean" in summary  # the two train losses are told apart


def test_real_report_embeds_the_search_plots_and_tables(real):
    workdir, page = real
    search = dict(_sections(page))["search"]
    files = re.findall(r'<img src="data:image/png;base64,[^"]+" alt="[^"]*" data-file="([^"]+)"',
                       search)
    assert "search/plots/lr_reg.png" in files
    assert any(f.startswith("search/plots/val_accuracy_vs_") for f in files)
    for f in files:
        assert (workdir / f).is_file(), f
    assert "ranges searched" in search and "best val accuracy" in search
    assert re.search(r"The \d best trials", search)
    assert "{'" not in search  # no raw dict dumps
    result = json.loads((workdir / "search" / "result.json").read_text())
    for warning in result.get("edge_warnings") or []:
        assert f"Edge warning: {html.escape(warning)}" in search
    assert "<details><summary>Trial log" in search


def test_real_report_every_figure_has_a_healthy_caption(real):
    _, page = real
    figures = re.findall(r"<figure>(.*?)</figure>", page, flags=re.S)
    assert len(figures) >= 6
    for fig in figures:
        caption = re.search(r"<figcaption>(.*?)</figcaption>", fig, flags=re.S)
        assert caption and "Healthy" in caption.group(1), fig[-300:]
    # a constant learning rate is a sentence, not a flat line
    curves = dict(_sections(page))["curves"]
    assert "Constant learning rate" in curves and "Learning rate used" not in curves


def test_activation_figure_names_layers_as_the_table(tmp_path):
    layers = [{"name": "act_0", "activation": "relu", "mean": 0.5, "std": 1.0,
               "saturated": 0.0, "dead": 0.3,
               "hist": {"counts": [30, 5, 2, 0, 1], "edges": [0, 1, 2, 3, 4, 5]}}]
    path = plots.activation_stats({"epoch 1": layers, "epoch 3": layers}, tmp_path / "a.png")
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    assert pixels.shape[1] >= 1000  # legible at 1280 px: about 1000 px wide
    paths = report.write(str(tmp_path / "run"), {"activation_stats": [
        {"epoch": 1, "layers": layers}, {"epoch": 3, "layers": layers}]})
    page = open(paths["html"], encoding="utf-8").read()
    assert "<td>act_0</td>" in page and "epoch 1 and epoch 3" in page


def test_write_says_why_there_is_no_screenshot(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    paths = report.write(str(tmp_path), {"history": {"loss": [2.0, 1.0]}},
                         screenshot=str(tmp_path / "shot.png"))
    assert paths["screenshot_note"] == "(no screenshot: Chromium not found)"
    assert "screenshot" not in paths
    assert report.screenshot(paths["html"], str(tmp_path / "x.png")) == \
        "(no screenshot: Chromium not found)"


def test_real_report_screenshot_is_not_blank(real, tmp_path):
    if report.find_chromium() is None:
        pytest.skip("chromium / chromium-browser not on PATH (apt-get install chromium)")
    PIL = pytest.importorskip("PIL.Image")
    workdir, _ = real
    png = tmp_path / "report.png"
    note = report.screenshot(str(workdir / "report.html"), str(png), timeout=120)
    assert note == f"(screenshot {png})"
    assert png.stat().st_size > 50_000
    with PIL.open(png) as im:
        grey = np.asarray(im.convert("L"), dtype=np.float64)
    assert grey.shape[1] == 1280
    top = grey[:1500]
    assert (top < 200).mean() > 0.03  # text, tables and figures, not a blank page
    assert top.std() > 20


def test_headline_of_a_stopped_procedure_names_the_failed_step(tmp_path):
    context = {"steps": [{"name": "overfit small", "passed": False, "verdict": "VERDICT-x",
                          "advice": "ADVICE-y", "seconds": 2.0}],
               "findings": [], "repairs": None}
    paths = report.write(str(tmp_path), context)
    page = open(paths["html"], encoding="utf-8").read()
    head = dict(_sections(page))["headline"]
    assert 'class="headline fail"' in head and "A step failed: overfit small" in head
    assert "VERDICT-x" in head and "ADVICE-y" in head
    assert "not diagnosed" in head and "none found" not in head
    assert "No findings" not in page  # nothing was diagnosed: not "healthy"
    assert "2.0 s" in head
