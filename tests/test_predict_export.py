"""recipes.predict and recipes.export on tiny finished runs: raw inputs in, probabilities out.

Every run trains one or two epochs of ``digits_mlp:quick`` on a few hundred tiny examples
(8-bit 8x8 images or 12-feature vectors in ``npz:`` files, a folder of PNGs), so each test
takes a few seconds on 2 CPU cores; the fresh-interpreter and CLI tests start Python.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import quick

from models.layers import FlipLeftRight
from recipes import export, predict, preprocessing, sources, train, tta

ROOT = Path(__file__).resolve().parent.parent
METHODS = preprocessing.METHODS  # all six apply to images and to vectors
TIGHT = dict(rtol=1e-5, atol=1e-6)  # float32 round-off only


def _blobs(n, shape, classes=3, seed=0):
    """``n`` examples of ``classes`` noisy class means: learnable in one epoch."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    means = rng.random((classes, *shape))
    x = means[y] + 0.25 * rng.standard_normal((n, *shape))
    return x, y


def _image_npz(path, n=240, shape=(8, 8, 1), seed=0):
    """uint8 images (an 8-bit source: recipes.data keeps them uint8, to_float scales)."""
    x, y = _blobs(n + 60, shape, seed=seed)
    x = np.clip(x * 255, 0, 255).astype(np.uint8)
    np.savez(path, x_train=x[:n], y_train=y[:n], x_test=x[n:], y_test=y[n:])
    return x[n:]


def _vector_npz(path, n=240, dim=12, seed=0):
    """float vectors (N, D): an array source taken as it is."""
    x, y = _blobs(n + 60, (dim,), seed=seed)
    x = x.astype(np.float32)
    np.savez(path, x_train=x[:n], y_train=y[:n], x_test=x[n:], y_test=y[n:])
    return x[n:]


def _train(tmp, name, data_name, epochs=1, **overrides):
    cfg = quick(epochs, **{"dataset.name": data_name, "dataset.limit": 0,
                           "train.batch_size": 32, "monitor.activations_every": 0,
                           "monitor.gradient_norms_every": 0, "monitor.update_ratio_every": 0,
                           "monitor.first_layer_every": 0, **overrides})
    workdir = str(tmp / name)
    summary = train.run(cfg, workdir)
    return workdir, summary


def _softmax(z):
    return keras.ops.convert_to_numpy(keras.ops.softmax(np.asarray(z, np.float32), axis=-1))


def _run_model(workdir):
    """The run's own model and preprocessor, as a user reloads them."""
    model = keras.saving.load_model(os.path.join(workdir, "model.keras"), safe_mode=True)
    return model, preprocessing.Preprocessor.load(workdir)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A standardized run on 8-bit 8x8 images, exported once; its raw test images."""
    tmp = tmp_path_factory.mktemp("images")
    x_test = _image_npz(tmp / "images.npz")
    workdir, summary = _train(tmp, "run", f"npz:{tmp / 'images.npz'}")
    return workdir, summary, x_test


@pytest.fixture(scope="module")
def tta_run(tmp_path_factory):
    """Random 6x6 crops of 8x8 RGB images, tested with ten crops (the flipped views too)."""
    tmp = tmp_path_factory.mktemp("tta")
    x_test = _image_npz(tmp / "rgb.npz", shape=(8, 8, 3))
    workdir, summary = _train(tmp, "run", f"npz:{tmp / 'rgb.npz'}", **{
        "augment.crop_size": 6, "evaluate.tta": "ten_crop", "dataset.preprocess": "standardize"})
    return workdir, summary, x_test


# ------------------------------------------------------------------ export == predict == model


@pytest.mark.parametrize("kind", ["images", "vectors"])
@pytest.mark.parametrize("method", METHODS)
def test_export_predict_and_the_run_model_agree(tmp_path, kind, method):
    make = _image_npz if kind == "images" else _vector_npz
    x = make(tmp_path / "data.npz")
    workdir, summary = _train(tmp_path, "run", f"npz:{tmp_path / 'data.npz'}",
                              **{"dataset.preprocess": method, "dataset.pca_components": 5})
    paths = export.export(workdir)
    served = keras.saving.load_model(paths["model"], safe_mode=True)
    assert served.input.dtype == ("uint8" if kind == "images" else "float32")

    result = predict.predict(workdir, x)
    model, pre = _run_model(workdir)
    own = _softmax(model.predict(pre.transform(x), verbose=0))
    np.testing.assert_allclose(result["probabilities"], own, **TIGHT)
    np.testing.assert_allclose(served.predict(x, verbose=0), result["probabilities"], **TIGHT)
    # The test split through predict scores what the run's summary says.
    accuracy = np.mean(result["class_ids"] == np.arange(240, 300) % 3)
    assert accuracy == pytest.approx(summary["test_accuracy"], abs=1e-6)
    assert result["predicted"] == [summary["class_names"][i] for i in result["class_ids"]]


def test_test_time_crops_predict_as_the_run_scored_them(tta_run):
    workdir, summary, x = tta_run
    result = predict.predict(workdir, x)
    assert result["tta"] == "ten_crop"
    model, pre = _run_model(workdir)
    np.testing.assert_allclose(result["probabilities"],
                               tta.predict(model, pre.transform(x), "ten_crop"), **TIGHT)
    accuracy = np.mean(result["class_ids"] == np.arange(240, 300) % 3)
    assert accuracy == pytest.approx(summary["test_tta_accuracy"], abs=1e-6)
    served = export.build(predict.load_run(workdir), "uint8")
    flipped = [layer for layer in served.layers if isinstance(layer, FlipLeftRight)]
    assert len(flipped) == 5  # ten views: five crops and their mirrors
    np.testing.assert_allclose(served.predict(x, verbose=0), result["probabilities"], **TIGHT)


def test_a_centre_crop_without_tta_is_inside_the_export(tmp_path):
    x = _image_npz(tmp_path / "rgb.npz", shape=(8, 8, 3))
    workdir, summary = _train(tmp_path, "run", f"npz:{tmp_path / 'rgb.npz'}", **{
        "augment.crop_size": 6, "dataset.preprocess": "per_channel_mean"})
    result = predict.predict(workdir, x)
    model, pre = _run_model(workdir)
    own = _softmax(model.predict(pre.transform(x)[:, 1:7, 1:7], verbose=0))  # centre 6x6
    np.testing.assert_allclose(result["probabilities"], own, **TIGHT)
    assert np.mean(result["class_ids"] == np.arange(240, 300) % 3) == pytest.approx(
        summary["test_accuracy"], abs=1e-6)
    served = keras.saving.load_model(export.export(workdir)["model"], safe_mode=True)
    assert "center_crop" in [layer.name for layer in served.layers]
    np.testing.assert_allclose(served.predict(x, verbose=0), result["probabilities"], **TIGHT)


def test_export_reloads_in_a_fresh_interpreter_keras_and_saved_model(image_run, tta_run,
                                                                      tmp_path):
    # Exported here; a new Python loads both formats and predicts on raw .npy inputs.
    for workdir, _, x in (image_run, tta_run):
        export.export(workdir)
        np.save(os.path.join(workdir, "raw.npy"), x)
        info = json.loads(Path(workdir, "export", "export.json").read_text())
        assert info["input_dtype"] == "uint8" and info["class_names"] == ["0", "1", "2"]
    code = ("import sys, numpy as np, keras, tensorflow as tf\n"
            "import recipes.export\n"
            "for d in sys.argv[1:]:\n"
            "    x = np.load(d + '/raw.npy', allow_pickle=False)\n"
            "    m = keras.saving.load_model(d + '/export/model.keras', safe_mode=True)\n"
            "    np.save(d + '/keras_out.npy', m.predict(x, verbose=0))\n"
            "    s = tf.saved_model.load(d + '/export/saved_model')\n"
            "    np.save(d + '/saved_out.npy', s.serve(tf.constant(x)).numpy())\n")
    done = _python(["-c", code, image_run[0], tta_run[0]], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for workdir, _, _x in (image_run, tta_run):
        expected = predict.predict(workdir, os.path.join(workdir, "raw.npy"))["probabilities"]
        for name in ("keras_out.npy", "saved_out.npy"):
            got = np.load(os.path.join(workdir, name))
            np.testing.assert_allclose(got, expected, **TIGHT)
    model, pre = _run_model(image_run[0])
    own = _softmax(model.predict(pre.transform(image_run[2]), verbose=0))
    np.testing.assert_allclose(np.load(os.path.join(image_run[0], "saved_out.npy")), own, **TIGHT)


def test_saved_model_reloads_in_process(image_run):
    workdir, _, x = image_run
    paths = export.export(workdir)
    loaded = tf.saved_model.load(paths["saved_model"])
    np.testing.assert_allclose(loaded.serve(tf.constant(x[:7])).numpy(),
                               predict.predict(workdir, x[:7])["probabilities"], **TIGHT)
    assert sorted(os.listdir(os.path.dirname(paths["saved_model"]))) == [
        "export.json", "model.keras", "saved_model"]  # no temporary left behind


# ------------------------------------------------------------------ the command line


def _python(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          cwd=str(cwd), timeout=180, env=env)


def test_cli_writes_the_csv_with_the_columns(image_run, tmp_path):
    workdir, summary, x = image_run
    np.savez(tmp_path / "inputs.npz", x=x[:5])
    out = tmp_path / "sub" / "predictions.csv"
    done = _python(["-m", "recipes.predict", f"--workdir={workdir}",
                    f"--input={tmp_path / 'inputs.npz'}", f"--out={out}"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wrote 5 predictions" in done.stdout
    lines = out.read_text().splitlines()
    assert lines[0] == "input,predicted,class_id,p_0,p_1,p_2"
    rows = [line.split(",") for line in lines[1:]]
    assert [r[0] for r in rows] == ["0", "1", "2", "3", "4"]
    expected = predict.predict(workdir, x[:5])
    assert [int(r[2]) for r in rows] == expected["class_ids"].tolist()
    assert [r[1] for r in rows] == expected["predicted"]
    np.testing.assert_allclose(np.array([r[3:] for r in rows], float),
                               expected["probabilities"], rtol=1e-6)


def test_export_cli_writes_the_export_folder(image_run, tmp_path):
    workdir = image_run[0]
    done = _python(["-m", "recipes.export", f"--workdir={workdir}"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        f"wrote model: {workdir}/export/model.keras",
        f"wrote saved_model: {workdir}/export/saved_model",
        f"wrote info: {workdir}/export/export.json"]
    assert os.path.isfile(os.path.join(workdir, "export", "saved_model", "saved_model.pb"))


def test_cli_bad_input_is_one_line_and_exit_2(image_run, tmp_path):
    np.save(tmp_path / "wrong.npy", np.zeros((2, 5, 5, 1), np.uint8))
    out = tmp_path / "predictions.csv"
    done = _python(["-m", "recipes.predict", f"--workdir={image_run[0]}",
                    f"--input={tmp_path / 'wrong.npy'}", f"--out={out}"], tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert re.fullmatch(r"recipes\.predict: error: --input=\S*wrong\.npy: examples of shape "
                        r"\(5, 5, 1\) .*\(N, 8, 8, 1\).*", lines[0])
    assert not out.exists()


# ------------------------------------------------------------------ image files


def _png(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(image).numpy())


def test_a_folder_of_images_is_read_resized_and_named(tmp_path):
    rng = np.random.default_rng(1)
    x, y = _blobs(180, (8, 8, 1))
    x = np.clip(x * 255, 0, 255).astype(np.uint8)
    for i, (image, label) in enumerate(zip(x, y)):
        _png(tmp_path / "data" / f"c{label}" / f"{i:03d}.png", image)
    workdir, summary = _train(tmp_path, "run", f"folder:{tmp_path / 'data'}")
    assert summary["class_names"] == ["c0", "c1", "c2"]
    new = tmp_path / "new"
    rgb = rng.integers(0, 256, (12, 10, 3), np.uint8)  # colour, another size: converted
    _png(new / "b" / "z.png", rgb)
    _png(new / "a.png", x[0])
    _png(new / "b" / "c" / "y.png", x[1])
    (new / "notes.txt").write_text("not an image")
    (new / ".hidden.png").write_bytes(b"skipped")
    result = predict.predict(workdir, str(new))
    assert result["inputs"] == ["a.png", "b/c/y.png", "b/z.png"]
    as_files = sources.FileImages([new / "a.png", new / "b/c/y.png", new / "b/z.png"],
                                  (8, 8), 1)[:]
    as_arrays = predict.predict(workdir, as_files)
    np.testing.assert_allclose(result["probabilities"], as_arrays["probabilities"], **TIGHT)
    one = predict.predict(workdir, str(new / "b" / "z.png"))
    assert one["inputs"] == ["z.png"]
    np.testing.assert_allclose(one["probabilities"], result["probabilities"][2:], **TIGHT)
    served = keras.saving.load_model(export.export(workdir)["model"], safe_mode=True)
    np.testing.assert_allclose(served.predict(as_files, verbose=0), result["probabilities"],
                               **TIGHT)


def test_image_files_for_a_run_on_arrays_must_have_its_size(image_run, tmp_path):
    workdir, _, x = image_run
    _png(tmp_path / "ok.png", x[0])
    result = predict.predict(workdir, str(tmp_path / "ok.png"))
    np.testing.assert_allclose(result["probabilities"],
                               predict.predict(workdir, x[:1])["probabilities"], **TIGHT)
    _png(tmp_path / "big.png", np.zeros((10, 10, 1), np.uint8))
    with pytest.raises(ValueError, match=r"big.png is a 10x10 grayscale image.*8x8 grayscale "
                                         r"arrays.*convert the images to 8x8"):
        predict.predict(workdir, str(tmp_path / "big.png"))


# ------------------------------------------------------------------ errors


def _bad_inputs(d):
    np.savez(d / "no_x.npz", images=np.zeros((2, 8, 8, 1)))
    np.save(d / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.save(d / "nan.npy", np.full((3, 8, 8, 1), np.nan, np.float32))
    (d / "empty").mkdir()
    (d / "empty" / "readme.txt").write_text("no images")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    (d / "table.csv").write_text("1,2\n")
    return {
        "missing": (d / "nope.npy", "no such file or folder"),
        "extension": (d / "table.csv", r"unknown kind of file \(\.csv\)"),
        "no_x": (d / "no_x.npz", "holds no array named x.*it holds images"),
        "pickle": (d / "objects.npy", "without pickle"),
        "nan": (d / "nan.npy", "3 example.*NaN or inf, the first at row 0"),
        "empty": (d / "empty", "holds no images"),
        "broken": (d / "broken.png", "broken.png"),
        "shape": (np.zeros((4, 8, 8, 3)), r"shape \(8, 8, 3\).*\(N, 8, 8, 1\)"),
        "one": (np.zeros((8, 8, 1)), r"one example.*x\[None\]"),
        "strings": (np.array([["a"]]), "dtype <U1"),
        "empty_batch": (np.zeros((0, 8, 8, 1)), "no examples"),
    }


@pytest.mark.parametrize("case", ["missing", "extension", "no_x", "pickle", "nan", "empty",
                                  "broken", "shape", "one", "strings", "empty_batch"])
def test_bad_inputs_are_value_errors_naming_the_field(image_run, tmp_path, case):
    value, needle = _bad_inputs(tmp_path)[case]
    with pytest.raises(ValueError, match=needle) as e:
        predict.predict(image_run[0], value if isinstance(value, np.ndarray) else str(value))
    assert str(e.value).startswith("inputs")


def test_gray_arrays_without_a_channel_axis_are_taken(image_run):
    workdir, _, x = image_run
    np.testing.assert_allclose(predict.predict(workdir, x[..., 0])["probabilities"],
                               predict.predict(workdir, x)["probabilities"], **TIGHT)


def test_workdir_that_holds_no_finished_run(image_run, tmp_path):
    with pytest.raises(ValueError, match="workdir=.*no such directory"):
        predict.predict(tmp_path / "nope", np.zeros((1, 8, 8, 1)))
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for name in ("config.json", "model.keras", "preprocessing.json", "preprocessing.npz"):
        (unfinished / name).write_bytes(Path(image_run[0], name).read_bytes())
    with pytest.raises(ValueError, match=r"has not finished \(no summary.json\)"):
        export.export(unfinished)
    only_model = tmp_path / "only_model"
    only_model.mkdir()
    (only_model / "model.keras").write_bytes(Path(image_run[0], "model.keras").read_bytes())
    with pytest.raises(ValueError, match=r"not a finished run \(config.json, summary.json"):
        predict.load_run(only_model)


def test_user_arrays_need_an_input_dtype_and_binary_gives_two_columns(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((200, 6)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int64)
    net = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1, activation="sigmoid")])
    cfg = quick(2, **{"dataset.limit": 0, "train.batch_size": 32})
    workdir = str(tmp_path / "run")
    train.run(cfg, workdir, model=net, data=(x, y))
    with pytest.raises(ValueError, match="input_dtype: the run trained on user.*uint8.*float32"):
        export.export(workdir)
    with pytest.raises(ValueError, match="input_dtype='int8'"):
        export.export(workdir, input_dtype="int8")
    served = keras.saving.load_model(export.export(workdir, input_dtype="float32")["model"],
                                     safe_mode=True)
    result = predict.predict(workdir, x[:20])
    p = result["probabilities"]
    assert p.shape == (20, 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    model, pre = _run_model(workdir)
    np.testing.assert_allclose(p[:, 1], model.predict(pre.transform(x[:20]), verbose=0)[:, 0],
                               **TIGHT)
    np.testing.assert_allclose(served.predict(x[:20], verbose=0), p, **TIGHT)
