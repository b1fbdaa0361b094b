"""tuning.space: distributions, the --space syntax, KerasTuner sampling, applying values."""

import math

import keras_tuner as kt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recipes import configs
from tuning import space as S


def _draws(dim, n=1000):
    hp = kt.HyperParameters()
    dim.declare(hp, "x")
    (param,) = hp.space
    return [param.random_sample(seed) for seed in range(n)]


def _per_decade(values, lo_exp=-6, decades=3):
    counts = [0] * decades
    for v in values:
        counts[min(int(math.floor(math.log10(v) - lo_exp)), decades - 1)] += 1
    return counts


def test_log_uniform_puts_a_third_of_draws_in_each_decade():
    draws = _draws(S.LogUniform(1e-6, 1e-3))
    assert all(1e-6 <= v <= 1e-3 for v in draws)
    counts = _per_decade(draws)
    expected = len(draws) / 3
    chi2 = sum((c - expected) ** 2 / expected for c in counts)
    assert chi2 < 13.8, counts  # p = 0.001 for 2 degrees of freedom
    assert all(250 < c < 420 for c in counts), counts


def test_uniform_sampling_would_not_cover_the_decades():
    counts = _per_decade(_draws(S.Uniform(1e-6, 1e-3)))
    assert counts[2] > 850 and counts[0] < 20, counts  # ~90 % in the top decade


def test_declare_uses_log_sampling_and_config_paths():
    space = S.parse("optimizer.learning_rate=log:1e-6:1e-3,train.batch_size=int:16:256:log,"
                    "model.dropout=uniform:0:0.5,model.hidden=choice:50|100-50")
    hp = S.declare(space, kt.HyperParameters())
    by_name = {p.name: p for p in hp.space}
    assert list(by_name) == list(space)
    assert by_name["optimizer.learning_rate"].sampling == "log"
    assert by_name["train.batch_size"].sampling == "log"
    assert by_name["model.dropout"].sampling == "linear"
    assert list(by_name["model.hidden"].values) == ["50", "100-50"]


def test_grid_points_make_an_even_log_grid_within_budget():
    space = S.parse("optimizer.learning_rate=log:1e-6:1e-2,model.l2=log:1e-4:1e0")
    points = S.grid_points(space, 16)
    assert points == 4
    hp = S.declare(space, kt.HyperParameters(), points=points)
    lr = list(hp.space[0].values)
    assert len(lr) == 4 and lr[0] == pytest.approx(1e-6)
    assert lr[-1] == pytest.approx(1e-2, rel=1e-6)
    ratios = [b / a for a, b in zip(lr, lr[1:])]
    assert ratios == pytest.approx([ratios[0]] * 3)


@pytest.mark.parametrize("text", [
    "optimizer.learning_rate=log:1e-06:0.001,model.l2=log:1e-05:100000.0",
    "model.dropout=uniform:0.0:0.5",
    "train.batch_size=int:16:256:log,model.hidden=choice:50|100-50|200",
    "model.activation=choice:relu|tanh|leaky_relu,optimizer.name=choice:adam|momentum",
    "train.full_batch=choice:true|false,model.activation_kw.alpha=choice:0.01|0.3",
    "schedule.name=choice:constant|cosine,train.batch_size=int:32:128",
])
def test_parse_round_trips(text):
    space = S.parse(text)
    assert S.to_string(space) == text
    assert S.parse(S.to_string(space)) == space


def test_parse_types_values_like_the_fields():
    space = S.parse(" model.hidden = choice:50|100-50 , train.full_batch=choice:true|false,"
                    "model.dropout=choice:0|0.5,train.batch_size=choice:32|64")
    assert space["model.hidden"].values == ((50,), (100, 50))
    assert space["train.full_batch"].values == (True, False)
    assert space["model.dropout"].values == (0.0, 0.5)
    assert all(isinstance(v, float) for v in space["model.dropout"].values)
    assert space["train.batch_size"].values == (32, 64)


@given(lo_exp=st.floats(-12, 3), decades=st.floats(0.01, 10))
@settings(max_examples=40, deadline=None)
def test_log_ranges_round_trip(lo_exp, decades):
    space = {"optimizer.learning_rate": S.LogUniform(10 ** lo_exp, 10 ** (lo_exp + decades))}
    assert S.parse(S.to_string(space)) == space


@pytest.mark.parametrize("text, needles", [
    ("", ["empty search space"]),
    ("optimizer.learning_rate", ["'optimizer.learning_rate'", "PATH=DIST"]),
    ("=log:1:2", ["PATH=DIST"]),
    ("optimizer.lr=log:1e-6:1e-3", ["'optimizer.lr'", "learning_rate"]),
    ("model=choice:a", ["branch", "model."]),
    ("model..l2=log:1:2", ["dotted config path"]),
    ("model.l2=lo:1:2", ["unknown distribution 'lo'", "log:LO:HI"]),
    ("model.l2=log:0:1", ["0 < LO < HI"]),
    ("model.l2=log:1e-3:1e-6", ["0 < LO < HI"]),
    ("model.l2=log:1e-5", ["log:LO:HI"]),
    ("model.l2=log:1:2:3", ["log:LO:HI"]),
    ("model.l2=log:a:b", ["must be numbers"]),
    ("model.l2=log:1e-5:inf", ["finite numbers"]),
    ("model.dropout=uniform:0.5:0.1", ["LO < HI"]),
    ("model.l2=log:1e-5:1,", ["stray comma"]),
    ("model.l2=log:1e-5:1,,model.l1=log:1e-5:1", ["stray comma"]),
    ("model.l2=log:1e-5:1,model.l2=log:1e-4:1", ["given twice"]),
    ("train.batch_size=log:16:256", ["type int", "int:LO:HI"]),
    ("train.batch_size=uniform:16:256", ["type int"]),
    ("train.batch_size=int:256:16", ["LO < HI"]),
    ("train.batch_size=int:0:16:log", ["LO >= 1"]),
    ("train.batch_size=int:16:256:lin", ["only be 'log'"]),
    ("train.batch_size=int:1.5:4", ["integers"]),
    ("train.batch_size=choice:32|6.5", ["'6.5' is not an integer"]),
    ("model.hidden=int:1:3", ["type tuple", "choice"]),
    ("model.hidden=choice:50|a-b", ["'a-b'", "100-50"]),
    ("model.activation=log:1:2", ["type str", "choice"]),
    ("model.dropout=choice:", ["choice needs values"]),
    ("model.dropout=choice:0.1||0.2", ["empty value"]),
    ("model.dropout=choice:0.1|0.1", ["repeated"]),
    ("train.full_batch=choice:maybe", ["true or false"]),
])
def test_malformed_spaces_name_the_fragment_and_the_fix(text, needles):
    with pytest.raises(ValueError) as e:
        S.parse(text)
    for needle in needles:
        assert needle in str(e.value), str(e.value)


@pytest.mark.parametrize("make", [
    lambda: S.LogUniform(0, 1), lambda: S.LogUniform(2, 1), lambda: S.Uniform(1, 1),
    lambda: S.IntUniform(1, 1), lambda: S.IntUniform(0.5, 3), lambda: S.Choice(()),
    lambda: S.LogUniform(float("nan"), 1), lambda: S.Uniform("a", 1),
])
def test_bad_distributions_raise(make):
    with pytest.raises(ValueError):
        make()


def test_normalize_checks_programmatic_spaces():
    space = S.normalize({"model.hidden": S.Choice([50, (100, 50)]),
                         "model.dropout": S.Choice([0, 0.5])})
    assert space["model.hidden"].values == ((50,), (100, 50))
    with pytest.raises(ValueError, match="unknown config path 'model.hiden'"):
        S.normalize({"model.hiden": S.Choice([50])})
    with pytest.raises(ValueError, match="not a distribution"):
        S.normalize({"model.l2": (1e-5, 1e-3)})
    with pytest.raises(ValueError, match="type int"):
        S.normalize({"train.epochs": S.LogUniform(1, 10)})


def test_paths_are_checked_against_the_given_config():
    cfg = configs.complete(None)
    with pytest.raises(ValueError, match="valid fields there"):
        S.parse("model.nonsense=log:1:2", cfg)


def test_apply_sets_values_on_a_copy_and_decodes_tuples():
    base = configs.get("digits_mlp")
    cfg = S.apply(base, {"model.hidden": "100-50", "optimizer.learning_rate": 0.01,
                         "model.l2": 1, "train.full_batch": "true",
                         "model.activation_kw.alpha": 0.2})
    assert cfg.model.hidden == (100, 50)
    assert cfg.optimizer.learning_rate == 0.01
    assert cfg.model.l2 == 1.0 and isinstance(cfg.model.l2, float)
    assert cfg.train.full_batch is True
    assert cfg.model.activation_kw.alpha == 0.2
    assert base.model.hidden == (50,) and base.optimizer.learning_rate == 1e-3  # untouched
    with pytest.raises(ValueError, match="unknown config path"):
        S.apply(base, {"optimizer.lr": 1.0})


def test_decode_and_describe():
    space = S.parse("optimizer.learning_rate=log:1e-6:1e-3,model.hidden=choice:50|100-50")
    assert S.decode({"model.hidden": "100-50", "optimizer.learning_rate": 1e-4}) == {
        "model.hidden": (100, 50), "optimizer.learning_rate": 1e-4}
    d = S.describe(space)
    assert d["optimizer.learning_rate"] == {"kind": "log", "lo": 1e-6, "hi": 1e-3, "log": True}
    assert d["model.hidden"] == {"kind": "choice", "values": ["50", "100-50"]}


# --- model.kwargs.* (a user's builder) and which fields apply to which model ---------------


def test_kwargs_paths_are_typed_by_their_distribution():
    text = ("model.kwargs.width=int:16:128,model.kwargs.rate=uniform:0.0:0.5,"
            "model.kwargs.scale=log:0.001:0.1,model.kwargs.act=choice:relu|tanh,"
            "model.kwargs.bn=choice:true|false,model.kwargs.depth=choice:2|4")
    space = S.parse(text)
    assert space["model.kwargs.width"] == S.IntUniform(16, 128)
    assert space["model.kwargs.act"].values == ("relu", "tanh")
    assert space["model.kwargs.bn"].values == (True, False)
    assert space["model.kwargs.depth"].values == (2, 4)
    assert S.to_string(space) == text and S.parse(S.to_string(space)) == space
    assert S.parse("model.kwargs.p=choice:1|0.5")["model.kwargs.p"].values == (1.0, 0.5)
    hp = S.declare(space, kt.HyperParameters())
    assert [p.name for p in hp.space] == list(space)


def test_kwargs_values_apply_and_decode():
    base = configs.get("digits_mlp")
    cfg = S.apply(base, {"model.kwargs.width": 64, "model.kwargs.bn": "true",
                         "model.kwargs.act": "tanh"})
    assert cfg.model.kwargs.to_dict() == {"width": 64, "bn": True, "act": "tanh"}
    assert "width" not in base.model.kwargs  # untouched
    assert S.decode({"model.kwargs.width": 64, "model.kwargs.bn": "false"}) == {
        "model.kwargs.width": 64, "model.kwargs.bn": False}
    space = S.parse("model.kwargs.width=int:16:128")
    assert S.edge_values(space) == [("model.kwargs.width", 16), ("model.kwargs.width", 128)]
    assert S.apply(base, dict(S.edge_values(space)[:1])).model.kwargs.width == 16


def test_a_kwarg_set_in_the_config_takes_its_type_from_there():
    cfg = configs.complete({"model": {"kwargs": {"width": 32, "ks": (3, 3)}}})
    assert S.parse("model.kwargs.width=choice:16|32", cfg)["model.kwargs.width"].values == (
        16, 32)
    assert S.parse("model.kwargs.ks=choice:3-3|5-5", cfg)["model.kwargs.ks"].values == (
        (3, 3), (5, 5))
    with pytest.raises(ValueError, match="type int"):
        S.parse("model.kwargs.width=log:1:10", cfg)
    assert S.apply(cfg, {"model.kwargs.ks": "5-5"}).model.kwargs.ks == (5, 5)


@pytest.mark.parametrize("text, needle", [
    ("model.kwargs.width=choice:1|a", "mix types"),
    ("model.kwargs.a.b=int:1:3", "one keyword argument name"),
    ("model.kwargs=choice:a", "model.kwargs.width"),
    ("model.kwargs.flag=choice:yes|true", "mix types"),
])
def test_malformed_kwargs_spaces(text, needle):
    with pytest.raises(ValueError, match=needle):
        S.parse(text)
    with pytest.raises(ValueError, match="tuple-valued"):
        S.normalize({"model.kwargs.ks": S.Choice(((3, 3), (5, 5)))})


def test_check_applicable_refuses_fields_the_model_ignores():
    arch = "tests.fixtures.nets:tiny"
    with pytest.raises(ValueError) as e:
        S.check_applicable(S.parse("optimizer.learning_rate=log:1e-4:1e-1,model.l2=log:1e-5:1"),
                           user_model=True, arch=arch)
    msg = str(e.value)
    assert "model.l2 configures the built-in architectures" in msg and arch in msg
    assert "model.kwargs.*" in msg and "regularization in your builder" in msg
    with pytest.raises(ValueError, match="keyword argument for a user's builder.*built-in mlp"):
        S.check_applicable("model.kwargs.width=int:16:128", user_model=False, arch="mlp")
    with pytest.raises(ValueError, match="passed from Python"):  # a model object
        S.check_applicable("model.kwargs.width=int:16:128", user_model=True, arch="mlp")
    S.check_applicable("model.kwargs.width=int:16:128,train.batch_size=int:16:64",
                       user_model=True, arch=arch)
    S.check_applicable("model.l2=log:1e-5:1,optimizer.learning_rate=log:1e-4:1",
                       user_model=False, arch="mlp")


def test_user_model_fields():
    yes = ["optimizer.learning_rate", "schedule.name", "train.batch_size",
           "loss.label_smoothing", "augment.flip", "model.kwargs.width"]
    no = ["model.l2", "model.hidden", "train.epochs", "loss.name", "dataset.limit"]
    assert all(S.applies_to_user_model(p) for p in yes)
    assert not any(S.applies_to_user_model(p) for p in no)
    assert "model.kwargs.*" in S.USER_MODEL_FIELDS
