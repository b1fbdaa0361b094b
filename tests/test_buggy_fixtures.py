"""The buggy-program benchmark (tests/fixtures/buggy): well formed and runnable.

Fast checks only: names, causes, builds, shapes, and one epoch on 64 examples per program.
Whether each bug hurts is measured by ``python -m tests.fixtures.buggy.measure`` into
``measured.json`` (minutes of training), which these tests only read.
"""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from recipes.causes import CAUSES
from tests.fixtures.buggy import FIXES, MODULES, PROGRAMS, Program, accuracy, run_as_written

BUGGY = [n for n, p in PROGRAMS.items() if not p.control]
CONTROLS = [n for n, p in PROGRAMS.items() if p.control]
FAST = [n for n, p in PROGRAMS.items() if not p.slow]
MEASURED = os.path.join(os.path.dirname(__file__), "fixtures", "buggy", "measured.json")


def _data(name):
    """Each program's data, loaded once per test session (loaders are cache-free)."""
    if name not in _DATA:
        _DATA[name] = PROGRAMS[name].data()
    return _DATA[name]


_DATA: dict = {}


def test_counts():
    assert len(BUGGY) >= 14
    assert len(CONTROLS) >= 4
    assert len({PROGRAMS[n].description for n in BUGGY}) == len(BUGGY)
    assert len({PROGRAMS[n].cause for n in BUGGY}) >= 12


def test_causes_are_the_vocabulary():
    for p in [*PROGRAMS.values(), *FIXES.values()]:
        assert p.cause in CAUSES, (p.name, p.cause)


def test_registry_is_consistent():
    assert set(FIXES) == set(BUGGY) and len(MODULES) == len(BUGGY)
    for name, p in PROGRAMS.items():
        assert isinstance(p, Program) and p.name == name
        assert p.description and p.fix and "\n" not in p.description + p.fix
        assert p.fit.get("epochs", 0) >= 1 and p.fit.get("batch_size", 0) >= 1
        if p.control:
            assert not p.fixed
        elif p.fixed:  # a buggy program with a negative control: its twin is registered
            twin = PROGRAMS[p.fixed]
            assert twin.control and twin is FIXES[name] and twin.cause == p.cause
    for name, twin in FIXES.items():
        assert twin.control and twin.name == f"{name}_fixed"
        assert twin.slow == PROGRAMS[name].slow


@pytest.mark.parametrize("name", FAST)
def test_build_and_data(name):
    """build() returns a new compiled model; data() is deterministic and fits its shapes."""
    p = PROGRAMS[name]
    model, other = p.build(), p.build()
    assert isinstance(model, keras.Model) and model is not other
    assert model.compiled and model.optimizer is not None and model.loss is not None
    assert model.optimizer is not other.optimizer

    x_tr, y_tr, x_te, y_te = _data(name)
    for u, v in zip((x_tr, y_tr, x_te, y_te), p.data()):
        assert isinstance(u, np.ndarray) and np.array_equal(u, v)
    assert len(x_tr) == len(y_tr) >= 64 and len(x_te) == len(y_te) > 0
    assert np.isfinite(x_tr).all() and np.isfinite(x_te).all()
    assert tuple(model.input_shape[1:]) == x_tr.shape[1:] == x_te.shape[1:]
    units = model.output_shape[-1]
    classes = len(np.unique(y_tr if y_tr.ndim == 1 else y_tr.argmax(-1)))
    if y_tr.ndim == 2:
        assert y_tr.shape[-1] == units
    elif p.cause != "output_loss_mismatch" or p.control:
        assert units == (1 if classes == 2 else classes)  # only the mismatches disagree


@pytest.mark.parametrize("name", FAST)
def test_fits_one_epoch_on_64_examples(name):
    p = PROGRAMS[name]
    x_tr, y_tr, _, _ = _data(name)
    keras.utils.set_random_seed(0)
    model = p.build()
    history = model.fit(x_tr[:64], y_tr[:64], verbose=0, **{**p.fit, "epochs": 1})
    assert len(history.history["loss"]) == 1


def test_run_as_written_reports_accuracy_seconds_history():
    p = PROGRAMS["linear_stack_fixed"]
    small = dataclasses.replace(p, fit={**p.fit, "epochs": 1})
    out = run_as_written(small, seed=0)
    assert set(out) == {"test_accuracy", "seconds", "history"}
    assert 0.0 <= out["test_accuracy"] <= 1.0 and out["seconds"] > 0
    assert len(out["history"]["loss"]) == 1 and len(out["history"]["val_loss"]) == 1
    assert all(isinstance(v, float) for v in out["history"]["loss"])


def test_accuracy_reads_one_unit_several_units_and_one_hot():
    class Fixed:
        def __init__(self, out):
            self.out = np.asarray(out, np.float32)

        def predict(self, x, **kw):
            return self.out

    assert accuracy(Fixed([[0.9], [0.2], [0.7]]), None, np.array([1, 0, 0])) == pytest.approx(2 / 3)
    assert accuracy(Fixed([[1, 3], [5, -1]]), None, np.array([1, 0])) == 1.0
    assert accuracy(Fixed([[1, 3], [5, -1]]), None, np.eye(2)[[1, 1]]) == 0.5
    assert accuracy(Fixed([[np.nan, 1.0], [0.0, 1.0]]), None, np.array([1, 1])) == 0.5


def test_measured_table_covers_every_program_and_every_bug_hurts():
    with open(MEASURED) as f:
        table = json.load(f)
    assert table["command"].startswith("python -m tests.fixtures.buggy.measure")
    rows = {r["name"]: r for r in table["programs"]}
    assert set(rows) == set(BUGGY)
    for name, row in rows.items():
        assert row["cause"] == PROGRAMS[name].cause and row["ok"], name
        assert len(row["buggy_acc"]) >= 2
        if row["cause"] != "overfitting":
            assert min(f - b for b, f in zip(row["buggy_acc"], row["fixed_acc"])) >= 0.05
