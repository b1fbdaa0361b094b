"""The user's own network and data through every step: babysit.run(None, dir, model=, data=).

Each form of outputs a user writes — softmax with sparse labels, one sigmoid unit with 0/1
labels, several sigmoid units with 0/1 tags, logits with one-hot labels, an MSE-compiled
classifier, a model function — goes through the whole procedure, and the initial-loss check
expects ln C or ln 2 as the outputs say.
"""

import json
import math
import os

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from recipes import babysit, configs, lr_range, prepare, sanity, tasks, train

#: A partial config: the user's compile is kept for everything it does not name.
QUICK = {
    "train": {"epochs": 2, "verbose": 0},
    "monitor": {"tensorboard": False},
    "babysit": {"lr_points": 3, "lr_min": 1e-4, "lr_max": 1e-1, "lr_epochs": 0.5},
    "search": {"stages": "2x1", "keep_top": 1},
}


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))[:600]
    x, y = x[idx], d.target[idx].astype("int64")
    return x[:480], y[:480], x[480:], y[480:]


def _net(units, activation, name="mine"):
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(units, activation=activation)], name=name)


def _tags(y):
    """Three 0/1 tags per digit: even, greater than 4, has a closed loop."""
    return np.stack([y % 2 == 0, y > 4, np.isin(y, [0, 6, 8, 9])], axis=1).astype("float32")


def _case(name, digits):
    """(model, data, expected initial loss at a zero bias) for one output form."""
    x, y, xt, yt = digits
    if name == "softmax_sparse":
        m = _net(10, "softmax")
        m.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
        return m, (x, y, xt, yt), math.log(10)
    if name == "sigmoid_binary":
        m = _net(1, "sigmoid")
        m.compile("adam", "binary_crossentropy", metrics=["accuracy"])
        return m, (x, (y >= 5).astype("int64"), xt, (yt >= 5).astype("int64")), math.log(2)
    if name == "sigmoid_multilabel":
        m = _net(3, "sigmoid")
        m.compile("adam", "binary_crossentropy")
        return m, (x, _tags(y), xt, _tags(yt)), math.log(2)
    if name == "logits_onehot":
        m = _net(10, None)
        m.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.CategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.TopKCategoricalAccuracy(k=2),
                           keras.metrics.CategoricalAccuracy()])
        eye = np.eye(10, dtype="float32")
        return m, (x, eye[y], xt, eye[yt]), math.log(10)
    if name == "mse_classifier":
        m = _net(10, "softmax")
        m.compile("adam", "mse")
        return m, (x, y, xt, yt), 0.09  # mean (1/C - onehot)^2 = (C-1)/C^2 at C=10
    if name == "function":
        return (lambda: _net(10, None)), (x, y, xt, yt), math.log(10)
    raise AssertionError(name)


FORMS = ["softmax_sparse", "sigmoid_binary", "sigmoid_multilabel", "logits_onehot",
         "mse_classifier", "function"]


@pytest.mark.parametrize("form", FORMS)
def test_babysit_runs_every_step_on_the_users_model_and_data(form, digits, tmp_path):
    model, data, _ = _case(form, digits)
    before = None if not isinstance(model, keras.Model) else [w.copy() for w in
                                                              model.get_weights()]
    result = babysit.run(QUICK, str(tmp_path / "run"), model=model, data=data,
                         echo=lambda s: None)
    names = [s["name"] for s in result["steps"]]
    assert not result["stopped"], result["steps"]
    for step in ("initial loss", "overfit small", "learning-rate range", "search", "train",
                 "diagnosis", "report"):
        assert step in names, (step, names)
    assert os.path.exists(tmp_path / "run" / "report.html")
    assert 0.0 <= result["summary"]["test_accuracy"] <= 1.0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["origins"]["model"].startswith("keras.Model" if before else "function")
    if before is not None:  # the user's own weights are never touched
        assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize("form", FORMS)
def test_initial_loss_expects_ln_c_or_ln_2_as_the_outputs_say(form, digits):
    model, data, expected = _case(form, digits)
    result = sanity.initial_loss(QUICK, model=model, data=data)
    assert result.data["uniform_expected"] == pytest.approx(expected, rel=1e-3)
    if form in ("sigmoid_binary", "sigmoid_multilabel"):
        assert "ln 2" in result.verdict
    elif form != "mse_classifier":
        assert "ln(10)" in result.verdict


def test_the_task_is_read_from_labels_outputs_and_loss(digits):
    cases = {"softmax_sparse": ("multiclass", "sparse", False),
             "sigmoid_binary": ("binary", "binary", False),
             "sigmoid_multilabel": ("multilabel", "multilabel", False),
             "logits_onehot": ("multiclass", "onehot", True),
             "mse_classifier": ("multiclass", "onehot", False)}
    for form, (kind, label_form, logits) in cases.items():
        model, data, _ = _case(form, digits)
        p = prepare.prepare(QUICK, model=model, data=data)
        assert (p.task.kind, p.task.label_form, p.task.from_logits) == (kind, label_form,
                                                                         logits), form


def test_compiled_model_keeps_its_loss_optimizer_and_metrics_unless_the_config_names_them(
        digits):
    model, data, _ = _case("logits_onehot", digits)
    p = prepare.prepare(QUICK, model=model, data=data)
    assert (p.config.loss.name, p.config.optimizer.name) == ("model", "model")
    assert p.config.optimizer.learning_rate == pytest.approx(3e-3)
    assert type(p.model.optimizer).__name__ == "Adam"
    # a top-k accuracy is kept; a plain one gives way to the run's own "accuracy"
    assert p.origins["metrics"] == ["accuracy", "top_k_categorical_accuracy"]
    assert "top_k_categorical_accuracy" in p.model.evaluate(p.val_ds, verbose=0,
                                                             return_dict=True)
    assert p.model is not model  # a copy with fresh weights
    named = prepare.prepare({**QUICK, "optimizer": {"name": "sgd", "learning_rate": 0.05}},
                            model=model, data=data)
    assert type(named.model.optimizer).__name__ == "SGD"
    assert named.config.optimizer.learning_rate == 0.05
    assert named.config.loss.name == "model"  # the loss is not named: still the model's
    assert named.origins["optimizer"] == "config: optimizer.name=sgd"


def test_fresh_copies_are_seeded_by_train_seed_and_never_the_users_object(digits):
    model, data, _ = _case("softmax_sparse", digits)
    first = prepare.prepare(QUICK, model=model, data=data).model
    a = first.get_weights()
    b = prepare.prepare(QUICK, model=model, data=data).model.get_weights()
    assert all(np.array_equal(u, v) for u, v in zip(a, b))  # seeded by train.seed
    other = prepare.prepare({**QUICK, "train": {**QUICK["train"], "seed": 1}}, model=model,
                            data=data).model.get_weights()
    assert not np.array_equal(a[0], other[0])  # another seed, another initialization
    assert first is not model and first.layers[-1] is not model.layers[-1]


def test_lr_range_and_train_take_model_and_data(digits, tmp_path):
    model, data, _ = _case("sigmoid_binary", digits)
    r = lr_range.run(QUICK, model=model, data=data, lrs=[1e-3, 1e-1], epochs=0.5)
    assert len(r.final_losses) == 2 and r.optimizer == "model"
    summary = train.run(QUICK, str(tmp_path / "t"), model=model, data=data)
    assert summary["task"].startswith("binary")
    assert summary["test_accuracy"] > 0.6


def test_bad_model_values_are_clear_errors(digits):
    _, data, _ = _case("softmax_sparse", digits)
    with pytest.raises(ValueError, match="model: expected a keras.Model"):
        prepare.prepare(QUICK, model=42, data=data)
    with pytest.raises(ValueError, match="returned a str"):
        prepare.prepare(QUICK, model=lambda: "net", data=data)

    def boom():
        raise RuntimeError("no weights file")

    with pytest.raises(ValueError, match="model=.*boom: the builder .*boom raised RuntimeError: "
                                         "no weights file"):
        prepare.prepare(QUICK, model=boom, data=data)
    with pytest.raises(ValueError, match="outputs of shape \\(7,\\) per example, but the data "
                                         "has 10 classes"):
        prepare.prepare(QUICK, model=_net(7, "softmax"), data=data)
    wrong_input = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    with pytest.raises(ValueError, match=r"takes inputs of shape \(64,\) per example, but the "
                                         r"data's examples have shape \(8, 8, 1\)"):
        prepare.prepare(QUICK, model=wrong_input, data=data)
    no_flatten = keras.Sequential([keras.layers.Conv1D(4, 3), keras.layers.Flatten(),
                                   keras.layers.Dense(10)])  # Conv1D takes (steps, channels)
    with pytest.raises(ValueError, match="forward pass on a batch of shape") as e:
        prepare.prepare(QUICK, model=no_flatten, data=data)
    assert len(str(e.value)) < 600  # no tensor dump
    with pytest.raises(ValueError, match="loss.name=model.*not compiled"):
        prepare.prepare({**QUICK, "loss": {"name": "model"}}, model=_net(10, None), data=data)


def test_a_full_config_tree_names_everything(digits):
    """A recipe's whole tree says optimizer and loss: the model's compile gives way."""
    model, data, _ = _case("softmax_sparse", digits)
    cfg = configs.get("digits_mlp:quick")
    p = prepare.prepare(cfg, model=model, data=data)
    assert (p.config.loss.name, p.config.optimizer.name) == ("softmax", "adam")
    assert p.task.label_form == "onehot" and not p.task.from_logits  # softmax outputs
    assert isinstance(p.model.loss, keras.losses.CategoricalCrossentropy)


def test_tasks_accuracy_metric_matches_the_targets():
    t = tasks.Task("binary", 2, 1, "linear", "binary")
    assert tasks.accuracy_metric(t).threshold == 0.0
    t = tasks.Task("multilabel", 3, 3, "sigmoid", "multilabel")
    assert tasks.accuracy_metric(t).threshold == 0.5
    t = tasks.Task("multiclass", 10, 10, "softmax", "sparse")
    assert isinstance(tasks.accuracy_metric(t), keras.metrics.SparseCategoricalAccuracy)


_BUILT_WIDTHS = []  # every width the registered builder below was called with


def _width_net(cfg, input_shape, num_classes, width=8):
    _BUILT_WIDTHS.append(width)
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(width, activation="relu", name="hidden"),
                             keras.layers.Dense(num_classes)])


def test_the_search_tunes_a_registered_builders_kwargs(digits, tmp_path):
    import models
    import tuning

    models.register("own_model_test_width", _width_net)
    cfg = {**QUICK, "model": {"arch": "own_model_test_width", "kwargs": {"width": 8}}}
    result = tuning.search(cfg, "model.kwargs.width=choice:4|16", trials=6, epochs=1,
                           workdir=str(tmp_path / "s"), data=digits, verbose=0)
    widths = {r["values"]["model.kwargs.width"] for r in result.trials}
    assert widths == {4, 16}
    assert {4, 16} <= set(_BUILT_WIDTHS)  # the trials' values reached the builder
    assert result.best_config.model.kwargs.width in (4, 16)
    with pytest.raises(ValueError, match="model.l2"):
        tuning.search(cfg, "model.l2=log:1e-6:1e-2", trials=1, epochs=1,
                      workdir=str(tmp_path / "refused"), data=digits, verbose=0)
    assert not (tmp_path / "refused").exists()


def test_a_generator_backed_dataset_pair_is_streamed_through_babysit(digits, tmp_path):
    """Two tf.data datasets from generators: never read into one array, every step runs."""
    import tensorflow as tf

    x, y, xt, yt = digits

    def stream(xs, ys):
        def gen():
            yield from zip(xs, ys)
        spec = (tf.TensorSpec((8, 8, 1), tf.float32), tf.TensorSpec((), tf.int64))
        return tf.data.Dataset.from_generator(gen, output_signature=spec)

    result = babysit.run(QUICK, str(tmp_path / "g"), model=_net(10, None),
                         data=(stream(x, y), stream(xt, yt)), echo=lambda s: None)
    assert not result["stopped"], result["steps"]
    p = prepare.prepare(QUICK, model=_net(10, None), data=(stream(x, y), stream(xt, yt)))
    assert not isinstance(p.splits.train.x, np.ndarray)  # lazy: read as training goes
    assert len(p.splits.train) + len(p.splits.val) == len(x)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_png_folder(root, x, y, names):
    """``root/<class name>/<i>.png`` of 8-bit grey images (the folder: layout)."""
    for i, (image, label) in enumerate(zip(x, y)):
        directory = root / names[label]
        directory.mkdir(parents=True, exist_ok=True)
        keras.utils.save_img(directory / f"{i:04d}.png",
                             (image * 255).round().astype("uint8"), scale=False)


def test_cli_babysits_a_folder_of_pngs_with_a_module_function_model(digits, tmp_path):
    """Done-when of the own-model issue: folder: + model.arch=module:function, every step."""
    import subprocess
    import sys

    x, y, _, _ = digits
    names = [f"digit_{d}" for d in range(10)]
    _write_png_folder(tmp_path / "images", x[:300], y[:300], names)
    config = tmp_path / "my_config.py"
    config.write_text(
        "from recipes.configs import base\n\n"
        "def get_config(arg=None):\n"
        "    c = base.get_config()\n"
        f"    c.dataset.name = 'folder:{tmp_path / 'images'}'\n"
        "    c.model.arch = 'tests.fixtures.nets:tiny'\n"
        "    c.model.kwargs = {'width': 32}\n"
        "    c.train.epochs = 2\n"
        "    c.train.verbose = 0\n"
        "    c.monitor.tensorboard = False\n"
        "    c.babysit.lr_points = 5\n"
        "    c.babysit.lr_epochs = 2.0\n"
        "    c.search.stages = '2x1'\n"
        "    return c\n")
    workdir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "recipes.babysit", f"--config={config}",
                           f"--workdir={workdir}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((workdir / "babysit.json").read_text())
    assert not result["stopped"], result["steps"]
    assert [s["name"] for s in result["steps"]][-1] == "report"
    assert (workdir / "report.html").exists()
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["class_names"] == names  # the folder names, sorted, saved with the run
    assert summary["num_train"] + summary["num_val"] + summary["num_test"] == 300
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["origins"]["model"] == "model.arch=tests.fixtures.nets:tiny"
    assert keras.saving.load_model(workdir / "model.keras").get_layer("hidden").units == 32


def test_crops_ensembles_and_distillation_read_softmax_outputs(digits, tmp_path):
    """A user's softmax outputs are probabilities: crops, ensembles and distillation say so."""
    from recipes import distill, ensemble

    x, y, xt, yt = digits
    crop = {**QUICK, "augment": {"crop_size": 6}, "evaluate": {"tta": "five_crop"}}
    net = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(32, activation="relu"),
                            keras.layers.Dense(10, activation="softmax")])
    net.compile("adam", "sparse_categorical_crossentropy")
    crop.update(train={"epochs": 15, "verbose": 0}, optimizer={"learning_rate": 1e-2})
    summary = train.run(crop, str(tmp_path / "c"), model=net, data=digits)
    assert summary["test_accuracy"] > 0.6
    assert abs(summary["test_tta_accuracy"] - summary["test_accuracy"]) < 0.1
    # Log-likelihoods of probabilities: a softmax over softmax outputs (values in [0, 1])
    # would cap p(true) at e / (e + 9), a loss of at least 1.46 whatever the accuracy.
    assert summary["test_tta_loss"] < 1.2  # softmax of probabilities: >= -ln(e/(e+9)) = 1.46

    members = []
    for seed in (0, 1):
        m = _net(10, "softmax")
        m.compile("adam", "sparse_categorical_crossentropy")
        p = prepare.prepare({**QUICK, "train": {"epochs": 10, "seed": seed},
                             "optimizer": {"learning_rate": 1e-2}}, model=m, data=digits)
        p.model.fit(p.train_ds, epochs=10, verbose=0)
        members.append(p.model)
    scores = ensemble.evaluate(members, p.preprocessor(xt), yt)
    probs = ensemble.predict(members, p.preprocessor(xt))
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert scores["loss"] < 1.2 and scores["accuracy"] > 0.6  # double softmax: >= 1.46

    student = _net(10, "softmax", name="student")
    d = distill.Distiller(members[0], student, temperature=4.0, alpha=0.5)
    d.compile(keras.optimizers.Adam(3e-3))
    onehot = np.eye(10, dtype="float32")
    history = d.fit(p.preprocessor(x), onehot[y], epochs=3, verbose=0, batch_size=64)
    losses = history.history["distillation_loss"]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


def test_a_streamed_source_is_read_once_for_its_statistics(digits, tmp_path, monkeypatch):
    """Every run of a procedure on one folder shares one streamed pass of preprocessing.fit."""
    from recipes import data, preprocessing

    x, y, _, _ = digits
    _write_png_folder(tmp_path / "images", x[:200], y[:200], [str(d) for d in range(10)])
    splits = data.load(f"folder:{tmp_path / 'images'}")
    calls = []
    real_fit = preprocessing.fit
    monkeypatch.setattr(preprocessing, "fit", lambda *a, **k: calls.append(1) or
                        real_fit(*a, **k))
    first = prepare.prepare(QUICK, splits=splits)
    second = prepare.prepare(QUICK, splits=splits)
    assert len(calls) == 1
    assert second.preprocessor is not first.preprocessor  # a new object, the same numbers
    assert all(np.array_equal(first.preprocessor.params[k], second.preprocessor.params[k])
               for k in first.preprocessor.params)
    prepare.prepare({**QUICK, "dataset": {"preprocess": "per_channel_mean"}}, splits=splits)
    assert len(calls) == 2  # another method: another pass


def test_every_sanity_check_takes_data(digits):
    """recipes.sanity.*: data= everywhere, and a multi-label task on the built-in network."""
    x, y, xt, yt = digits
    tags = (x[:, :, :, 0].mean(axis=(1, 2))[:, None] > np.array([0.25, 0.3, 0.35])).astype(
        "float32")
    assert 0.1 < tags.mean() < 0.9
    data = (x, tags, xt, (xt[:, :, :, 0].mean(axis=(1, 2))[:, None]
                          > np.array([0.25, 0.3, 0.35])).astype("float32"))
    result = sanity.initial_loss(QUICK, data=data)
    assert "ln 2" in result.verdict and result.passed
    check = sanity.gradient_check(QUICK, data=digits)
    assert check.passed and check.data["entries"]
    results = sanity.run_all(QUICK, data=digits, model=_net(10, None),
                             checks=["initial_loss", "regularization_raises_loss"])
    assert [r.name for r in results] == ["initial_loss", "regularization_raises_loss"]
    assert results[1].passed is None  # a user's network: model.l2 cannot reach it


class Subclassed(keras.Model):
    """A subclassed model: no symbolic outputs, and clone_model cannot copy it."""

    def __init__(self):
        super().__init__()
        self.flat, self.out = keras.layers.Flatten(), keras.layers.Dense(10)

    def call(self, x):
        return self.out(self.flat(x))


def test_models_as_people_write_them_without_input_or_subclassed(digits, tmp_path):
    no_input = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
                                 keras.layers.Dense(10, activation="softmax")])
    no_input.compile("adam", "sparse_categorical_crossentropy")
    p = prepare.prepare(QUICK, model=no_input, data=digits)
    assert (p.task.outputs, p.task.activation) == (10, "softmax")
    summary = train.run(QUICK, str(tmp_path / "sub"), model=Subclassed, data=digits)
    assert summary["task"].startswith("multiclass, 10 classes, logits")
    with pytest.raises(ValueError, match="pass a function that builds it"):
        prepare.prepare(QUICK, model=Subclassed(), data=digits)


def test_output_activation_of_layers_and_ops():
    inputs = keras.Input((4,))
    logits = keras.layers.Dense(3)(inputs)
    cases = {"softmax": keras.activations.softmax(logits),  # an op, not a layer
             "sigmoid": keras.ops.sigmoid(keras.layers.Dense(1)(inputs)),
             "linear": logits}
    for name, out in cases.items():
        assert tasks.output_activation(keras.Model(inputs, out)) == name
    assert tasks.output_activation(keras.Sequential([
        inputs, keras.layers.Dense(3), keras.layers.Softmax()])) == "softmax"
    assert tasks.output_activation(keras.Sequential([
        inputs, keras.layers.Dense(3), keras.layers.Activation("sigmoid")])) == "sigmoid"
