"""recipes.distill: the Distiller (Hinton, Vinyals & Dean 2015)."""

import keras
import numpy as np
import pytest

from recipes.distill import Distiller

D, K, N = 5, 3, 32


def _mlp(hidden=8, seed=0, l2=None):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((D,))
    h = keras.layers.Dense(hidden, activation="relu", kernel_regularizer=l2)(inputs)
    return keras.Model(inputs, keras.layers.Dense(K)(h))


def _copy(model):
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    return twin


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype("float32")
    return x, np.eye(K, dtype="float32")[rng.integers(0, K, N)]


def _accuracy():
    return keras.metrics.CategoricalAccuracy(name="accuracy")


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def test_alpha_one_is_plain_training_on_hard_labels():
    x, y = _data()
    student = _mlp(l2=keras.regularizers.L2(1e-2))  # weight decay is the student's too
    plain = _copy(student)
    plain.compile(keras.optimizers.SGD(0.1), keras.losses.CategoricalCrossentropy(from_logits=True),
                  metrics=[_accuracy()])
    want = plain.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0).history

    teacher = _mlp(hidden=16, seed=1, l2=keras.regularizers.L2(1.0))  # ...not the teacher's
    distiller = Distiller(teacher, _copy(student), temperature=3.0, alpha=1.0)
    distiller.compile(keras.optimizers.SGD(0.1), metrics=[_accuracy()])
    got = distiller.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0).history

    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6)
    np.testing.assert_allclose(got["accuracy"], want["accuracy"])
    # student_loss is the data term alone: the loss adds the student's weight decay.
    assert all(s < total for s, total in zip(got["student_loss"], got["loss"]))
    for a, b in zip(distiller.student.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_student_copy_of_teacher_has_zero_distillation_loss():
    x, y = _data()
    teacher = _mlp()
    distiller = Distiller(teacher, _copy(teacher), temperature=4.0, alpha=0.0)
    distiller.compile(keras.optimizers.SGD(0.1), metrics=[_accuracy()])
    scores = distiller.evaluate(x, y, verbose=0, return_dict=True)
    assert abs(scores["loss"]) < 1e-6 and abs(scores["distillation_loss"]) < 1e-6
    loss = distiller.compute_loss(x, y, distiller(x), training=False)
    assert abs(float(loss)) < 1e-6


def test_loss_matches_the_formula_for_an_ensemble_teacher():
    x, y = _data()
    t1, t2, student = _mlp(seed=1), _mlp(seed=2), _mlp(seed=3)
    temperature, alpha = 2.5, 0.3
    distiller = Distiller([t1, t2], student, temperature=temperature, alpha=alpha)
    assert distiller.teacher == [t1, t2]
    got = float(distiller.compute_loss(x, y, distiller(x), training=False))

    s = student.predict(x, verbose=0)
    p = np.mean([np.exp(_log_softmax(t.predict(x, verbose=0) / temperature)) for t in (t1, t2)],
                axis=0)
    kl = np.sum(p * (np.log(p) - _log_softmax(s / temperature)), axis=-1)
    ce = -np.sum(y * _log_softmax(s), axis=-1)
    want = np.mean(alpha * ce + (1 - alpha) * temperature ** 2 * kl)
    assert got == pytest.approx(want, rel=1e-5)


def test_teacher_is_frozen_and_metrics_are_the_students():
    x, y = _data()
    teacher, student = _mlp(hidden=16, seed=1), _mlp()
    before = [w.copy() for w in teacher.get_weights()]
    distiller = Distiller(teacher, student)
    distiller.compile(keras.optimizers.SGD(0.1), metrics=[_accuracy()])
    history = distiller.fit(x, y, epochs=2, batch_size=8, verbose=0).history
    assert {"loss", "accuracy", "student_loss", "distillation_loss"} <= set(history)
    assert not teacher.trainable
    assert len(distiller.trainable_weights) == len(student.trainable_weights)
    for a, b in zip(teacher.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    scores = distiller.evaluate(x, y, verbose=0, return_dict=True)
    logits = student.predict(x, verbose=0)
    np.testing.assert_allclose(distiller.predict(x, verbose=0), logits, atol=1e-6)
    assert scores["accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == y.argmax(-1)))


def test_saved_student_reloads_and_predicts_identically(tmp_path):
    x, y = _data()
    distiller = Distiller(_mlp(hidden=16, seed=1), _mlp())
    distiller.compile(keras.optimizers.SGD(0.1), metrics=[_accuracy()])
    distiller.fit(x, y, epochs=1, batch_size=8, verbose=0)
    path = str(tmp_path / "student.keras")
    distiller.student.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), distiller.predict(x, verbose=0))

    # The whole Distiller round-trips through its config too (registered, safe mode).
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    again = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(again, Distiller) and again.temperature == 4.0 and again.alpha == 0.1
    np.testing.assert_array_equal(again.predict(x, verbose=0), distiller.predict(x, verbose=0))


@pytest.mark.parametrize("kwargs, field", [
    ({"temperature": 0.0}, "temperature"),
    ({"temperature": -1.0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"alpha": -0.1}, "alpha"),
    ({"alpha": 1.5}, "alpha"),
])
def test_bad_arguments_raise(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Distiller(_mlp(), _mlp(), **kwargs)


def test_empty_ensemble_teacher_raises():
    with pytest.raises(ValueError, match="teacher"):
        Distiller([], _mlp())
