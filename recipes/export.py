"""Export a finished run for serving: raw inputs in, class probabilities out.

``python -m recipes.export --workdir=RUN [--input_dtype=uint8|float32]`` and
``recipes.export.export(workdir)`` write ``RUN/export/``:

* ``model.keras``: one Keras model that takes the raw examples ``recipes.predict`` takes
  (``(N, *input shape)``, ``uint8`` 8-bit images or ``float32``) and returns what it reports,
  the class probabilities ``(N, C)``. Inside, as Keras layers: ``Rescaling(1/255)`` for
  ``uint8`` (``recipes.preprocessing.to_float``), ``CenterCrop`` (``augment.crop_size``), the
  saved preprocessing (``Normalization`` with the saved mean and variance; PCA and ZCA as
  ``Flatten``, a centring ``Normalization`` and a frozen bias-free ``Dense`` projection), the
  trained network, then ``Softmax`` (``sigmoid`` for sigmoid units) when it outputs logits.
  A run evaluated with test-time crops (``evaluate.tta``) averages the softmax over the same
  ``Cropping2D`` views ``recipes.tta`` takes (``FlipLeftRight`` mirrors the ten-crop ones).
  It loads with ``keras.saving.load_model(path, safe_mode=True)`` after ``import
  recipes.export`` (which registers every babysit class).
* ``saved_model/``: the same model as a TensorFlow SavedModel (``model.export``), for TF
  Serving: ``tf.saved_model.load(path).serve(x)``.
* ``export.json``: the input shape and dtype, the class names of the output columns and how
  the inputs are treated.

The raw dtype is the one the run's data source gave (``uint8`` for image files, MNIST,
CIFAR and 8-bit ``.npz`` files; ``float32`` for ``digits`` and other ``.npz`` files); a run
on the user's own arrays needs ``input_dtype``. Before anything is written, the exported
model is checked against ``recipes.predict`` on a few random inputs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import sys
import zipfile
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
from absl import flags
from absl import logging as absl_logging

from models.layers import FlipLeftRight
from recipes import cli, io, predict, preprocessing, tasks, tta
from recipes import workdir as wd

PROG = "recipes.export"
EXPORT_DIR = "export"
INPUT_DTYPES = ("uint8", "float32")
UINT8_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")  # recipes.data's 8-bit ones
_CHECK_EXAMPLES = 4  # random raw inputs the exported model must agree with predict on
_TOLERANCE = 1e-4  # largest probability difference allowed there


def raw_dtype(run: predict.Run) -> str | None:
    """The dtype the run's data source gave its raw examples, or None when it cannot tell."""
    name = str(run.config.dataset.name)
    if str(run.summary.get("dataset_source", "")).startswith("user"):
        return None  # the user's arrays: their dtype was not recorded
    if name in UINT8_DATASETS or name.startswith("folder:"):
        return "uint8"
    if name == "digits":
        return "float32"
    if name.startswith("tfds:"):
        return "uint8" if len(run.input_shape) == 3 else None
    if name.startswith("npz:"):
        return _npz_dtype(name[len("npz:"):])
    return None


def _npz_dtype(path: str) -> str | None:
    """``uint8`` or ``float32``, as ``recipes.data`` keeps an ``.npz``'s ``x_train`` (header)."""
    try:
        with zipfile.ZipFile(os.path.expanduser(path)) as z, z.open("x_train.npy") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            _, _, dtype = read(f)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None  # moved or changed since training
    return "uint8" if dtype == np.uint8 else "float32"


def input_dtype_for(run: predict.Run, input_dtype: str | None = None, *,
                    field: str = "input_dtype") -> str:
    """``input_dtype`` checked, or the run's raw dtype.

    Raises:
        ValueError: an unknown dtype, or none given when the run cannot tell its own.
    """
    if input_dtype is None:
        input_dtype = raw_dtype(run)
        if input_dtype is None:
            raise ValueError(
                f"{field}: the run trained on {run.summary.get('dataset_source') or 'data'} "
                f"(dataset.name={run.config.dataset.name}), whose raw dtype cannot be read "
                f"back; give {field}=uint8 (8-bit images, scaled by 1/255 as in training) or "
                f"{field}=float32 (values taken as they are)")
    if input_dtype not in INPUT_DTYPES:
        raise ValueError(f"{field}={input_dtype!r}: use one of {', '.join(INPUT_DTYPES)}")
    return input_dtype


def preprocessing_layers(pre: preprocessing.Preprocessor, x: Any) -> Any:
    """``pre.transform`` as Keras layers applied to the float tensor ``x``.

    Raises:
        ValueError: a method that has no layers here.
    """
    p, method, shape = pre.params, pre.method, pre.input_shape
    if method == "none":
        return x
    if method in ("mean_image", "per_channel_mean", "standardize"):
        axis = tuple(range(1, len(shape) + 1)) if method == "mean_image" else -1
        variance = p.get("variance", np.ones_like(p["mean"]))  # mean-only: divide by 1
        return keras.layers.Normalization(axis=axis, mean=p["mean"], variance=variance,
                                          dtype="float32", name=f"preprocess_{method}")(x)
    if method not in ("pca", "zca"):
        raise ValueError(f"dataset.preprocess={method!r} cannot be exported as Keras layers; "
                         "export supports " + ", ".join(preprocessing.METHODS))
    matrix = p["components"] if method == "pca" else p["whitening"]  # (D, k) or (D, D)
    flat = keras.layers.Flatten(name="flatten")(x) if len(shape) > 1 else x
    centred = keras.layers.Normalization(axis=-1, mean=p["mean"], variance=np.ones_like(
        p["mean"]), dtype="float32", name=f"{method}_centre")(flat)
    project = keras.layers.Dense(matrix.shape[1], use_bias=False, trainable=False,
                                 dtype="float32", name=f"{method}_projection")
    out = project(centred)
    project.set_weights([matrix])
    if method == "zca" and len(shape) > 1:
        out = keras.layers.Reshape(shape, name="zca_image")(out)
    return out


def _head(task: tasks.Task) -> list[keras.layers.Layer]:
    """Layers that turn the network's outputs into ``predict``'s probabilities."""
    if not task.from_logits:
        return []
    if task.kind == tasks.MULTICLASS:
        return [keras.layers.Softmax(dtype="float32", name="softmax")]
    return [keras.layers.Activation("sigmoid", dtype="float32", name="sigmoid")]


def _probabilities(run: predict.Run, x: Any, head: list[keras.layers.Layer]) -> Any:
    """The trained network on ``x``, then ``head``."""
    out = run.model(x)
    for layer in head:
        out = layer(out)
    return out


def _crop_average(run: predict.Run, x: Any, head: list[keras.layers.Layer]) -> Any:
    """The mean probabilities over ``recipes.tta``'s views of the preprocessed images."""
    e = run.config.evaluate
    height, width = run.input_shape[:2]
    try:  # tta.predict's crop: the model's input size, or the whole image if it takes any
        declared = run.model.input_shape
    except (AttributeError, ValueError):  # a subclassed model without a declared input
        declared = ()
    crop = tuple(declared[1:3]) if len(declared) == 4 and None not in declared[1:3] else None
    windows = tta.crop_windows(e.tta, (height, width), crop, e.grid)
    h, w = crop or (height, width)
    views = []
    for i, c in enumerate(windows):
        v = keras.layers.Cropping2D(((c.top, height - h - c.top), (c.left, width - w - c.left)),
                                    name=f"view_{i}")(x)
        if c.flip:
            v = FlipLeftRight(name=f"view_{i}_flipped")(v)
        views.append(_probabilities(run, v, head))
    return views[0] if len(views) == 1 else keras.layers.Average(name="crop_average")(views)


def build(run: predict.Run, input_dtype: str) -> keras.Model:
    """The serving model: raw examples of ``input_dtype`` in, class probabilities out.

    Args:
        run: from ``recipes.predict.load_run``.
        input_dtype: ``uint8`` (scaled by 1/255 inside) or ``float32``.

    Returns:
        A functional ``keras.Model`` named ``babysit_export``.
    """
    raw = keras.Input(run.input_shape, dtype=input_dtype, name="raw")
    x = keras.layers.Rescaling(1.0 / 255, dtype="float32", name="to_float")(raw) \
        if input_dtype == "uint8" else raw
    head = _head(run.task)
    if run.config.evaluate.tta != "none":  # as predict: preprocess the full image, then crop
        probs = _crop_average(run, preprocessing_layers(run.preprocessor, x), head)
    else:  # as the evaluation pipeline: crop, then preprocess
        if run.crop:
            x = keras.layers.CenterCrop(*run.crop, dtype="float32", name="center_crop")(x)
        probs = _probabilities(run, preprocessing_layers(run.preprocessor, x), head)
    if run.task.kind == tasks.BINARY:  # one sigmoid unit -> the two columns (1 - p, p)
        other = keras.layers.Rescaling(-1.0, offset=1.0, name="other_class")(probs)
        probs = keras.layers.Concatenate(name="class_probabilities")([other, probs])
    return keras.Model(raw, probs, name="babysit_export")


def check_agreement(run: predict.Run, model: keras.Model, input_dtype: str) -> float:
    """The largest difference between ``model`` and ``recipes.predict`` on random inputs.

    Raises:
        ValueError: they disagree by more than ``_TOLERANCE`` (nothing is written then).
    """
    rng = np.random.default_rng(0)
    shape = (_CHECK_EXAMPLES, *run.input_shape)
    x = rng.integers(0, 256, shape, dtype=np.uint8) if input_dtype == "uint8" else \
        rng.random(shape, dtype=np.float32)
    expected = predict.probabilities(run, x)
    got = keras.ops.convert_to_numpy(model(x, training=False))
    gap = float(np.max(np.abs(got - expected)))
    if not gap <= _TOLERANCE:
        raise ValueError(f"export: the exported model differs from recipes.predict by {gap:.3g} "
                         f"on random inputs (allowed {_TOLERANCE}); the run's model "
                         f"{type(run.model).__name__} may behave differently when nested: "
                         "use recipes.predict")
    return gap


def export(workdir: str | os.PathLike, *, input_dtype: str | None = None,
           fields: tuple[str, str] = ("workdir", "input_dtype")) -> dict[str, str]:
    """Writes ``workdir/export/``: the serving model, its SavedModel and ``export.json``.

    Args:
        workdir: a finished run's directory.
        input_dtype: the raw inputs' dtype, ``uint8`` or ``float32``; default the run's
            (required for a run on the user's own arrays).
        fields: how errors name ``workdir`` and ``input_dtype`` (the CLI's flags).

    Returns:
        The paths written: ``model`` (``.keras``), ``saved_model`` (folder) and ``info``.

    Raises:
        ValueError: not a finished run, a dtype that cannot be told, or a preprocessing
            method that cannot be exported; nothing is written then.
        OSError: a write failed (disk full), naming the file.
    """
    run = predict.load_run(workdir, field=fields[0])
    dtype = input_dtype_for(run, input_dtype, field=fields[1])
    model = build(run, dtype)
    check_agreement(run, model, dtype)
    out = os.path.join(run.workdir, EXPORT_DIR)
    paths = {"model": os.path.join(out, "model.keras"),
             "saved_model": os.path.join(out, "saved_model"),
             "info": os.path.join(out, "export.json")}
    with wd.locked(run.workdir):  # no replacement of the run (--overwrite) meanwhile
        os.makedirs(out, exist_ok=True)
        need = 2 * 4 * model.count_params() + (1 << 20)
        io.write_with(paths["model"], model.save, suffix=".keras", need=need)
        write_saved_model(model, paths["saved_model"], need=need)
        io.write_json(paths["info"], _info(run, dtype))
    return paths


def _info(run: predict.Run, input_dtype: str) -> dict[str, Any]:
    """``export.json``: what the exported model takes and returns."""
    return {"input_shape": list(run.input_shape), "input_dtype": input_dtype,
            "outputs": "class probabilities (N, C); column i is class_names[i]",
            "class_names": list(run.class_names),
            "preprocess": run.preprocessor.method, "center_crop": run.crop,
            "tta": run.config.evaluate.tta, "model": "model.keras",
            "saved_model": "saved_model", "load": "import recipes.export; "
            "keras.saving.load_model('model.keras', safe_mode=True)"}


def write_saved_model(model: keras.Model, path: str, *, need: int = 0) -> None:
    """``model.export(path)`` built beside ``path`` and swapped in once complete.

    Raises:
        OSError: no room, or the write failed (disk full), naming ``path``.
    """
    parent, name = os.path.split(os.path.abspath(path))
    io.ensure_space(path, need)
    tmp = os.path.join(parent, f".{name}.{secrets.token_hex(4)}.tmp")  # made by the export
    old = f"{tmp}.old"
    try:
        with _quiet_tensorflow():
            model.export(tmp, verbose=False)
        if os.path.exists(path):
            os.replace(path, old)
        os.replace(tmp, path)
    except Exception as e:  # noqa: BLE001 - TensorFlow's writers raise their own types
        if io.is_disk_full(e):
            raise io.as_os_error(e) from e
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _quiet_tensorflow() -> Iterator[None]:
    """Hides TensorFlow's INFO lines (renamed inputs, assets written) for the block."""
    logger = logging.getLogger("tensorflow")
    level, verbosity = logger.level, absl_logging.get_verbosity()
    logger.setLevel(logging.WARNING)
    absl_logging.set_verbosity(absl_logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
        absl_logging.set_verbosity(verbosity)


def main(argv: list[str] | None = None) -> None:
    """``python -m recipes.export --workdir=RUN [--input_dtype=uint8|float32]``."""
    if "input_dtype" not in flags.FLAGS:
        if "workdir" not in flags.FLAGS:
            flags.DEFINE_string("workdir", None, "The finished run's directory.")
        flags.DEFINE_string("input_dtype", None, "The raw inputs' dtype, uint8 or float32 "
                            "(default: the run's data source's).")

    def job(f: Any) -> None:
        paths = export(f.workdir, input_dtype=f.input_dtype,
                       fields=("--workdir", "--input_dtype"))
        for name, path in paths.items():
            print(f"wrote {name}: {path}")

    cli.run_on_workdir(job, list(sys.argv if argv is None else argv), prog=PROG,
                       required={"workdir": "the finished run's directory"},
                       cli_help=cli.CliHelp(
        "--workdir=RUN [--input_dtype=uint8|float32]",
        "python -m recipes.export --workdir=runs/digits",
        "Exports a finished run: RUN/export/model.keras takes raw inputs (the "
        "preprocessing inside, as Keras layers) and RUN/export/saved_model serves them; "
        "see docs/training.md."))


if __name__ == "__main__":
    main()
