"""Property tests (hypothesis): config merging, the ``--space`` syntax, schedule formulas."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recipes import configs, optimizers, schedules
from tuning import space

FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# -- recipes.configs.complete ----------------------------------------------------------------

positive = st.floats(1e-8, 10.0, allow_nan=False, allow_infinity=False)
OVERRIDES = {
    ("optimizer", "learning_rate"): positive,
    ("optimizer", "name"): st.sampled_from(optimizers.NAMES),
    ("model", "l2"): st.floats(0.0, 1.0),
    ("model", "hidden"): st.lists(st.integers(1, 512), min_size=1, max_size=3).map(tuple),
    ("train", "batch_size"): st.integers(1, 4096),
    ("train", "shuffle"): st.booleans(),
    ("dataset", "val_size"): st.floats(0.01, 0.99),
    ("schedule", "name"): st.sampled_from(schedules.NAMES),
    ("augment", "flip"): st.sampled_from(["none", "horizontal", "vertical"]),
}


@st.composite
def overrides(draw):
    keys = draw(st.lists(st.sampled_from(sorted(OVERRIDES)), unique=True, max_size=6))
    tree = {}
    for branch, field in keys:
        tree.setdefault(branch, {})[field] = draw(OVERRIDES[(branch, field)])
    return tree


@FAST
@given(overrides())
def test_complete_round_trips_valid_overrides(tree):
    cfg = configs.complete(tree)
    for branch, fields in tree.items():
        for field, value in fields.items():
            assert cfg[branch][field] == value
    assert configs.complete(cfg.to_dict()).to_dict() == cfg.to_dict()
    untouched = configs.complete(None)
    for branch in untouched:
        for field in untouched[branch]:
            if field not in tree.get(branch, {}):
                assert cfg[branch][field] == untouched[branch][field], (branch, field)


FIELD = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)


@FAST
@given(st.sampled_from(["optimizer", "model", "train", "dataset", "zzz"]), FIELD, st.integers())
def test_unknown_fields_are_always_value_errors(branch, field, value):
    known = configs.complete(None)
    if branch in known and field in known[branch]:
        return
    tree = {branch: {field: value}} if branch in known else {branch: value}
    with pytest.raises(ValueError, match="unknown field"):
        configs.complete(tree)


# -- tuning.space.parse / to_string ----------------------------------------------------------

FLOAT_PATHS = ["optimizer.learning_rate", "model.l2", "model.dropout", "optimizer.momentum"]
INT_PATHS = ["train.batch_size", "train.epochs"]
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def log_uniform(draw):
    lo = draw(st.floats(1e-12, 1e3))
    hi = draw(st.floats(lo, 1e6).filter(lambda h: h > lo))
    return space.LogUniform(lo, hi)


@st.composite
def uniform(draw):
    lo = draw(finite)
    return space.Uniform(lo, draw(finite.filter(lambda h: h > lo)))


@st.composite
def int_uniform(draw):
    log = draw(st.booleans())
    lo = draw(st.integers(1 if log else -1000, 1000))
    return space.IntUniform(lo, draw(st.integers(lo + 1, 5000)), log)


@st.composite
def spaces(draw):
    out = {}
    for path in draw(st.lists(st.sampled_from(FLOAT_PATHS), unique=True, max_size=3)):
        out[path] = draw(st.one_of(log_uniform(), uniform()))
    for path in draw(st.lists(st.sampled_from(INT_PATHS), unique=True, max_size=2)):
        out[path] = draw(int_uniform())
    if draw(st.booleans()):
        names = draw(st.lists(st.sampled_from(optimizers.NAMES), unique=True, min_size=1))
        out["optimizer.name"] = space.Choice(tuple(names))
    if draw(st.booleans()):
        hidden = draw(st.lists(st.lists(st.integers(1, 999), min_size=1, max_size=3)
                               .map(tuple), unique=True, min_size=1, max_size=3))
        out["model.hidden"] = space.Choice(tuple(hidden))
    if not out:
        out["optimizer.learning_rate"] = draw(log_uniform())
    return out


@FAST
@given(spaces())
def test_space_parse_inverts_to_string(s):
    assert space.parse(space.to_string(s)) == s


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="abcdeilmnoprstuvwxyz.=:,|-_0123456789e ", max_size=60))
def test_malformed_space_is_only_ever_a_value_error(text):
    try:
        space.parse(text)
    except ValueError:
        pass


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(FLOAT_PATHS + INT_PATHS + ["optimizer.name", "model.hidden"]),
       st.sampled_from(["log", "uniform", "int", "choice", "gauss", ""]),
       st.lists(st.one_of(st.text("0123456789.e-+naif", max_size=6), st.just("")),
                max_size=4))
def test_space_entries_with_random_parts_raise_only_value_errors(path, kind, parts):
    try:
        space.parse(f"{path}={':'.join([kind, *parts])}")
    except ValueError:
        pass


# -- recipes.schedules.get -------------------------------------------------------------------

# One-cycle and triangular start low (lr/div), rise and fall by design, and take no warmup.
DECAYING = [n for n in schedules.NAMES
            if n not in ("constant", "plateau", "cosine_restarts", *schedules.CYCLIC)]
SCHEDULED = [n for n in schedules.NAMES if n != "plateau"]
WARMED = [n for n in SCHEDULED if n not in schedules.CYCLIC]


def values(name, lr, spe, epochs, warmup=0.0):
    sched = schedules.get({"name": name, "warmup_epochs": warmup}, learning_rate=lr,
                          steps_per_epoch=spe, epochs=epochs)
    total = spe * epochs
    steps = sorted(set(np.linspace(0, total, min(total + 1, 25)).astype(int).tolist()))
    if isinstance(sched, float):
        return steps, [sched] * len(steps)
    return steps, [float(sched(s)) for s in steps]


SCHED_SETTINGS = settings(max_examples=6, deadline=None)
lrs = st.floats(1e-5, 1.0)
spes = st.integers(1, 20)
epochs_ = st.integers(3, 30)  # cosine_restarts needs cycles=3 <= its steps


@pytest.mark.parametrize("name", SCHEDULED)
@SCHED_SETTINGS
@given(lr=lrs, spe=spes, epochs=epochs_)
def test_schedules_are_finite_positive_and_start_at_lr(name, lr, spe, epochs):
    steps, vals = values(name, lr, spe, epochs)
    assert all(math.isfinite(v) and v >= 0 for v in vals), vals
    start = lr / schedules.DEFAULT_DIV[name] if name in schedules.CYCLIC else lr
    assert vals[0] == pytest.approx(start, rel=1e-5)
    assert max(vals) <= lr * (1 + 1e-5)


@pytest.mark.parametrize("name", DECAYING)
@SCHED_SETTINGS
@given(lr=lrs, spe=spes, epochs=st.integers(3, 30), warmup=st.sampled_from([0.0, 0.5, 1.0]))
def test_decaying_schedules_never_rise_after_warmup(name, lr, spe, epochs, warmup):
    steps, vals = values(name, lr, spe, epochs, warmup)
    end = int(round(warmup * spe))
    after = [v for s, v in zip(steps, vals) if s >= end]
    for a, b in zip(after, after[1:]):
        assert b <= a * (1 + 1e-6), (after,)


@pytest.mark.parametrize("name", WARMED)
@SCHED_SETTINGS
@given(lr=lrs, spe=st.integers(2, 20), epochs=st.integers(5, 30), warmup=st.sampled_from([1, 2]))
def test_warmup_rises_to_lr(name, lr, spe, epochs, warmup):
    sched = schedules.get({"name": name, "warmup_epochs": float(warmup)}, learning_rate=lr,
                          steps_per_epoch=spe, epochs=epochs)
    end = warmup * spe
    assert float(sched(end)) == pytest.approx(lr, rel=1e-4)
    assert float(sched(0)) <= lr * (1 + 1e-6)
    ramp = [float(sched(s)) for s in range(0, end + 1, max(1, end // 8))]
    assert all(b >= a * (1 - 1e-6) for a, b in zip(ramp, ramp[1:])), ramp
