"""The user's own network by name: models.register, model.arch="module:fn" / "file.py:fn",
model.kwargs, and the command line that reaches them."""

import json
import os
import subprocess
import sys
import uuid

import keras
import numpy as np
import pytest

import models
from recipes import cli, configs
from tests.fixtures import nets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETS = "tests.fixtures.nets"
FILE = "tests/fixtures/my_net_file.py"


@pytest.fixture
def name():
    """A test-only architecture name, unregistered afterwards."""
    key = f"test_registry_{uuid.uuid4().hex[:8]}"
    yield key
    models.unregister(key)


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # relative file paths in model.arch start at the current dir


def _units(model, layer="hidden"):
    return model.get_layer(layer).units


def _out(model, input_shape):
    """The output shape on a batch of 2 (a Sequential model has no ``.output``)."""
    return tuple(model(np.zeros((2, *input_shape), "float32")).shape)


# --- the registry ----------------------------------------------------------------------


def test_register_then_build_by_name_with_kwargs(name):
    seen = {}

    @models.register(name)
    def build(cfg, input_shape, num_classes, width=3):
        seen.update(cfg=cfg, input_shape=input_shape, num_classes=num_classes)
        return nets.tiny(cfg, input_shape, num_classes, width=width)

    assert name in models.names() and models.names()[:3] == ["mlp", "convnet", "resnet"]
    model = models.build({"arch": name, "kwargs": {"width": 5}}, (8, 8, 1), 10)
    assert _out(model, (8, 8, 1)) == (2, 10) and _units(model) == 5
    assert isinstance(seen["cfg"], dict) and seen["cfg"]["kwargs"] == {"width": 5}
    assert seen["input_shape"] == (8, 8, 1) and seen["num_classes"] == 10
    assert _units(models.build({"arch": name}, (6,), 3)) == 3  # the builder's default
    assert models.is_user_arch(name) and not models.is_user_arch("MLP")


def test_register_as_a_call_and_same_function_again_is_a_no_op(name):
    assert models.register(name, nets.tiny) is nets.tiny
    models.register(name, nets.tiny)  # a notebook cell run twice

    def make():
        def build(cfg, input_shape, num_classes):
            return nets.tiny(cfg, input_shape, num_classes, width=2)
        return build

    models.unregister(name)
    first, again = make(), make()  # one definition, re-run: same module and qualname
    models.register(name, first)
    models.register(name, again)
    assert _units(models.build({"arch": name}, (4,), 2)) == 2


def test_a_name_twice_with_another_function_is_refused(name):
    models.register(name, nets.tiny)
    with pytest.raises(ValueError, match=rf"{name}.*already registered.*nets.tiny"):
        models.register(name, nets.compiled)
    models.unregister(name)
    models.register(name, nets.compiled)  # free again after unregister


@pytest.mark.parametrize("bad", ["mlp", "convnet", "resnet", "MLP", " resnet "])
def test_builtin_names_are_reserved(bad):
    assert tuple(models.ARCHS) == models.registry.BUILTIN
    with pytest.raises(ValueError, match="built-in architecture"):
        models.register(bad, nets.tiny)


@pytest.mark.parametrize("bad, needle", [
    ("", "non-empty string"), (3, "non-empty string"), ("a:b", "':'"),
])
def test_malformed_names_are_refused(bad, needle):
    with pytest.raises(ValueError, match=needle):
        models.register(bad, nets.tiny)


def test_register_needs_a_callable(name):
    with pytest.raises(ValueError, match="needs a function"):
        models.register(name)(3)


def test_unknown_arch_lists_builtin_and_registered_names(name):
    models.register(name, nets.tiny)
    with pytest.raises(ValueError) as e:
        models.build({"arch": "vgg"}, (4,), 2)
    msg = str(e.value)
    assert "model.arch='vgg' is not an architecture" in msg
    for arch in ("mlp", "convnet", "resnet", name, "module:function", "file.py:function"):
        assert arch in msg, msg


# --- arch strings ------------------------------------------------------------------------


def test_module_function_builds_with_kwargs():
    model = models.build({"arch": f"{NETS}:tiny", "kwargs": {"width": 4}}, (8, 8, 1), 10)
    assert _units(model) == 4 and _out(model, (8, 8, 1)) == (2, 10)
    vectors = models.build({"arch": f"{NETS}:tiny"}, (64,), 10)  # vectors too
    assert _units(vectors) == 8 and _out(vectors, (64,)) == (2, 10)


@pytest.mark.parametrize("arch", [f"{FILE}:build", f"./{FILE}:build",
                                  f"{os.path.join(ROOT, FILE)}:build"])
def test_file_function_builds_relative_or_absolute(arch):
    model = models.build({"arch": arch, "kwargs": {"width": 6}}, (8, 8, 1), 10)
    assert _units(model) == 6 and model.name == "my_net_file"


def test_kwargs_come_from_the_config_tree():
    cfg = configs.complete({"model": {"arch": f"{NETS}:tiny", "kwargs": {"width": 7}}})
    resolved = models.resolve_config(cfg.model)
    assert type(resolved["kwargs"]) is dict and resolved["kwargs"] == {"width": 7}
    assert _units(models.build(cfg.model, (8, 8, 1), 10)) == 7


def test_a_compiled_model_stays_compiled():
    model = models.build({"arch": f"{NETS}:compiled"}, (8, 8, 1), 10)
    assert model.compiled and isinstance(model.optimizer, keras.optimizers.Adam)
    assert isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy)


def test_a_module_in_the_current_directory_is_found(tmp_path, monkeypatch):
    module = f"user_net_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "from tests.fixtures.nets import tiny\n\n"
        "def build(cfg, input_shape, num_classes, width=8):\n"
        "    return tiny(cfg, input_shape, num_classes, width=width + 1)\n")
    monkeypatch.chdir(tmp_path)
    path = list(sys.path)
    try:
        assert _units(models.build({"arch": f"{module}:build"}, (4,), 2)) == 9
        assert sys.path == path  # the current directory was searched, not kept
    finally:
        sys.modules.pop(module, None)


def _write(tmp_path, text):
    path = tmp_path / f"net_{uuid.uuid4().hex[:8]}.py"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("arch, kwargs, needles", [
    ("tests.fixtures.nope:tiny", {}, ["no module named 'tests.fixtures.nope'"]),
    ("no_such_package_xyz.mod:build", {}, ["no module named 'no_such_package_xyz'"]),
    (f"{NETS}:nope", {}, ["has no function 'nope'", "compiled, not_a_model, raises, tiny"]),
    (f"{NETS}:NOT_CALLABLE", {}, ["has no function 'NOT_CALLABLE'"]),
    ("tests/fixtures/nope.py:build", {}, ["file 'tests/fixtures/nope.py' does not exist"]),
    (f"{FILE}:nope", {}, ["has no function 'nope'", "build"]),
    ("tests/fixtures/nets.txt:tiny", {}, ["is not a .py file"]),
    (f"{NETS}:", {}, ["'package.module:function'"]),
    (f"{NETS}:not_a_model", {}, ["returned a str; a builder must return a keras.Model"]),
    (f"{NETS}:raises", {}, ["raised RuntimeError: boom in the builder"]),
    (f"{NETS}:tiny", {"depth": 3}, ["no keyword argument 'depth'", "model.kwargs.depth",
                                    "(cfg, input_shape, num_classes, width=8)"]),
    (f"{FILE}:build", {"widht": 3}, ["no keyword argument 'widht'", "width=8"]),
    (f"{NETS}:not_a_model", {"width": 3}, ["no keyword argument 'width'"]),
    ("mlp", {"width": 3}, ["model.kwargs is for a user's builder", "model.hidden"]),
    ("resnet", {"width": 3}, ["model.kwargs is for a user's builder", "model.depth"]),
])
def test_failures_are_one_line_naming_model_arch(arch, kwargs, needles):
    with pytest.raises(ValueError) as e:
        models.build({"arch": arch, "kwargs": kwargs}, (8, 8, 1), 3)
    msg = str(e.value)
    assert f"model.arch={arch!r}" in msg and "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, msg


@pytest.mark.parametrize("text, needle", [
    ("x = 1 / 0\n", "raised ZeroDivisionError at import: division by zero"),
    ("def build(:\n", "SyntaxError at line 1"),
    ("import no_such_module_xyz\n", "ModuleNotFoundError at import"),
])
def test_a_file_that_fails_at_import(tmp_path, text, needle):
    arch = f"{_write(tmp_path, text)}:build"
    with pytest.raises(ValueError) as e:
        models.build({"arch": arch}, (4,), 2)
    assert f"model.arch={arch!r}" in str(e.value) and needle in str(e.value), str(e.value)


def test_a_module_that_fails_at_import(tmp_path, monkeypatch):
    module = f"broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text("import no_such_module_xyz\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as e:
        models.build({"arch": f"{module}:build"}, (4,), 2)
    msg = str(e.value)
    assert f"importing {module} raised ModuleNotFoundError" in msg, msg
    assert "no_such_module_xyz" in msg


def test_a_file_is_loaded_again_when_it_changes(tmp_path):
    path = _write(tmp_path, "from tests.fixtures.nets import tiny as build\n")
    assert _units(models.build({"arch": f"{path}:build"}, (4,), 2)) == 8
    with open(path, "a") as f:
        f.write("def other(cfg, input_shape, num_classes):\n"
                "    return build(cfg, input_shape, num_classes, width=2)\n")
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 10**9))
    assert _units(models.build({"arch": f"{path}:other"}, (4,), 2)) == 2


@pytest.mark.parametrize("kwargs, needle", [
    ([1, 2], "model.kwargs must be a dict"), ({"a-b": 1}, "Python identifiers"),
])
def test_malformed_kwargs(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        models.build({"arch": f"{NETS}:tiny", "kwargs": kwargs}, (4,), 2)


# --- the command line --------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [
    ("32", 32), ("0.5", 0.5), ("1e-3", 1e-3), ("true", True), ("False", False),
    ("relu", "relu"), ("'relu'", "relu"), ("(3, 3)", (3, 3)), ("[3, 3]", (3, 3)),
    ("None", None), ("a b", "a b"), ("", ""),
])
def test_literal_values(text, value):
    assert cli.literal_value(text) == value and type(cli.literal_value(text)) is type(value)


def test_split_model_kwargs_leaves_the_rest():
    argv = ["prog", "--config=x.py", "--config.model.kwargs.width=4", "--config.train.epochs=1",
            "-config.model.kwargs.act=relu", "--config.model.kwargs.width=5"]
    rest, kwargs = cli.split_model_kwargs(argv)
    assert rest == ["prog", "--config=x.py", "--config.train.epochs=1"]
    assert kwargs == {"width": 5, "act": "relu"}
    for bad, needle in (("--config.model.kwargs.width", "give a value"),
                        ("--noconfig.model.kwargs.flag", "give a value"),
                        ("--config.model.kwargs.a.b=1", "keyword argument name")):
        with pytest.raises(ValueError, match=needle):
            cli.split_model_kwargs(["prog", bad])


def test_apply_model_kwargs_on_a_locked_config():
    cfg = configs.complete({"model": {"kwargs": {"width": 4}}})
    cfg.lock()
    cli.apply_model_kwargs(cfg, {"width": 8, "act": "relu"})
    assert cfg.model.kwargs.to_dict() == {"width": 8, "act": "relu"} and cfg.is_locked
    with pytest.raises(ValueError, match="model.kwargs.width of type int"):
        cli.apply_model_kwargs(cfg, {"width": "wide"})
    with pytest.raises(ValueError, match="--config="):
        cli.apply_model_kwargs(None, {"width": 8})


def run_cli(*args, module="recipes.train"):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


QUICK = ("--config=digits_mlp", "--config.train.epochs=1", "--config.dataset.limit=200",
         "--config.monitor.activations_every=0", "--verbose=0")


def test_cli_trains_a_user_model_with_kwargs(tmp_path):
    workdir = tmp_path / "run"
    proc = run_cli(*QUICK, f"--config.model.arch={NETS}:tiny", "--config.model.kwargs.width=4",
                   f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"]["arch"] == f"{NETS}:tiny"
    assert config["model"]["kwargs"] == {"width": 4}
    model = keras.saving.load_model(workdir / "model.keras")
    assert model.get_layer("hidden").units == 4
    assert json.loads((workdir / "summary.json").read_text())["epochs"] == 1


FAILURES = [
    ([f"--config.model.arch={NETS}:nope"], "has no function 'nope'"),
    (["--config.model.arch=tests.fixtures.nope:tiny"], "no module named"),
    (["--config.model.arch=tests/fixtures/nope.py:build"], "does not exist"),
    ([f"--config.model.arch={NETS}:not_a_model"], "a builder must return a keras.Model"),
    ([f"--config.model.arch={NETS}:tiny", "--config.model.kwargs.depth=2"],
     "no keyword argument 'depth'"),
    (["--config.model.kwargs.width=2"], "model.kwargs is for a user's builder"),
    (["--config.model.kwargs.width"], "give a value"),
]


@pytest.mark.parametrize("module, args, needle", [
    *(("recipes.train", args, needle) for args, needle in FAILURES),
    *((module, *FAILURES[i]) for module in ("recipes.babysit", "tuning.search")
      for i in (0, 3)),
])
def test_cli_failures_exit_2_with_one_line(tmp_path, module, args, needle):
    workdir = tmp_path / "run"
    # the default space searches model.l2, which a user model does not take
    space = ["--space=optimizer.learning_rate=log:1e-4:1e-2"] if module == "tuning.search" else []
    proc = run_cli(*QUICK, *args, *space, f"--workdir={workdir}", module=module)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "error:" in lines[0] and needle in lines[0], lines[0]
    assert not workdir.exists()


def test_cli_reaches_a_name_registered_by_the_config_file(tmp_path):
    config = tmp_path / "my_config.py"
    config.write_text(
        "import models\n"
        "from recipes import configs\n"
        "from tests.fixtures import nets\n\n"
        "models.register('test_registry_cli_tiny', nets.tiny)\n\n"
        "def get_config():\n"
        "    c = configs.get('digits_mlp')\n"
        "    c.model.arch = 'test_registry_cli_tiny'\n"
        "    return c\n")
    proc = run_cli(f"--config={config}", *QUICK[1:], "--config.model.kwargs.depth=2",
                   f"--workdir={tmp_path / 'run'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "model.arch='test_registry_cli_tiny'" in proc.stderr
    assert "no keyword argument 'depth'" in proc.stderr  # found by name, then refused
