"""Every config-file failure and every bad config value is one clear line.

Python API: ``recipes.configs.get`` / ``complete``, ``models.build``, ``recipes.optimizers.get``
and ``recipes.ensemble.load_snapshots`` raise ``ValueError`` naming the file or the full
dotted field (``train.seed``, ``model.l2``) and the fix. CLI: ``python -m recipes.train |
recipes.babysit | tuning.search`` exit 2 with exactly one ``PROG: error: ...`` stderr line.

The property test at the end (80 derandomized hypothesis examples, in-process) throws
``--config.BRANCH.FIELD=VALUE`` overrides drawn from the real config tree plus misspelled
paths, with odd values (unicode, empty, huge or non-finite numbers, tuples, literals), at
``recipes.cli.main_for`` and a job that completes the config and builds the optimizer,
schedule, loss and model: the outcome is success or one usage line with exit status 2.
"""

import contextlib
import io
import json
import os
import subprocess
import sys
import zipfile

import keras
import ml_collections
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import models
from recipes import cli, configs, ensemble, losses, optimizers, schedules, train
from recipes.configs import base

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# -- user config files that fail: (file text, needles in the one-line message) ------------

BAD_FILES = {
    "import_zero_division": ("1 / 0\ndef get_config():\n    return {}\n",
                             ["raised ZeroDivisionError at import: division by zero"]),
    "import_missing_module": ("import no_such_module_xyz\n",
                              ["raised ModuleNotFoundError at import", "no_such_module_xyz"]),
    "get_config_runtime_error": ("def get_config():\n    raise RuntimeError('boom')\n",
                                 ["get_config() in", "raised RuntimeError: boom"]),
    "get_config_key_error": ("def get_config():\n    return {}['missing']\n",
                             ["get_config() in", "raised KeyError: 'missing'"]),
    "get_config_returns_none": ("def get_config():\n    x = 1\n",
                                ["returned None; return a ConfigDict", "forget `return`"]),
    "get_config_returns_list": ("def get_config():\n    return [1, 2]\n",
                                ["returned type list", "ConfigDict or a dict"]),
    "get_config_returns_int": ("def get_config():\n    return 3\n", ["returned type int"]),
    "syntax_error": ("def get_config(:\n", ["could not load", "SyntaxError at line 1"]),
}


def _write(tmp_path, text, name="mine.py"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_config_file_is_one_line_value_error(tmp_path, case):
    text, needles = BAD_FILES[case]
    path = _write(tmp_path, text)
    with pytest.raises(ValueError) as info:
        configs.get(path)
    message = str(info.value)
    assert "\n" not in message
    assert path in message
    for needle in needles:
        assert needle in message, message


def test_get_config_may_return_a_plain_dict(tmp_path):
    path = _write(tmp_path, "def get_config():\n"
                            "    return {'train': {'epochs': 2}, 'model': {'hidden': [8, 4]}}\n")
    cfg = configs.get(path)
    assert isinstance(cfg, ml_collections.ConfigDict)
    assert isinstance(cfg.train, ml_collections.ConfigDict) and cfg.train.epochs == 2
    assert cfg.model.hidden == (8, 4)  # lists become (CLI-overridable) tuples
    full = configs.complete(cfg)
    assert full.train.epochs == 2 and full.train.batch_size == base.get_config().train.batch_size


@pytest.mark.parametrize("name, needle", [
    ("nope", "unknown config 'nope'"),
    (3, "got int"),
    (None, "got NoneType"),
])
def test_get_unknown_name_or_non_string_lists_builtins(name, needle):
    with pytest.raises(ValueError, match="digits_mlp") as info:
        configs.get(name)
    assert needle in str(info.value)


@pytest.mark.parametrize("config, needle", [
    ("digits_mlp", "recipes.configs.get('digits_mlp')"),
    ([1, 2], "got list"),
    (3, "got int"),
    (("a", "b"), "got tuple"),
])
def test_complete_rejects_non_mappings(config, needle):
    with pytest.raises(ValueError, match="must be a ConfigDict, a dict or None") as info:
        configs.complete(config)
    assert needle in str(info.value)


def test_complete_rejects_non_string_keys():
    with pytest.raises(ValueError, match="unknown field '1'"):
        configs.complete({1: 2})


def test_train_run_with_a_name_instead_of_a_config(tmp_path):
    workdir = tmp_path / "w"
    with pytest.raises(ValueError, match=r"recipes\.configs\.get\('digits_mlp'\)"):
        train.run("digits_mlp", str(workdir))
    assert not workdir.exists()


@pytest.mark.parametrize("branch, seed, needle", [
    ("train", -1, "train.seed must be an integer in [0, 2**32 - 1], got -1"),
    ("dataset", 2**32, "dataset.seed must be an integer in [0, 2**32 - 1]"),
    ("search", True, "search.seed must be an integer in [0, 2**32 - 1], got True"),
    ("search", 1.5, "search.seed must be of type int, got 1.5"),
    ("dataset", "0", "dataset.seed must be of type int, got '0'"),
])
def test_seeds_name_their_field_and_range(branch, seed, needle):
    with pytest.raises(ValueError) as info:
        configs.complete({branch: {"seed": seed}})
    assert needle in str(info.value), str(info.value)


# -- model and optimizer fields name their full dotted path and range ----------------------

@pytest.mark.parametrize("cfg, needle", [
    ({"l2": -1.0}, "model.l2 must be a number >= 0"),
    ({"l1": float("nan")}, "model.l1 must be a number >= 0"),
    ({"dropout": 1.5}, "model.dropout must be a number in [0, 1)"),
    ({"dropout": "half"}, "model.dropout must be a number in [0, 1)"),
    ({"max_norm": -1.0}, "model.max_norm must be a number >= 0"),
    ({"init_scale": 0.0}, "model.init_scale must be a number > 0"),
    ({"head_init_scale": "x"}, "model.head_init_scale must be a number > 0"),
    ({"bias_init": float("inf")}, "model.bias_init must be a finite number"),
    ({"norm": "group", "groups": 0}, "model.groups must be an integer >= 1"),
    ({"norm": "group", "groups": 3, "hidden": (8,)}, "model.groups=3"),
    ({"hidden": ("abc",)}, "model.hidden must be a tuple of integers >= 1"),
    ({"hidden": 5}, "model.hidden must be a tuple of integers >= 1"),
    ({"arch": "convnet", "widths": ()}, "model.widths must be a non-empty tuple"),
    ({"arch": "convnet", "blocks_per_stage": 0}, "model.blocks_per_stage must be an integer"),
    ({"arch": "convnet", "head": "mean"}, "model.head must be one of"),
    ({"arch": "resnet", "depth": 9}, "model.depth (resnet) must be 6n+2"),
    ({"arch": "resnet", "width": "wide"}, "model.width must be an integer >= 1"),
    ({"arch": "resnet", "variant": "z"}, "model.variant (resnet) must be one of"),
    ({"arch": "vgg"}, "model.arch='vgg' is not an architecture"),
    ({"activation": "relu6x"}, "model.activation: Unknown activation"),
    ({"activation": "leaky_relu", "activation_kw": {"alpha": "x"}}, "model.activation_kw:"),
    ({"activation_kw": 3}, "model.activation_kw must be a dict"),
    ({"init": "glorious"}, "model.init: Unknown initializer"),
    ({"norm": "batchy"}, "model.norm: Unknown norm"),
    ({"norm_position": "middle"}, "model.norm_position must be one of"),
    ({"widht": 3}, "unknown model field(s) ['widht']"),
    ("mlp", "must be the model branch"),
])
def test_model_field_errors_name_the_field(cfg, needle):
    with pytest.raises(ValueError) as info:
        models.build(cfg, (8, 8, 1), 3)
    assert needle in str(info.value), str(info.value)


@pytest.mark.parametrize("cfg, needle", [
    ({"epsilon": "tiny"}, "optimizer.epsilon must be > 0"),
    ({"weight_decay": float("nan")}, "optimizer.weight_decay must be >= 0"),
    ({"clipnorm": "x"}, "optimizer.clipnorm must be >= 0"),
    ({"learning_rate": float("inf")}, "optimizer.learning_rate must be > 0"),
    ({"momentum": "0.9"}, "optimizer.momentum must be in [0, 1)"),
    ({"name": ["adam"]}, "is not an optimizer"),
])
def test_optimizer_field_errors_name_the_field(cfg, needle):
    with pytest.raises(ValueError) as info:
        optimizers.get(cfg)
    assert needle in str(info.value), str(info.value)


# -- recipes.ensemble.load_snapshots: ValueError for every bad directory -----------------

def _snapshot_dir(tmp_path, what):
    if what == "file":
        return _write(tmp_path, "x = 1\n", "not_a_dir.py")
    d = tmp_path / what
    d.mkdir()
    if what == "junk":
        (d / "snapshot_0.keras").write_text("junk")
    elif what == "zip_without_config":
        with zipfile.ZipFile(d / "snapshot_0.keras", "w") as z:
            z.writestr("foo.txt", "x")
    elif what == "dir_named_keras":
        (d / "snapshot_0.keras").mkdir()
    return str(d)


@pytest.mark.parametrize("directory, needle", [
    (None, "directory must be the path"),
    (3, "directory must be the path"),
    (["a"], "directory must be the path"),
    ("file", "is a file"),
    ("junk", "is not a readable .keras model"),
    ("zip_without_config", "is not a readable .keras model"),
    ("dir_named_keras", "no snapshot_{k}.keras files"),
])
def test_load_snapshots_bad_input_is_value_error(tmp_path, directory, needle):
    if isinstance(directory, str):
        directory = _snapshot_dir(tmp_path, directory)
    with pytest.raises(ValueError) as info:
        ensemble.load_snapshots(directory)
    assert needle in str(info.value), str(info.value)


# -- the command lines: one stderr line, exit status 2 ------------------------------------

def run_cli(module, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _assert_usage_error(proc, prog, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{prog}: error:"), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("case, module", [
    ("import_zero_division", "recipes.train"),
    ("import_missing_module", "tuning.search"),
    ("get_config_runtime_error", "recipes.babysit"),
    ("get_config_key_error", "recipes.train"),
    ("get_config_returns_none", "recipes.train"),
    ("get_config_returns_list", "recipes.train"),
])
def test_cli_bad_config_file(tmp_path, case, module):
    text, needles = BAD_FILES[case]
    path = _write(tmp_path, text)
    workdir = tmp_path / "w"
    proc = run_cli(module, f"--config={path}", f"--workdir={workdir}")
    _assert_usage_error(proc, module, path, *needles)
    assert not workdir.exists()


@pytest.mark.parametrize("args, needles", [
    (["--config=digits_mlp:quick", "--config.train.epoch=2"],
     ["--config.train.epoch: unknown field train.epoch; did you mean train.epochs?"]),
    (["--config.train.epoch=2"],  # the default config
     ["--config.train.epoch: unknown field train.epoch; did you mean train.epochs?"]),
    (["--config.train.zzzzzz=2"], ["unknown field train.zzzzzz; valid fields of train:",
                                   "batch_size", "epochs"]),
    (["--config=digits_mlp:quick", "--config=digits_mlp"],
     ["--config was given 2 times", "give it once"]),
    (["--config=digits_mlp:quick", "--config.train.seed=-1"],
     ["train.seed must be an integer in [0, 2**32 - 1], got -1"]),
    (["--config=digits_mlp:quick", "--config.model.l2=-1"],
     ["model.l2 must be a number >= 0 (0 = off), got -1.0"]),
])
def test_cli_bad_override_is_one_line(tmp_path, args, needles):
    workdir = tmp_path / "w"
    proc = run_cli("recipes.train", f"--workdir={workdir}", *args)
    _assert_usage_error(proc, "recipes.train", *needles)
    assert not workdir.exists()


def test_cli_dict_config_takes_overrides(tmp_path):
    path = _write(tmp_path, "def get_config():\n"
                            "    return {'dataset': {'limit': 200}, 'train': {'epochs': 3},\n"
                            "            'monitor': {'tensorboard': False}}\n")
    workdir = tmp_path / "w"
    proc = run_cli("recipes.train", f"--config={path}", f"--workdir={workdir}", "--verbose=0",
                   "--config.train.epochs=1", "--config.model.hidden=(8,)")
    assert proc.returncode == 0, proc.stderr
    saved = configs.complete(json.loads((workdir / "config.json").read_text()))
    assert saved.train.epochs == 1 and saved.model.hidden == (8,) and saved.dataset.limit == 200


# -- property: any override is success or one usage line (in-process, no subprocess) -----

PROG = "prop"


def _leaves(cfg, prefix=""):
    """(dotted path, default) of every leaf of the config tree."""
    for key in cfg.keys():
        value = cfg[key]
        if isinstance(value, ml_collections.ConfigDict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


DEFAULTS = dict(_leaves(base.get_config()))  # activation_kw's placeholders default to None
FIELDS = sorted(DEFAULTS)
MISSPELLED = ["train.epoch", "trian.epochs", "optimizer.lr", "model.hiden", "train",
              "train.epochs.x", "model.activation_kw.beta", "", "train.", "é.ü"]
ODD_VALUES = ["", " ", "None", "none", "true", "False", "()", "(,)", "(1,", "[1, 2]", "{}",
              "nan", "-nan", "inf", "-inf", "1e400", "-0", "0x10", " 3 ", "'a'", "(1, 'a')",
              "(0,)", "(-3, 2)", "--", "=", "é", "日本", "\u200b", "1_000", "3.0", "-1",
              "4294967296", "99999999999999999999", "a=b", "$HOME", "relu", "adam", "(8, 4)",
              "a\x1db", "\x07", "\t", "1\n2"]
NAMES = ["relu", "leaky_relu", "maxout", "tanh", "he", "small", "batch", "group", "weight",
         "mlp", "convnet", "resnet", "sgd", "adamw", "cosine", "one_cycle", "plateau", "svm",
         "before_activation", "flatten", "b", "auto", "none", "horizontal", "center"]
odd = st.one_of(
    st.sampled_from(ODD_VALUES),
    st.integers(-10**20, 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.lists(st.integers(-3, 64), max_size=3).map(lambda xs: "(" + ", ".join(map(str, xs))
                                                  + ("," if len(xs) == 1 else "") + ")"),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            max_size=8),
)


def _typed(default):
    """Values of the field's own type, in and out of range (they reach the job's checks)."""
    if isinstance(default, bool):
        return st.sampled_from(["true", "false", "1", "0", "yes", "maybe"])
    if isinstance(default, int):
        return st.one_of(st.integers(-3, 70), st.integers(-10**12, 10**12)).map(str)
    if isinstance(default, float) or default is None:
        return st.one_of(st.floats(-2.0, 2.0), st.floats(allow_nan=True, allow_infinity=True),
                         st.sampled_from([0.0, -1e-3, 1e308, 1.0])).map(repr)
    if isinstance(default, tuple):
        return st.lists(st.integers(-2, 40), max_size=3).map(
            lambda xs: "(" + ", ".join(map(str, xs)) + ("," if len(xs) == 1 else "") + ")")
    return st.sampled_from(NAMES + [str(default)])


override = st.one_of(
    st.tuples(st.sampled_from(FIELDS + MISSPELLED), odd),
    st.sampled_from(FIELDS).flatmap(lambda f: st.tuples(st.just(f), _typed(DEFAULTS[f]))),
)
overrides = st.lists(override, min_size=1, max_size=3)


_SEEN = {}


def _job(cfg, flags):
    """What recipes.train.prepare checks before it needs data."""
    _SEEN["config"] = cfg
    c = configs.complete(cfg)
    keras.utils.set_random_seed(c.train.seed)
    optimizers.get(c.optimizer)
    schedules.get(c.schedule, learning_rate=c.optimizer.learning_rate, steps_per_epoch=4,
                  epochs=c.train.epochs)
    losses.get(c.loss, 3)
    m = models.resolve_config(c.model)
    # A layer of 10**9 units is a resource problem, not a config error: build small ones.
    sizes = [v for k in ("hidden", "widths", "depth", "width", "blocks_per_stage")
             for v in (m[k] if isinstance(m[k], tuple) else (m[k],))]
    if all(isinstance(v, int) and v <= 64 for v in sizes):
        models.build(c.model, (8, 8, 1), 3)
    else:
        models.blocks.Knobs.from_config(m)


def _main_in_process(argv):
    """Runs ``cli.main_for`` on ``argv``; returns (exit code, stderr, config the job saw)."""
    err, code = io.StringIO(), 0
    _SEEN.clear()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            cli.main_for(_job, argv, prog=PROG, require_workdir=False)
        except SystemExit as e:
            code = e.code or 0
    return code, err.getvalue(), _SEEN.get("config")


def test_main_for_in_process_applies_each_calls_overrides(_fresh_flags):
    """The property below relies on this: every call starts from fresh flags and config."""
    code, err, _ = _main_in_process([PROG, "--config=digits_mlp:quick",
                                     "--config.train.epochs=many"])  # fails mid-parse
    assert code == 2 and "--config.train.epochs=many" in err
    code, err, cfg = _main_in_process([PROG, "--config.model.norm=batch"])
    assert code == 0, err
    assert cfg.model.norm == "batch" and cfg.train.epochs == 30  # digits_mlp, not :quick
    code, err, cfg = _main_in_process([PROG, "--config=digits_mlp:quick"])
    assert code == 0, err
    assert cfg.model.norm == "none" and cfg.train.epochs < 30


@settings(max_examples=80, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(with_config=st.booleans(), pairs=overrides)
def test_property_overrides_succeed_or_give_one_usage_line(_fresh_flags, with_config, pairs):
    argv = [PROG] + (["--config=digits_mlp:quick"] if with_config else [])
    argv += [f"--config.{path}={value}" for path, value in pairs]
    code, err, used_config = _main_in_process(argv)
    lines = [line for line in err.splitlines() if line.strip()]
    if code == 0:
        assert not lines, (argv, err)
        for path in {p for p, _ in pairs} - {"train.verbose"}:  # main_for may set verbose
            given, used = cli.FLAGS[f"config.{path}"].value, used_config
            for part in path.split("."):
                used = used[part]
            given = tuple(given) if isinstance(given, list) else given
            assert repr(used) == repr(given), (argv, path, used)  # this run's overrides
    else:
        assert code == 2, (argv, code, err)
        assert len(lines) == 1 and lines[0].startswith(f"{PROG}: error: "), (argv, lines)
        assert lines[0].isprintable(), lines[0]  # control characters come out escaped
