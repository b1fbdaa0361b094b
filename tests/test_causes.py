"""recipes.causes: one vocabulary, remedies with flags, one resolution rule."""

import pytest

from recipes import causes
from recipes.causes import CAUSES, Context, Finding

ISSUE_CAUSES = ("learning_rate_too_high", "learning_rate_too_low", "output_loss_mismatch",
                "unnormalized_inputs", "dead_units", "saturated_units", "vanishing_gradients",
                "exploding_gradients", "batch_too_small", "too_few_epochs", "overfitting",
                "underfitting", "not_shuffled", "bad_initialization")


def _f(cause, severity="warning", code="rule"):
    return Finding(code, severity, f"{cause}: 1.0", "advice", cause=cause,
                   remedies=causes.remedies(cause, Context(learning_rate=0.1)))


def test_the_documented_causes_are_all_there_and_documented():
    assert set(ISSUE_CAUSES) <= set(CAUSES)
    assert all(c.meaning for c in CAUSES.values())
    for name in causes.EXPLAINS:
        assert name in CAUSES
        assert set(causes.EXPLAINS[name]) <= set(CAUSES)


@pytest.mark.parametrize("cause", sorted(CAUSES))
def test_every_cause_has_remedies_with_flags_or_a_transform(cause):
    for users_model in (False, True):
        ctx = Context(learning_rate=0.01, batch_size=1, epochs=5, train_size=1000,
                      users_model=users_model, dropout=0.9)
        rs = causes.remedies(cause, ctx)
        if cause == "search_range_edge":
            assert rs == ()  # the search shifts its own ranges
            continue
        assert rs, cause
        for r in rs:
            assert r.text
            assert r.change or r.transform
            if r.change:
                assert r.flags().startswith("--config.")
                assert all("." in k for k in r.change)


def test_remedies_scale_the_runs_numbers():
    ctx = Context(learning_rate=0.5, batch_size=1, epochs=3, train_size=100)
    assert causes.remedies("learning_rate_too_high", ctx)[0].change == {
        "optimizer.learning_rate": 0.05}
    low = causes.remedies("learning_rate_too_low", ctx)
    assert (low[0].transform, low[0].change) == ("lr_range", {})  # measure it first
    assert low[1].change == {"optimizer.learning_rate": 5.0}
    assert causes.remedies("learning_rate_too_high", ctx)[1].transform == "lr_range"
    assert causes.remedies("batch_too_small", ctx)[0].change == {"train.batch_size": 32}
    assert causes.remedies("too_few_epochs", ctx)[0].change == {"train.epochs": 6}
    capped = causes.remedies("batch_too_small", Context(batch_size=16, train_size=40))[0]
    assert capped.change == {"train.batch_size": 40}


def test_a_users_network_is_repaired_by_transformation_a_builtin_by_fields():
    users = causes.remedies("dead_units", Context(users_model=True))[0]
    builtin = causes.remedies("dead_units", Context(users_model=False))[0]
    assert (users.transform, users.change) == ("leaky_relu", {})
    assert builtin.change == {"model.activation": "leaky_relu"} and not builtin.transform


def test_overfitting_offers_restore_best_only_when_it_is_off():
    off = causes.remedies("overfitting", Context(users_model=True, restore_best=False))
    on = causes.remedies("overfitting", Context(users_model=True, restore_best=True))
    assert off[0].change == {"train.restore_best": True}
    assert on == ()


def test_unknown_cause_names_the_list():
    with pytest.raises(ValueError, match="learning_rate_too_high"):
        causes.remedies("bogus")


def test_flags_format():
    assert causes.flags_for({"optimizer.learning_rate": 0.001, "train.shuffle": True}) == \
        "--config.optimizer.learning_rate=0.001 --config.train.shuffle=True"
    assert causes.flags_for({"optimizer.learning_rate": 1e-5}) == \
        "--config.optimizer.learning_rate=1e-05"


def test_opposite_advice_on_one_knob_never_survives():
    high, low = _f("learning_rate_too_high"), _f("learning_rate_too_low", "error")
    out = causes.resolve([low, high])
    assert [(f.cause, f.explained_by, f.severity) for f in out] == [
        ("learning_rate_too_high", "", "warning"),
        ("learning_rate_too_low", "learning_rate_too_high", "info")]
    assert out[1].remedies == ()
    assert [f.cause for f in out if causes.serious(f)] == ["learning_rate_too_high"]


def test_an_upstream_cause_explains_its_symptoms():
    out = causes.resolve([_f("dead_units"), _f("output_loss_mismatch", "error"),
                          _f("vanishing_gradients")])
    assert out[0].cause == "output_loss_mismatch" and not out[0].explained_by
    assert {f.cause: f.explained_by for f in out[1:]} == {
        "dead_units": "output_loss_mismatch", "vanishing_gradients": "output_loss_mismatch"}


def test_unrelated_causes_both_stand_and_order_is_severity_then_rank():
    out = causes.resolve([_f("overfitting"), _f("not_shuffled"), _f("unnormalized_inputs",
                                                                    "error")])
    assert [f.cause for f in out] == ["unnormalized_inputs", "not_shuffled", "overfitting"]
    assert not any(f.explained_by for f in out)


def test_an_info_finding_explains_nothing():
    out = causes.resolve([_f("learning_rate_too_high", "info"), _f("dead_units")])
    assert all(not f.explained_by for f in out)


def test_to_dict_has_the_first_remedy_with_flags():
    d = _f("learning_rate_too_high").to_dict()
    assert d["cause"] == "learning_rate_too_high"
    assert d["remedy"]["flags"] == "--config.optimizer.learning_rate=0.01"
    assert len(d["remedies"]) == 3


def test_describe_is_one_line_with_the_fix():
    line = causes.describe(_f("learning_rate_too_high"))
    assert "\n" not in line and "--config.optimizer.learning_rate=0.01" in line
