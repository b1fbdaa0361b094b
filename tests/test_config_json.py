"""``--config=RUN/config.json``: a run's (or a search's) saved tree as the config.

Loaded into the shape of a built-in config (tuples, ints, floats as they were), validated
like any config, overridable by ``--config.a.b=v``; a file that names code to import is
refused unless confirmed, and nothing is imported before; a rerun reproduces the history.
"""

import contextlib
import csv
import io
import json
import os
import subprocess
import sys

import pytest

from models import registry
from recipes import cli, configs
from tuning import results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROG = "jsoncfg"

# A user's model file that leaves a marker behind when it is imported.
EVIL = '''import pathlib
pathlib.Path({marker!r}).write_text("imported")

import keras


def build(cfg, input_shape, num_classes, **kwargs):
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))
'''


def run_cli(*args, module="recipes.train", cwd=ROOT):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _one_error_line(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _saved(tmp_path, cfg, name="config.json", **changes):
    """``cfg`` written as a run writes ``config.json`` (with its origins), ``changes`` applied
    as ``{"branch.field": value}`` to the JSON tree."""
    tree = json.loads(json.dumps({**cfg.to_dict(),
                                  configs.ORIGINS: {"model": f"model.arch={cfg.model.arch}"}},
                                 default=list))
    for path, value in changes.items():
        branch, field = path.split(".")
        tree[branch][field] = value
    path = tmp_path / name
    path.write_text(json.dumps(tree, indent=2))
    return str(path)


def _evil(tmp_path):
    marker = tmp_path / "MARKER"
    (tmp_path / "evil.py").write_text(EVIL.format(marker=str(marker)))
    return f"{tmp_path / 'evil.py'}:build", marker


@pytest.mark.parametrize("name", [*configs.names(), "digits_mlp:quick"])
def test_json_round_trip_is_exact(tmp_path, name):
    cfg = configs.complete(configs.get(name))
    with cfg.unlocked():  # a user builder's kwargs: a tuple, a nested dict, None
        cfg.model.kwargs.kernel = (3, 3)
        cfg.model.kwargs.more = {"pair": (1, 2.0), "none": None}
    back = configs.complete(configs.get(_saved(tmp_path, cfg)))
    assert repr(back.to_dict()) == repr(cfg.to_dict())  # tuples stay tuples, ints ints


def test_best_config_json_of_a_search_loads(tmp_path):
    cfg = configs.complete(configs.get("fashion_fast:quick"))
    json_path, _ = results.write_best_config(str(tmp_path), cfg, {"values": {}})
    assert repr(configs.complete(configs.get(json_path)).to_dict()) == repr(cfg.to_dict())


@pytest.mark.parametrize("text, needle", [
    ("{", "is not valid JSON"),
    ("[1, 2]", "holds a JSON list"),
    ('{"train": {"epochz": 3}}', "unknown field 'train.epochz'"),
    ('{"train": {"epochs": "many"}}', "train.epochs must be of type int"),
])
def test_bad_json_config_is_one_value_error(tmp_path, text, needle):
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        configs.complete(configs.get(str(path)))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_python_api_refuses_code_unless_trusted(tmp_path):
    arch, marker = _evil(tmp_path)
    path = _saved(tmp_path, configs.get("digits_mlp:quick"), **{"model.arch": arch})
    with pytest.raises(ValueError, match="trust=True"):
        configs.get(path)
    assert configs.get(path, trust=True).model.arch == arch
    assert not marker.exists()  # loading a config never imports its model


def test_cli_unknown_field_is_one_line_and_exit_2(tmp_path):
    path = _saved(tmp_path, configs.get("digits_mlp:quick"), **{"train.epochz": 3})
    proc = run_cli(f"--config={path}", f"--workdir={tmp_path / 'w'}")
    _one_error_line(proc, "recipes.train: error:", "train.epochz")
    assert not (tmp_path / "w").exists()


def test_cli_refuses_a_json_that_imports_code_and_imports_nothing(tmp_path):
    arch, marker = _evil(tmp_path)
    path = _saved(tmp_path, configs.get("digits_mlp:quick"), **{"model.arch": arch})
    proc = run_cli(f"--config={path}", f"--workdir={tmp_path / 'w'}", cwd=tmp_path)
    _one_error_line(proc, "model.arch=", "evil.py", "--trust_config",
                    f"--config.model.arch={arch}")
    assert not marker.exists(), "evil.py was imported without confirmation"
    assert not (tmp_path / "w").exists()


# -- in process: what the command line does after parsing, without training -------------

def _main(*args):
    """``cli.main_for`` on ``args``; the job imports ``model.arch`` as a run would.

    Returns:
        (exit code, stderr, the config the job got or None).
    """
    seen, err, code = {}, io.StringIO(), 0

    def job(cfg, flags):
        seen["config"] = cfg
        registry.resolve(cfg.model.arch)  # what prepare() does first: import the builder

    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            cli.main_for(job, [PROG, *args], prog=PROG, require_workdir=False)
        except SystemExit as e:
            code = e.code or 0
    return code, err.getvalue(), seen.get("config")


@pytest.mark.parametrize("confirm", ["--trust_config", "--config.model.arch={arch}", None])
def test_confirmation_lets_the_arch_be_imported(_fresh_flags, tmp_path, confirm):
    arch, marker = _evil(tmp_path)
    path = _saved(tmp_path, configs.get("digits_mlp:quick"), **{"model.arch": arch})
    args = [f"--config={path}", "--config.train.epochs=1"]
    code, err, cfg = _main(*args, *([confirm.format(arch=arch)] if confirm else []))
    if confirm is None:
        assert code == 2 and "--trust_config" in err and cfg is None
        assert not marker.exists()
    else:
        assert code == 0, err
        assert cfg.model.arch == arch and cfg.train.epochs == 1
        assert marker.exists()


def test_overrides_apply_to_a_json_config(_fresh_flags, tmp_path):
    cfg = configs.complete(configs.get("fashion_fast:quick"))
    path = _saved(tmp_path, cfg)
    code, err, got = _main(f"--config={path}", "--config.optimizer.learning_rate=0.01",
                           "--config.model.hidden=(8, 4)")
    assert code == 0, err
    assert got.optimizer.learning_rate == 0.01 and got.model.hidden == (8, 4)
    with cfg.unlocked():
        cfg.optimizer.learning_rate, cfg.model.hidden = 0.01, (8, 4)
        cfg.train.verbose = got.train.verbose  # main_for may set it (not a terminal)
    assert repr(got.to_dict()) == repr(cfg.to_dict())


def test_a_run_whose_network_came_from_python_is_refused(_fresh_flags, tmp_path):
    path = _saved(tmp_path, configs.get("digits_mlp:quick"))
    tree = json.loads(open(path).read())
    tree[configs.ORIGINS]["model"] = ("keras.Model 'mine' given to the run; every run gets a "
                                      "copy with fresh weights (keras.models.clone_model)")
    open(path, "w").write(json.dumps(tree))
    code, err, cfg = _main(f"--config={path}")
    assert code == 2 and cfg is None
    assert "given from Python" in err and "--config.model.arch=" in err


# -- reproduction --------------------------------------------------------------------------

def _rows(path):
    """history.csv's rows without timing columns (none today; a wall clock never repeats)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in row.items() if "time" not in k and "second" not in k}
            for row in rows]


def test_rerun_from_config_json_reproduces_the_history_bit_for_bit(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    proc = run_cli("--config=digits_mlp:quick", "--config.train.epochs=2", "--verbose=0",
                   "--config.monitor.tensorboard=false", f"--workdir={first}")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli(f"--config={first / 'config.json'}", "--verbose=0", f"--workdir={second}")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(first / "history.csv")
    assert len(rows) == 2
    assert _rows(second / "history.csv") == rows  # the strings as written: every bit
    saved = [json.loads((d / "config.json").read_text()) for d in (first, second)]
    assert saved[0] == saved[1]
