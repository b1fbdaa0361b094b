"""Predict with a finished run: its model, its preprocessing, its class names, its crops.

``python -m recipes.predict --workdir=RUN --input=PATH --out=predictions.csv`` and
``recipes.predict.predict(workdir, inputs)``. The inputs go through what the run's test
score went through (``recipes.train``): the evaluation pipeline (``recipes.pipeline.make``:
``to_float``, the centre crop of ``augment.crop_size``, the saved ``Preprocessor``), or, when
the run's ``evaluate.tta`` is not ``none``, the crop-averaged ``recipes.tta.predict``.

Inputs (``--input`` / ``inputs``):

* an array, an ``.npz`` file with an array ``x``, or an ``.npy`` file (both read with
  ``allow_pickle=False``): shaped ``(N, *input shape)`` like the run's training examples
  (``(N, H, W)`` too for one-channel images); 8-bit ``uint8`` is scaled by 1/255 and other
  dtypes are taken as they are, as in training (``recipes.preprocessing.to_float``);
* an image file (PNG, JPEG, BMP, GIF) or a folder of them (sub-folders too, sorted by path,
  hidden files skipped), decoded by ``recipes.sources.FileImages``. A run whose images came
  from files (``folder:``, ``tfds:``) resizes and converts them to its size and channels, as
  ``dataset.image_size``/``color_mode`` did; a run on arrays takes image files of its exact
  size and colour only.

Output: probabilities (softmax or sigmoid of logits; a model that outputs probabilities is
read as it is: ``recipes.tasks``), the predicted class ids and names; the CSV has the
columns ``input`` (file name, or row index), ``predicted``, ``class_id``, ``p_<class>``.
Everything is read and checked before the CSV is written (atomically, ``recipes.io``).
"""

from __future__ import annotations

import functools
import os
import sys
import zipfile
from collections.abc import Sequence
from typing import Any

import keras
import ml_collections
import numpy as np
from absl import flags

from recipes import cli, configs, io, pipeline, preprocessing, readers, sources, tasks, tta

PROG = "recipes.predict"
SUMMARY, CONFIG, MODEL = "summary.json", "config.json", "model.keras"
RUN_FILES = (CONFIG, SUMMARY, MODEL, preprocessing.JSON_NAME, preprocessing.NPZ_NAME)
#: ``dataset.name`` prefixes whose images were read from files and resized to one size.
FILE_SOURCES = ("folder:", "tfds:")
KINDS = ("give a .npz file with an array x, a .npy file, an image (PNG, JPEG, BMP, GIF) or "
         "a folder of images")
_TTA_CHUNK = 1024  # images preprocessed and crop-averaged at once (as recipes.train)


class Run:
    """A finished run, read from its workdir; the model is loaded on first use.

    Attributes:
        workdir: the run's directory.
        config: its completed config tree.
        summary: its ``summary.json``.
        preprocessor: the fitted preprocessing.
        class_names: output ``i`` is ``class_names[i]``.
    """

    def __init__(self, workdir: str, config: ml_collections.ConfigDict, summary: dict,
                 preprocessor: preprocessing.Preprocessor, class_names: Sequence[str]):
        self.workdir, self.config, self.summary = workdir, config, summary
        self.preprocessor, self.class_names = preprocessor, tuple(class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One raw example as the run's training data held it: ``(H, W, C)`` or ``(D,)``."""
        return self.preprocessor.input_shape

    @property
    def reads_files(self) -> bool:
        """Whether the run read its images from files, resized to one size (folder, tfds)."""
        user = str(self.summary.get("dataset_source", "")).startswith("user")
        return not user and str(self.config.dataset.name).startswith(FILE_SOURCES)

    @property
    def crop(self) -> tuple[int, int] | None:
        """The centre crop the model sees (``augment.crop_size``), or None for none."""
        if len(self.input_shape) != 3:
            return None
        hw = tuple(pipeline.output_shape(self.config, self.input_shape)[:2])
        return None if hw == self.input_shape[:2] else (int(hw[0]), int(hw[1]))

    @functools.cached_property
    def model(self) -> keras.Model:
        """The trained ``model.keras``, loaded in safe mode."""
        path = os.path.join(self.workdir, MODEL)
        try:
            return keras.saving.load_model(path, safe_mode=True)
        except Exception as e:  # noqa: BLE001 - Keras and h5py raise many types on a bad file
            raise ValueError(f"{path}: cannot be loaded ({type(e).__name__}: "
                             f"{sources.first_line(e)}); the file is damaged: train the run "
                             "again") from None

    @functools.cached_property
    def task(self) -> tasks.Task:
        """What the outputs are (logits or probabilities), read from the model."""
        kind = str(self.summary.get("task", "")).split(",")[0]
        try:
            return tasks.infer(self.model, num_classes=len(self.class_names),
                               multilabel=kind == tasks.MULTILABEL)
        except ValueError as e:
            raise ValueError(f"{self.workdir}: {MODEL} does not match the class names in "
                             f"{SUMMARY} ({e})") from None


def load_run(workdir: str | os.PathLike, *, field: str = "workdir") -> Run:
    """Reads a finished run's config, summary, class names and preprocessing.

    Args:
        workdir: the run's directory.
        field: how error messages name it (``--workdir`` on the command line).

    Raises:
        ValueError: not a finished run, or a damaged file, naming it and the fix.
    """
    workdir = os.fspath(workdir)
    where = f"{field}={workdir}"
    if not os.path.isdir(workdir):
        raise ValueError(f"{where}: no such directory; give the workdir of a finished run "
                         "(python -m recipes.train --config=NAME --workdir=DIR)")
    missing = [n for n in RUN_FILES if not os.path.isfile(os.path.join(workdir, n))]
    if SUMMARY in missing and CONFIG not in missing:  # model.keras comes at the end too
        raise ValueError(f"{where}: the run has not finished (no {SUMMARY}); run the same "
                         "recipes.train command again to finish it, then predict")
    if missing:
        raise ValueError(f"{where}: not a finished run ({', '.join(missing)} missing); give "
                         "the workdir that python -m recipes.train --workdir=DIR wrote")
    try:
        config = configs.complete(io.read_json(os.path.join(workdir, CONFIG), what="config"))
        summary = io.read_json(os.path.join(workdir, SUMMARY), what="summary")
        pre = preprocessing.Preprocessor.load(workdir)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    names = summary.get("class_names") if isinstance(summary, dict) else None
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise ValueError(f"{where}: {SUMMARY} names no classes (class_names); train the run "
                         "again with this version of babysit")
    return Run(workdir, config, summary, pre, names)


# --- inputs --------------------------------------------------------------------------------


def read_inputs(run: Run, inputs: Any, *, field: str = "inputs"
                ) -> tuple[np.ndarray | sources.FileImages, list[str]]:
    """The examples ``inputs`` names, checked against the run, and a name for each.

    Args:
        run: from ``load_run``.
        inputs: an array, or the path of an ``.npz``/``.npy`` file, an image or a folder.
        field: how error messages name ``inputs`` (``--input`` on the command line).

    Returns:
        ``(x, names)``: an array ``(N, *run.input_shape)`` or lazy ``FileImages`` (read
        batch by batch); names are row indices, or file paths relative to a folder.

    Raises:
        ValueError: naming ``field``, what is wrong and the fix.
    """
    if isinstance(inputs, (str, os.PathLike)):
        return _read_path(run, os.fspath(inputs), f"{field}={os.fspath(inputs)}")
    try:
        x = np.asarray(inputs)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{field}: not an array ({e}); {KINDS}") from None
    x = check_array(run, x, field)
    return x, [str(i) for i in range(len(x))]


def _read_path(run: Run, path: str, where: str
               ) -> tuple[np.ndarray | sources.FileImages, list[str]]:
    if os.path.isdir(path):
        files = image_files(path, where)
        return _images(run, files, where), [os.path.relpath(f, path).replace(os.sep, "/")
                                            for f in files]
    if not os.path.exists(path):
        raise ValueError(f"{where}: no such file or folder; {KINDS}")
    ext = os.path.splitext(path)[1].lower()
    if ext in sources.IMAGE_EXTENSIONS:
        return _images(run, [path], where), [os.path.basename(path)]
    if ext not in (".npz", ".npy"):
        raise ValueError(f"{where}: unknown kind of file ({ext or 'no extension'}); {KINDS}")
    x = _load_npz(path, where) if ext == ".npz" else _load_npy(path, where)
    x = check_array(run, x, where)
    return x, [str(i) for i in range(len(x))]


def _load_npz(path: str, where: str) -> np.ndarray:
    """The array ``x`` of an ``.npz`` file, read without pickle."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError(f"{where}: is a single array, not an .npz archive; rename it to "
                             ".npy, or save the inputs with np.savez(path, x=x)")
        with loaded:
            if "x" not in loaded.files:
                raise ValueError(f"{where}: holds no array named x (it holds "
                                 f"{', '.join(loaded.files) or 'nothing'}); save the inputs "
                                 "with np.savez(path, x=x)")
            return loaded["x"]
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{where}: cannot be read as .npz ({e}); {KINDS}") from None
    except ValueError as e:
        if str(e).startswith(where):
            raise
        raise ValueError(f"{where}: cannot be read without pickle ({e}); save plain numeric "
                         "arrays with np.savez(path, x=x)") from None


def _load_npy(path: str, where: str) -> np.ndarray:
    """An ``.npy`` file's array, read without pickle."""
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, EOFError) as e:
        raise ValueError(f"{where}: cannot be read as .npy ({e}); {KINDS}") from None
    except ValueError as e:
        raise ValueError(f"{where}: cannot be read without pickle ({e}); save a plain "
                         "numeric array with np.save(path, x)") from None
    if not isinstance(x, np.ndarray):  # an .npz archive under an .npy name
        x.close()
        raise ValueError(f"{where}: is an .npz archive, not an .npy array; rename it to .npz "
                         "(with the inputs as x)")
    return x


def image_files(folder: str, where: str = "folder") -> list[str]:
    """The image files under ``folder`` (sub-folders too), sorted by path; hidden ones skipped.

    Raises:
        ValueError: the folder holds no image.
    """
    found = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, n) for n in names if not n.startswith(".")
                  and n.lower().endswith(sources.IMAGE_EXTENSIONS)]
    if not found:
        raise ValueError(f"{where}: the folder holds no images "
                         f"({', '.join(sources.IMAGE_EXTENSIONS)}, any case); {KINDS}")
    return sorted(found, key=lambda f: os.path.relpath(f, folder).split(os.sep))


def _images(run: Run, files: list[str], where: str) -> sources.FileImages:
    """Image files read as the run's examples (resized only for a run on files)."""
    shape = run.input_shape
    if len(shape) != 3:
        raise ValueError(f"{where}: images, but the run was trained on vectors of shape "
                         f"{shape}; give a .npy or .npz (x) of shape (N, {shape[0]})")
    h, w, c = shape
    headers = []
    for path in files:
        try:
            headers.append(readers.probe(path))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    if not run.reads_files:
        color = "grayscale" if c == 1 else "RGB" if c == 3 else f"{c}-channel"
        for path, hd in zip(files, headers):
            if (hd.height, hd.width) != (h, w) or c not in (1, 3) or hd.gray != (c == 1):
                raise ValueError(
                    f"{where}: {path} is a {hd.height}x{hd.width} "
                    f"{'grayscale' if hd.gray else 'colour'} image, but the run "
                    f"(dataset.name={run.config.dataset.name}) was trained on {h}x{w} "
                    f"{color} arrays, not on image files it resizes; convert the images to "
                    f"{h}x{w} {color} first, or give an array of shape (N, {h}, {w}, {c})")
    return sources.FileImages(files, (h, w), c)


def check_array(run: Run, x: np.ndarray, where: str) -> np.ndarray:
    """``x`` as a batch of the run's examples: its shape, dtype and values checked.

    Raises:
        ValueError: naming ``where``, the shapes and the fix.
    """
    shape = run.input_shape
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{where}: values of dtype {x.dtype}; give numbers (uint8 for 8-bit "
                         "images, float32 otherwise)")
    if len(shape) == 3 and shape[-1] == 1 and x.ndim == 3 and x.shape[1:] == shape[:2]:
        x = x[..., None]  # (N, H, W) one-channel images
    if x.shape == shape:
        raise ValueError(f"{where}: one example of shape {x.shape}; give a batch, e.g. x[None] "
                         f"of shape (1, {', '.join(map(str, shape))})")
    if x.ndim != len(shape) + 1 or x.shape[1:] != shape:
        fix = (f"resize them to {shape[0]}x{shape[1]} with {shape[2]} channel(s), or give the "
               "image files (this run resizes files)" if run.reads_files and len(shape) == 3
               else "give inputs shaped like the run's training data "
                    f"(dataset.name={run.config.dataset.name})")
        raise ValueError(f"{where}: examples of shape {x.shape[1:]} (array {x.shape}), but the "
                         f"run's model takes raw examples of shape {shape}: (N, "
                         f"{', '.join(map(str, shape))}); {fix}")
    if len(x) == 0:
        raise ValueError(f"{where}: no examples (shape {x.shape}); give at least one")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        raise ValueError(f"{where}: {int(bad.sum())} example(s) hold NaN or inf, the first at "
                         f"row {int(np.argmax(bad))}; clean or drop them")
    return x


# --- predictions ---------------------------------------------------------------------------


def class_probabilities(task: tasks.Task, outputs: Any) -> np.ndarray:
    """A model's outputs as one probability per class, float32 ``(N, C)``.

    Logits go through softmax (sigmoid for one or several independent units); one sigmoid
    unit (a binary task) becomes the two columns ``(1 - p, p)``.
    """
    p = tasks.probabilities(task, np.asarray(outputs)).astype(np.float32)
    if task.kind == tasks.BINARY:
        p = np.concatenate([1.0 - p, p], axis=-1)
    return p


def probabilities(run: Run, x: np.ndarray | sources.FileImages, *,
                  batch_size: int | None = None) -> np.ndarray:
    """Class probabilities of checked raw examples, as the run computed its test score.

    Args:
        run: from ``load_run``.
        x: from ``read_inputs`` (raw: before ``to_float`` and the preprocessing).
        batch_size: examples per forward pass (default: the run's ``train.batch_size``).

    Returns:
        float32 ``(N, C)``, in the order of ``run.class_names``.
    """
    e = run.config.evaluate
    if e.tta != "none":  # as recipes.train's test score: full images preprocessed, then crops
        chunks = [tta.predict(run.model, run.preprocessor.transform(x[i:i + _TTA_CHUNK]),
                              e.tta, grid=e.grid, from_logits=run.task.from_logits,
                              batch_size=int(batch_size or 256))
                  for i in range(0, len(x), _TTA_CHUNK)]
        return np.concatenate(chunks).astype(np.float32)
    cfg = ml_collections.ConfigDict(run.config.to_dict())
    cfg.train.full_batch = False  # whole-set batches help training, not prediction
    cfg.train.batch_size = int(batch_size or run.config.train.batch_size)
    ds = pipeline.make(x, np.zeros(len(x), np.int64), cfg, training=False,
                       num_classes=len(run.class_names), preprocessor=run.preprocessor)
    return class_probabilities(run.task, run.model.predict(ds, verbose=0))


def predict(workdir: str | os.PathLike, inputs: Any, *, batch_size: int | None = None,
            fields: tuple[str, str] = ("workdir", "inputs")) -> dict[str, Any]:
    """Predicts the classes of ``inputs`` with the finished run in ``workdir``.

    Args:
        workdir: the run's directory (``model.keras``, ``preprocessing.*``, ``summary.json``).
        inputs: an array or a path (``.npz`` with ``x``, ``.npy``, an image, a folder).
        batch_size: examples per forward pass (default: the run's ``train.batch_size``).
        fields: how errors name ``workdir`` and ``inputs`` (the CLI's flags).

    Returns:
        ``inputs`` (a name per example), ``class_names`` (the run's), ``probabilities``
        (float32 ``(N, C)``), ``class_ids`` (int64 ``(N,)``, the most probable class),
        ``predicted`` (its name per example) and ``tta`` (the run's ``evaluate.tta``).

    Raises:
        ValueError: a workdir that holds no finished run, or inputs that do not fit it,
            naming the field and the fix; nothing is predicted then.
    """
    run = load_run(workdir, field=fields[0])
    x, names = read_inputs(run, inputs, field=fields[1])  # checked before the model loads
    probs = probabilities(run, x, batch_size=batch_size)
    ids = probs.argmax(axis=-1).astype(np.int64)
    return {"inputs": names, "class_names": list(run.class_names), "probabilities": probs,
            "class_ids": ids, "predicted": [run.class_names[i] for i in ids],
            "tta": run.config.evaluate.tta}


def csv_columns(class_names: Sequence[str]) -> list[str]:
    """The CSV's columns: ``input, predicted, class_id, p_<class>...``."""
    return ["input", "predicted", "class_id", *(f"p_{n}" for n in class_names)]


def write_csv(result: dict[str, Any], path: str) -> None:
    """Writes ``predict``'s result as CSV to ``path`` atomically (parent folders created)."""
    columns = csv_columns(result["class_names"])
    rows = [{"input": name, "predicted": label, "class_id": int(i),
             **{c: str(np.float32(p)) for c, p in zip(columns[3:], probs)}}
            for name, label, i, probs in zip(result["inputs"], result["predicted"],
                                             result["class_ids"], result["probabilities"])]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    io.write_csv(path, rows, columns)


def check_out(path: str, field: str = "out") -> None:
    """Refuses an output path that is a folder or cannot be written.

    Raises:
        ValueError: naming ``field`` and the fix.
    """
    if not path or os.path.isdir(path):
        raise ValueError(f"{field}={path}: give the path of the CSV file to write, e.g. "
                         "predictions.csv")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise ValueError(f"{field}={path}: {parent} cannot be written to; choose another path")


def main(argv: list[str] | None = None) -> None:
    """``python -m recipes.predict --workdir=RUN --input=PATH [--out=predictions.csv]``."""
    if "input" not in flags.FLAGS:
        if "workdir" not in flags.FLAGS:
            flags.DEFINE_string("workdir", None, "The finished run's directory.")
        flags.DEFINE_string("input", None, "An .npz (array x), an .npy, an image file or a "
                            "folder of images.")
        flags.DEFINE_string("out", "predictions.csv", "The CSV file to write.")
        flags.DEFINE_integer("batch_size", None, "Examples per forward pass (default: the "
                             "run's train.batch_size).")

    def job(f: Any) -> None:
        check_out(f.out, "--out")
        result = predict(f.workdir, f.input, batch_size=f.batch_size,
                         fields=("--workdir", "--input"))
        write_csv(result, f.out)
        print(f"wrote {len(result['inputs'])} predictions to {f.out}")

    cli.run_on_workdir(job, list(sys.argv if argv is None else argv), prog=PROG,
                       required={"workdir": "the finished run's directory",
                                 "input": "an .npz, .npy, image or folder of images"},
                       cli_help=cli.CliHelp(
        "--workdir=RUN --input=PATH [--out=predictions.csv]",
        "python -m recipes.predict --workdir=runs/digits --input=images/ --out=predictions.csv",
        "Predicts with a finished run: its model, its saved preprocessing and its "
        "test-time crops; writes one CSV row per input (the predicted class and every "
        "class's probability); see docs/training.md."))


if __name__ == "__main__":
    main()
