"""A catalog of bad inputs: each one is refused with one clear message and leaves nothing behind.

Python API cases call ``recipes.train.run`` (or the loader that owns the input) and check a
``ValueError`` naming the field, and that the workdir was not created or is unchanged. CLI
cases run the real commands: exit status 2, one stderr line, no traceback.
"""

import errno
import gzip
import json
import os
import pickle
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import quick as _quick
from helpers import snapshot

from recipes import configs, data, io, train


def quick(**overrides):
    return _quick(epochs=1, **overrides)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def digits_splits(x=None, y=None, *, split="train"):
    """The digits splits with one split's x or y replaced (bypasses data.load's checks)."""
    s = data.load("digits", limit=300)
    part = getattr(s, split)
    part = data.Split(part.x if x is None else x(part.x), part.y if y is None else y(part.y))
    return data.Splits(**{**{k: getattr(s, k) for k in ("train", "val", "test", "info")},
                          split: part})


# -- config fields through recipes.train.run: nothing written -----------------------------

CONFIG_CASES = [
    ({"dataset.name": "imagenet"}, "imagenet"),
    ({"dataset.name": "npz:"}, "dataset.name"),
    ({"dataset.val_size": 1.0}, "val_size"),
    ({"dataset.val_size": 1.5}, "val_size"),
    ({"dataset.val_size": 0.0}, "val_size"),
    ({"dataset.val_size": 100000}, "val_size"),
    ({"dataset.preprocess": "whiten"}, "whiten"),
    ({"model.activation": "relu6x"}, "relu6x"),
    ({"model.init": "glorious"}, "glorious"),
    ({"model.norm": "batchy"}, "batchy"),
    ({"model.arch": "transformer"}, "transformer"),
    ({"optimizer.name": "sgdd"}, "sgdd"),
    ({"optimizer.learning_rate": 0.0}, "learning_rate"),
    ({"optimizer.learning_rate": -1e-3}, "learning_rate"),
    ({"schedule.name": "cosinus"}, "cosinus"),
    ({"loss.name": "hinge2"}, "hinge2"),
    ({"augment.flip": "diagonal"}, "augment.flip"),
    ({"augment.crop_size": 12}, "crop_size"),
    ({"augment.rotation": -0.1}, "augment.rotation"),
    ({"evaluate.tta": "twelve_crop"}, "evaluate.tta"),
    ({"train.batch_size": 100000}, "batch_size"),
    ({"train.batch_size": 0}, "batch_size"),
    ({"train.epochs": 0}, "train.epochs"),
    ({"train.distribute": "cluster"}, "train.distribute"),
]


@pytest.mark.parametrize("overrides, needle", CONFIG_CASES,
                         ids=[f"{next(iter(o))}={next(iter(o.values()))}"
                              for o, _ in CONFIG_CASES])
def test_bad_config_field_is_refused_before_writing(tmp_path, overrides, needle):
    workdir = tmp_path / "w"
    with pytest.raises(ValueError, match=needle):
        train.run(quick(**overrides), str(workdir))
    assert not workdir.exists()


def test_unknown_config_field_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown field 'optimizer.lr'"):
        train.run({"optimizer": {"lr": 0.1}}, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_unknown_babysit_step_is_refused(tmp_path):
    from recipes import babysit

    with pytest.raises(ValueError, match="babysit.steps.*trian"):
        babysit.run(quick(), str(tmp_path / "w"), steps="sanity,trian", echo=lambda s: None)
    assert not (tmp_path / "w").exists()


# -- bad arrays given to recipes.train.run(splits=...) -------------------------------------

ARRAY_CASES = [
    ("nan-pixels", dict(x=lambda x: np.where(np.arange(x.size).reshape(x.shape) == 7,
                                             np.nan, x).astype(np.float32)), "splits.train.*NaN"),
    ("inf-pixels", dict(x=lambda x: np.full_like(x, np.inf)), "inf"),
    ("label-too-big", dict(y=lambda y: np.where(np.arange(len(y)) == 0, 10, y)),
     "splits.train.*outside"),
    ("label-negative", dict(y=lambda y: np.where(np.arange(len(y)) == 0, -1, y)), "negative label"),
    ("float-labels", dict(y=lambda y: y + 0.5), "non-integer"),
    ("length-mismatch", dict(y=lambda y: y[:-3]), "length mismatch"),
    ("rank-1-inputs", dict(x=lambda x: x[:, 0, 0, 0]), "rank"),
    ("test-label-too-big", dict(y=lambda y: y + 5, split="test"), "splits.test.*outside"),
]


@pytest.mark.parametrize("case, change, needle", ARRAY_CASES,
                         ids=[c[0] for c in ARRAY_CASES])
def test_bad_arrays_through_train_run_are_refused(tmp_path, case, change, needle):
    workdir = tmp_path / "w"
    with pytest.raises(ValueError, match=needle):
        train.run(quick(), str(workdir), splits=digits_splits(**change))
    assert not workdir.exists()


def test_vectors_are_inputs_too(tmp_path):
    """(N, D) rows are vectors, not a malformed image batch: they train (issue: own data)."""
    s = data.load("digits", limit=300)
    flat = [a.reshape(len(a), -1) for a in (s.train.x, s.test.x)]
    summary = train.run(_quick(epochs=3), str(tmp_path / "v"),
                        data=(flat[0], s.train.y, flat[1], s.test.y))
    assert summary["num_train"] > 0 and summary["test_accuracy"] > 0.5


# -- the one checker every source goes through: data.validate_arrays ----------------------

def _ok_y(n=6):
    return np.arange(n) % 2


VALIDATE_CASES = [
    ("nan", np.full((6, 4, 4), np.nan, np.float32), _ok_y(), "NaN"),
    ("inf", np.full((6, 4, 4), -np.inf, np.float64), _ok_y(), "inf"),
    ("label-out-of-range", np.zeros((6, 4, 4)), np.array([0, 1, 2, 3, 4, 10]), "outside"),
    ("label-non-integer", np.zeros((6, 4, 4)), np.array([0, 1, 0.5, 1, 0, 1]), "non-integer"),
    ("label-nan", np.zeros((6, 4, 4)), np.array([0, 1, np.nan, 1, 0, 1]), "non-integer"),
    ("label-strings", np.zeros((6, 4, 4)), np.array(list("abcdef")), "dtype"),
    ("length-mismatch", np.zeros((5, 4, 4)), _ok_y(), "length mismatch"),
    ("empty", np.zeros((0, 4, 4)), np.zeros(0, int), "empty"),
    ("rank-1", np.zeros(6), _ok_y(), "rank"),
    ("rank-5", np.zeros((6, 4, 4, 1, 1)), _ok_y(), "rank"),
    ("channels-first", np.zeros((6, 8, 8, 8)), _ok_y(), "channels"),
    ("one-class", np.zeros((6, 4, 4)), np.zeros(6, int), "one class"),
    ("one-hot-labels", np.zeros((6, 4, 4)), np.eye(6, 2), "argmax"),
    ("complex-pixels", np.zeros((6, 4, 4), complex), _ok_y(), "dtype"),
]


@pytest.mark.parametrize("case, x, y, needle", VALIDATE_CASES,
                         ids=[c[0] for c in VALIDATE_CASES])
def test_validate_arrays_names_the_problem(case, x, y, needle):
    with pytest.raises(ValueError, match=needle) as e:
        data.validate_arrays(x, y, where="npz:mine.npz x_train/y_train", num_classes=10)
    assert "npz:mine.npz" in str(e.value)


# -- untrusted or damaged files ------------------------------------------------------------

def _write_idx(directory, name, payload, *, gz=True):
    path = directory / (name + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def _idx_images(n=2, h=3, w=3):
    return (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, h, w)) \
        + bytes(n * h * w)


IDX_CASES = [
    ("truncated-gz", lambda p: p.write_bytes(gzip.compress(_idx_images())[:-10]),
     "truncated or corrupted"),
    ("garbage-gz", lambda p: p.write_bytes(b"\x1f\x8bnot really gzip at all"),
     "truncated or corrupted"),
    ("wrong-magic", lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(12))),
     "magic"),
    ("short-payload", lambda p: p.write_bytes(gzip.compress(_idx_images()[:-4])), "bytes"),
    ("empty-file", lambda p: p.write_bytes(gzip.compress(b"")), "magic"),
]


@pytest.mark.parametrize("case, write, needle", IDX_CASES, ids=[c[0] for c in IDX_CASES])
def test_damaged_idx_file_is_a_clear_error(tmp_path, case, write, needle):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write(path)
    with pytest.raises(ValueError, match=needle) as e:
        data.read_idx(path, data.IDX_IMAGES)
    assert str(path) in str(e.value)


def test_fashion_mnist_dir_with_a_corrupt_file_names_it(tmp_path):
    src = "/usr/share/datasets/fashion-mnist"
    if not os.path.isdir(src):
        pytest.skip("needs Debian's dataset-fashion-mnist")
    for stem in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        os.symlink(os.path.join(src, stem + ".gz"), tmp_path / (stem + ".gz"))
    raw = open(os.path.join(src, "train-images-idx3-ubyte.gz"), "rb").read()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="train-images.*download it again"):
        data.load("fashion_mnist", data_dir=str(tmp_path))


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/babysit_pwned",))


def _cifar_dir(tmp_path, payload):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    good = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 0, 1]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (d / name).write_bytes(pickle.dumps(good, protocol=2))
    (d / "data_batch_3").write_bytes(payload)
    return tmp_path


@pytest.mark.parametrize("case, payload", [
    ("os.system", pickle.dumps({b"data": _Boom(), b"labels": [0]}, protocol=2)),
    ("builtins.eval", b"cbuiltins\neval\n(S'1+1'\ntR."),
    ("truncated", pickle.dumps({b"data": np.zeros((4, 3072), np.uint8)}, protocol=2)[:40]),
    ("not-a-dict", pickle.dumps([1, 2, 3], protocol=2)),
])
def test_cifar_pickle_with_code_or_damage_is_refused(tmp_path, case, payload):
    marker = "/tmp/babysit_pwned"
    if os.path.exists(marker):
        os.remove(marker)
    root = _cifar_dir(tmp_path, payload)
    with pytest.raises(ValueError, match="data_batch_3") as e:
        data.load("cifar10", data_dir=str(root))
    assert "CIFAR" in str(e.value) or "re-extract" in str(e.value)
    assert not os.path.exists(marker)


def test_npz_with_object_arrays_is_refused(tmp_path):
    path = tmp_path / "objects.npz"
    x = np.empty(4, object)
    np.savez(path, x_train=x, y_train=np.arange(4), x_test=x, y_test=np.arange(4))
    with pytest.raises(ValueError, match="pickle"):
        data.load(f"npz:{path}")


def test_npz_missing_arrays_is_refused(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, x_train=np.zeros((4, 3, 3)), y_train=np.arange(4) % 2)
    with pytest.raises(ValueError, match="x_test"):
        data.load(f"npz:{path}")


def test_keras_file_with_lambda_layer_is_refused_by_finetune(tmp_path):
    from recipes import finetune

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    path = str(tmp_path / "lambda.keras")
    model.save(path)
    with pytest.raises(ValueError, match="base=.*cannot load") as e:
        finetune.load_base(path)
    assert "Lambda" in str(e.value) or "safe" in str(e.value)


# -- workdirs ------------------------------------------------------------------------------

def test_workdir_that_is_a_file_is_left_alone(tmp_path):
    path = tmp_path / "file"
    path.write_text("mine")
    with pytest.raises(ValueError, match="is a file"):
        train.run(quick(), str(path))
    assert path.read_text() == "mine"


def test_unwritable_workdir_is_refused(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        if os.access(parent, os.W_OK):
            pytest.skip("running as root: chmod does not stop writes")
        with pytest.raises(ValueError, match="not writable"):
            train.run(quick(), str(parent / "w"))
        assert not (parent / "w").exists()
    finally:
        parent.chmod(0o755)


def test_corrupt_config_json_in_workdir_is_a_clear_error(tmp_path):
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "config.json").write_text('{"dataset": {"na')
    before = snapshot(workdir)
    with pytest.raises(ValueError, match="corrupt or half-written"):
        train.run(quick(), str(workdir))
    assert snapshot(workdir) == before


def test_half_written_history_from_an_older_version_is_named(tmp_path):
    # Versions before the atomic HistoryCSV appended rows in place: a kill could cut the
    # last row short. Resuming must name the file, not train on a broken history.
    workdir = tmp_path / "w"
    workdir.mkdir()
    cfg = configs.complete(quick())
    (workdir / "config.json").write_text(json.dumps(cfg.to_dict()))
    (workdir / "history.csv").write_text("epoch,accuracy,loss\n1,0.5,1.2\n2,0.6")
    with pytest.raises(ValueError, match=r"history .*history.csv is corrupt or half-written "
                                         r"\(line 3"):
        train.run(cfg, str(workdir))
    assert (workdir / "history.csv").read_text().endswith("2,0.6")  # left as it was
    assert not (workdir / "summary.json").exists()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("finished") / "w"
    train.run(quick(), str(workdir))
    return workdir


def test_finished_run_is_never_overwritten_by_a_bad_or_other_run(finished):
    before = snapshot(finished)
    with pytest.raises(ValueError, match="finished run"):
        train.run(quick(**{"train.epochs": 2}), str(finished))
    with pytest.raises(ValueError, match="sgdd"):
        train.run(quick(**{"optimizer.name": "sgdd"}), str(finished), overwrite=True)
    assert snapshot(finished) == before


def test_disk_full_keeps_the_old_artifact_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    io.write_json(str(path), {"test_accuracy": 0.9})
    before = path.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io.os, "fsync", full)  # the write reaches the disk: no space left
    with pytest.raises(OSError) as e:
        io.write_json(str(path), {"test_accuracy": 0.1})
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    monkeypatch.setattr(io.os, "replace", full)
    with pytest.raises(OSError):
        io.write_csv(str(path), [{"a": 1}], ["a"])
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["summary.json"]


def test_disk_full_during_a_run_keeps_the_finished_history(tmp_path, monkeypatch):
    workdir = tmp_path / "w"
    cfg = quick(**{"train.epochs": 2})
    real = io.write_bytes

    def fill_after_history(path, payload):
        if os.path.basename(path) == "summary.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, payload)

    monkeypatch.setattr(io, "write_bytes", fill_after_history)
    with pytest.raises(OSError):
        train.run(cfg, str(workdir))
    monkeypatch.undo()
    leftovers = [n for n in os.listdir(workdir)
                 if (n.startswith(".") and n != ".lock") or n.endswith(".tmp")]
    assert leftovers == []
    assert len(io.read_csv(str(workdir / "history.csv"))) == 2
    assert not (workdir / "summary.json").exists()
    summary = train.run(cfg, str(workdir))  # rerun: resumes and finishes, nothing lost
    assert summary["epochs"] == 2


# -- the command lines: exit 2, one stderr line, no traceback, no workdir -----------------

def run_cli(module, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _assert_usage_error(proc, prog, needle):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{prog}: error:") and needle in lines[0], lines[0]


def test_cli_config_file_without_get_config(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("X = 1\n")
    workdir = tmp_path / "w"
    proc = run_cli("recipes.train", f"--config={path}", f"--workdir={workdir}")
    _assert_usage_error(proc, "recipes.train", "get_config")
    assert not workdir.exists()


def test_cli_workdir_is_a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("mine")
    proc = run_cli("recipes.train", "--config=digits_mlp:quick", f"--workdir={path}")
    _assert_usage_error(proc, "recipes.train", "is a file")
    assert path.read_text() == "mine"


def test_cli_babysit_unknown_step(tmp_path):
    workdir = tmp_path / "w"
    proc = run_cli("recipes.babysit", "--config=digits_mlp:quick", f"--workdir={workdir}",
                   "--steps=sanity,trian")
    _assert_usage_error(proc, "recipes.babysit", "trian")
    assert not workdir.exists()


@pytest.mark.parametrize("space, needle", [
    ("optimizer.learning_rate=log:1e-3", "log"),
    ("optimizer.learning_rate=log:1e-3:0.1,", "empty entry"),
])
def test_cli_search_malformed_space(tmp_path, space, needle):
    workdir = tmp_path / "s"
    proc = run_cli("tuning.search", "--config=digits_mlp:quick", f"--workdir={workdir}",
                   f"--space={space}", "--trials=2")
    _assert_usage_error(proc, "tuning.search", needle)
    assert not (workdir / "trials.csv").exists()


def test_malformed_space_strings_are_value_errors():
    from tuning import space

    for text in ["", "=", "lr", "optimizer.learning_rate=", "optimizer.learning_rate=log:0:1",
                 "optimizer.learning_rate=gauss:0:1", "model.hidden=uniform:1:2",
                 "optimizer.learning_rate=log:1e-3:1e-1,optimizer.learning_rate=log:1:2",
                 "train.epochs=int:5:1", "optimizer.learning_rate=uniform:nan:1",
                 "optimizer=choice:a|b", "optimizer.name=choice:"]:
        with pytest.raises(ValueError):
            space.parse(text)


def test_saved_json_helpers_do_not_hide_corruption(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(json.dumps({"a": 1}).encode()[:-2])
    with pytest.raises(ValueError, match="half-written"):
        io.read_json(str(path), what="summary")


# -- refused before the first byte, from the command lines (exit 2, one line, no workdir) ---

CLI_CASES = [
    ("recipes.train", ["--config.model.hidden=()"], "monitor.activations_every=1"),
    ("recipes.babysit", ["--config.model.hidden=()"], "monitor.activations_every=1"),
    ("tuning.search", ["--space=model.activation=choice:relu|relu6x", "--trials=2"],
     "search.space: model.activation=relu6x"),
    ("tuning.search", ["--space=model.dropout=uniform:0.1:1.5", "--trials=2"],
     "search.space: model.dropout=1.5"),
]


@pytest.mark.parametrize("module, args, needle", CLI_CASES,
                         ids=[f"{m}:{a[0]}" for m, a, _ in CLI_CASES])
def test_cli_refuses_before_writing(tmp_path, module, args, needle):
    workdir = tmp_path / "w"
    proc = run_cli(module, "--config=digits_mlp:quick", f"--workdir={workdir}", *args)
    _assert_usage_error(proc, module, needle)
    assert not workdir.exists()


def test_cli_workdir_on_a_pseudo_filesystem():
    from recipes import workdir

    if workdir.filesystem_type("/proc") != "proc":
        pytest.skip("/proc is not procfs here")
    proc = run_cli("recipes.train", "--config=digits_mlp:quick", "--workdir=/proc/babysit_w")
    _assert_usage_error(proc, "recipes.train", "pseudo filesystem")


@pytest.mark.parametrize("error, path", [
    (OSError(errno.ENOSPC, "No space left on device", "/r/w/history.csv"), "/r/w/history.csv"),
    (RuntimeError("Can't close file (file write failed: filename = '/r/w/a.h5', errno = 28, "
                  "error message = 'No space left on device')"), "/r/w/a.h5"),
    (Exception("/r/w/tensorboard/events.out; No space left on device"),
     "/r/w/tensorboard/events.out"),
])
def test_a_full_disk_from_any_library_is_named(error, path):
    assert io.is_disk_full(error)
    line = io.describe_os_error(io.as_os_error(error))
    assert line.startswith(f"{path}: No space left on device") and "run the same command" in line
    assert not io.is_disk_full(RuntimeError("shape mismatch"))
