import json

import keras
import numpy as np
import pytest

from recipes import losses

C = 5


def _batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(n, C)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, C, n), C).astype("float32")
    return y, logits


def svm_loop(y_idx, scores, delta):
    """The lecture's L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + delta), averaged."""
    total = 0.0
    for i, yi in enumerate(y_idx):
        for j in range(scores.shape[1]):
            if j != yi:
                total += max(0.0, scores[i, j] - scores[i, yi] + delta)
    return total / len(y_idx)


def test_names():
    assert losses.NAMES == ("softmax", "svm")


@pytest.mark.parametrize("name", losses.NAMES)
def test_every_loss_is_finite_on_a_batch(name):
    y, logits = _batch()
    assert np.isfinite(float(losses.get(name, C)(y, logits)))


def test_softmax_equals_keras_cross_entropy_and_initial_loss_is_log_c():
    y, logits = _batch()
    loss = losses.get(None, C)
    ref = keras.losses.categorical_crossentropy(y, logits, from_logits=True)
    assert float(loss(y, logits)) == pytest.approx(float(np.mean(ref)), rel=1e-6)
    assert float(loss(y, np.zeros_like(logits))) == pytest.approx(np.log(C), rel=1e-6)


@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_svm_equals_the_lectures_loop(margin):
    y, logits = _batch()
    loss = losses.get({"name": "svm", "svm_margin": margin}, C)
    assert isinstance(loss, losses.MulticlassHinge)
    expected = svm_loop(y.argmax(-1), logits, margin)
    assert float(loss(y, logits)) == pytest.approx(expected, rel=1e-5)
    # Small scores: every wrong class sits inside the margin, L = (C - 1) * delta.
    assert float(loss(y, np.zeros_like(logits))) == pytest.approx((C - 1) * margin)


def test_svm_is_weston_watkins_not_crammer_singer():
    y = np.eye(C, dtype="float32")[:1]
    s = np.array([[1.0, 1.0, 1.0, -5.0, -5.0]], "float32")  # two wrong classes tie the true one
    assert float(losses.get("svm", C)(y, s)) == pytest.approx(2.0)
    assert float(keras.losses.CategoricalHinge()(y, s)) == pytest.approx(1.0)


def test_svm_soft_labels_are_the_expectation():
    y, logits = _batch()
    y2 = np.roll(y, 1, axis=-1)
    loss = keras.losses.deserialize(keras.losses.serialize(losses.get("svm", C)))
    mixed = float(loss(0.3 * y + 0.7 * y2, logits))
    assert mixed == pytest.approx(0.3 * float(loss(y, logits)) + 0.7 * float(loss(y2, logits)),
                                  rel=1e-5)


def test_label_smoothing_matches_closed_form():
    y, logits = _batch()
    eps = 0.1
    smooth = float(losses.get({"label_smoothing": eps}, C)(y, logits))
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -(y * log_p).sum(-1).mean()
    uniform = -log_p.mean(-1).mean()  # cross-entropy against the uniform distribution
    assert smooth == pytest.approx((1 - eps) * ce + eps * uniform, rel=1e-5)
    assert smooth != pytest.approx(ce)


def test_hinge_serializes_and_reloads_in_safe_mode(tmp_path):
    loss = losses.MulticlassHinge(margin=2.0)
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(loss)))
    back = keras.saving.deserialize_keras_object(config, safe_mode=True)
    assert isinstance(back, losses.MulticlassHinge) and back.margin == 2.0
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(C)])
    model.compile("sgd", loss)
    path = str(tmp_path / "m.keras")
    model.save(path)
    assert keras.saving.load_model(path, safe_mode=True).loss.margin == 2.0


@pytest.mark.parametrize("cfg, match", [
    ({"name": "svm", "label_smoothing": 0.1}, r"applies to loss.name='softmax' only"),
    ({"label_smoothing": 1.0}, r"loss.label_smoothing must be in \[0, 1\), got 1.0"),
    ({"name": "svm", "svm_margin": 0.0}, r"loss.svm_margin must be > 0, got 0.0"),
    ({"name": "l2"}, r"'l2' is not a loss; use one of \['softmax', 'svm'\]"),
])
def test_bad_config_raises(cfg, match):
    with pytest.raises(ValueError, match=match):
        losses.get(cfg, C)
