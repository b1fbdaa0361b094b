"""Tests for recipes.report and recipes.plots: a full and a partial context, HTML safety."""

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
