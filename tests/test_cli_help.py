"""``--help`` of the three commands, run as a user runs them: exit 0, what a user needs first.

Usage and an example, then ``--config`` (the built-in names), ``--workdir``, ``--overwrite``,
the command's own flags, then the most used ``--config.*`` fields with their values;
``--helpfull`` still lists every flag (absl's too).
"""

import os
import subprocess
import sys

import pytest

from recipes import cli, configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The command's own flags --help shows after --overwrite, and a field only its help shows.
OWN = {"recipes.train": ([], None),
       "recipes.babysit": (["--steps:"], "babysit.repair_rounds"),
       "tuning.search": (["--space:", "--stages:"], "search.space")}
FIELDS = ["dataset.name", "model.arch", "optimizer.name", "optimizer.learning_rate",
          "schedule.name", "train.epochs", "train.batch_size"]


def run_cli(module, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _position(text, needle):
    assert needle in text, f"{needle!r} missing from:\n{text}"
    return text.index(needle)


@pytest.mark.parametrize("module", sorted(OWN))
def test_help_exits_0_with_usage_flags_in_order_and_fields(module):
    proc = run_cli(module, "--help")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    lines = out.splitlines()
    assert lines[0].startswith(f"usage: python -m {module} --config="), lines[0]
    assert lines[1].startswith(f"example: python -m {module} --config=digits_mlp"), lines[1]
    own, field = OWN[module]
    order = ["\n  --config:", "\n  --workdir:", "\n  --[no]overwrite:",
             *[f"\n  {flag}" for flag in own], "\n  --config.optimizer.learning_rate="]
    positions = [_position(out, needle) for needle in order]
    assert positions == sorted(positions), order
    for name in configs.names():  # the built-in recipes are named, and the file types
        assert name in out[positions[0]:positions[1]], name
    assert ".py" in out and ".json" in out
    assert "(default: 'digits_mlp')" in out
    assert ROOT not in out and "digits_mlp.py" not in out  # no absolute path as the default
    defaults = configs.complete(configs.get("digits_mlp"))
    for path in FIELDS + ([field] if field else []):
        branch, name = path.split(".")
        value = defaults[branch][name]
        shown = value if isinstance(value, str) else repr(value)
        assert f"\n  --config.{path}={shown}\n" in out, path
    assert "--pdb" not in out and "absl.logging" not in out  # those are --helpfull's
    assert "Traceback" not in proc.stderr


def test_short_h_helps_whatever_else_the_command_line_holds():
    proc = run_cli("recipes.train", "--config=no_such_recipe", "--nonsense_flag=1", "-h")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m recipes.train ")
    assert "(here the values of --config=digits_mlp)" in proc.stdout  # the bad one skipped
    assert "Traceback" not in proc.stderr


def test_helpfull_still_lists_every_flag():
    proc = run_cli("recipes.babysit", "--helpfull")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("usage: python -m recipes.babysit ")
    for needle in ("--steps:", "--[no]trust_config:", "--config.babysit.repair_rounds=",
                   "absl.app:", "--[no]pdb:", "absl.logging:", "--log_dir:", "--flagfile:"):
        assert needle in out, needle
    assert len(out.splitlines()) > 100


@pytest.mark.parametrize("argv, asked", [
    (["p", "--help"], "short"), (["p", "-h"], "short"), (["p", "-?"], "short"),
    (["p", "--helpshort"], "short"), (["p", "--x=1", "--helpfull"], "full"),
    (["p", "--config=digits_mlp"], None), (["p", "--", "--help"], None),
    (["p", "--hidden=1"], None), (["p", "help"], None),
])
def test_help_request(argv, asked):
    assert cli.help_request(argv) == asked


def test_every_command_has_its_help():
    for prog in OWN:
        h = cli.HELP[prog]
        assert h.example.startswith(f"python -m {prog} --config=")
        assert set(cli.HELP_FIELDS) <= set(h.fields)


@pytest.mark.parametrize("module, flags", [
    ("recipes.predict", ["--workdir:", "--input:", "--out:"]),
    ("recipes.export", ["--workdir:", "--input_dtype:"]),
])
def test_predict_and_export_help_too(module, flags):
    proc = run_cli(module, "-h")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: python -m {module} --workdir=RUN")
    positions = [_position(proc.stdout, f"\n  {flag}") for flag in flags]
    assert positions == sorted(positions)
    assert "--config" not in proc.stdout and "RuntimeWarning" not in proc.stderr
