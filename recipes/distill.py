"""Knowledge distillation: train a small student on a big (or ensemble) teacher's soft targets.

Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network": the teacher's
softmax at a temperature T > 1 exposes how it ranks the wrong classes ("dark knowledge");
the student matches those soft targets and, with a small weight, the hard labels:

    loss = α · CE(y, s) + (1 − α) · T² · KL(softmax(t / T) ‖ softmax(s / T))

with s, t the student's and teacher's logits. The T² keeps the soft term's gradients on the
same scale as the hard term's when T changes (the gradients of the soft term scale as 1/T²).
CS231n's "model ensembles" slide ends here: distil an ensemble into one model that is as
cheap to run as a single member.

Usage::

    distiller = Distiller(teacher, student, temperature=4.0, alpha=0.1)
    distiller.compile(keras.optimizers.SGD(0.1),
                      metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    distiller.fit(x, y_one_hot, epochs=...)
    distiller.student.save("student.keras")   # keep the student alone

Implemented by overriding ``keras.Model.compute_loss`` (Keras 3's backend-agnostic hook), so
Keras's own ``train_step``/``test_step`` run: ``fit``, ``evaluate``, callbacks and
distribution strategies behave as for any model. The compiled metrics see the student's
logits against the hard labels; ``student_loss`` and ``distillation_loss`` (the two terms,
before the α weighting and without the student's weight decay) are logged next to ``loss``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from recipes import tasks

__all__ = ["Distiller"]


@keras.saving.register_keras_serializable(package="babysit")
class Distiller(keras.Model):
    """A student trained on hard labels and a frozen teacher's softened predictions.

    Hinton, Vinyals & Dean 2015. ``call(x)`` returns the student's logits, so ``predict``,
    ``evaluate`` and the compiled metrics are the student's.

    An *ensemble teacher* (a list of models) gives the soft target
    ``mean_i softmax(t_i / T)``, the average of the members' softened distributions (as the
    paper distils an ensemble); averaging at temperature T, not at T = 1, keeps the target
    soft.

    The teacher is frozen: ``teacher.trainable`` is set to False (on the caller's model
    objects) and it is called with ``training=False`` (Dropout off, BatchNormalization on its
    moving statistics).

    Args:
        teacher: a trained model outputting logits, or a list of them.
        student: the model to train, outputting logits over the same classes.
        temperature: T > 0 of the softened softmaxes (Hinton et al. use 1-20; 2-5 is usual).
        alpha: weight in [0, 1] of the hard-label cross-entropy; 1 − α goes to the soft term.
        **kwargs: passed to ``keras.Model`` (e.g. ``name``).
    """

    def __init__(self, teacher: keras.Model | Sequence[keras.Model], student: keras.Model,
                 temperature: float = 4.0, alpha: float = 0.1, **kwargs: Any):
        super().__init__(**kwargs)
        if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) \
                or not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature must be a number > 0, got {temperature!r}; "
                             "Hinton et al. use 1-20, try 4")
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) \
                or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] (the hard-label weight), got {alpha!r}; "
                             "try 0.1")
        teachers = [teacher] if isinstance(teacher, keras.layers.Layer) else list(teacher)
        if not teachers:
            raise ValueError("teacher must be a model or a non-empty list of models")
        for t in teachers:
            t.trainable = False
        self.teachers = teachers
        self.student = student
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")

    @property
    def teacher(self) -> keras.Model | list[keras.Model]:
        """The teacher model, or the list of ensemble teachers."""
        return self.teachers[0] if len(self.teachers) == 1 else list(self.teachers)

    def call(self, x: Any, training: bool | None = None) -> Any:
        return self.student(x, training=training)

    def _teacher_log_probs(self, x: Any) -> Any:
        """Log of the soft target: log softmax(t / T), or log mean_i softmax(t_i / T)."""
        logs = [ops.log_softmax(_logits(t, t(x, training=False)) / self.temperature, axis=-1)
                for t in self.teachers]
        if len(logs) == 1:
            return ops.stop_gradient(logs[0])
        # log mean_i p_i = logsumexp_i(log p_i) − log k, stably.
        stacked = ops.stack(logs, axis=0)
        mean = ops.logsumexp(stacked, axis=0) - math.log(len(logs))
        return ops.stop_gradient(mean)

    def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None,
                     sample_weight: Any = None, training: bool = True) -> Any:
        """α·CE(y, s) + (1 − α)·T²·KL(p_teacher ‖ p_student), averaged over the batch.

        Args:
            x: the inputs (the teacher is run on them here).
            y: one-hot (or soft) labels.
            y_pred: the student's logits (``call(x)``).
            sample_weight: optional per-example weights (Keras's "sum over batch size").
            training: unused; the teacher always runs in inference mode.

        Returns:
            The scalar loss, plus the student's regularization losses.
        """
        del training
        logits = _logits(self.student, y_pred)
        hard = keras.losses.categorical_crossentropy(ops.cast(y, "float32"), logits,
                                                     from_logits=True)
        if self.alpha < 1.0:
            log_p = self._teacher_log_probs(x)
            log_q = ops.log_softmax(logits / self.temperature, axis=-1)
            soft = ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1) * self.temperature ** 2
        else:  # pure hard-label training: no teacher forward pass
            soft = ops.zeros_like(hard)
        per_example = self.alpha * hard + (1.0 - self.alpha) * soft
        if sample_weight is not None:
            w = ops.reshape(ops.cast(sample_weight, "float32"), ops.shape(per_example))
            hard, soft, per_example = hard * w, soft * w, per_example * w
        loss = ops.mean(per_example)
        self.student_loss_tracker.update_state(ops.mean(hard))
        self.distillation_loss_tracker.update_state(ops.mean(soft))
        for extra in self.student.losses:  # weight decay etc. of the student only
            loss = loss + ops.cast(ops.sum(extra), "float32")
        return loss

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({
            "teacher": [keras.saving.serialize_keras_object(t) for t in self.teachers],
            "student": keras.saving.serialize_keras_object(self.student),
            "temperature": self.temperature,
            "alpha": self.alpha,
        })
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Distiller:
        config = dict(config)
        teacher = [keras.saving.deserialize_keras_object(t) for t in config.pop("teacher")]
        student = keras.saving.deserialize_keras_object(config.pop("student"))
        return cls(teacher if len(teacher) > 1 else teacher[0], student, **config)


def _logits(model: keras.Model, outputs: Any) -> Any:
    """A model's outputs as logits: log p for a softmax last layer.

    log p equals the logits up to a constant per example, which every softmax, at any
    temperature, cancels.
    """
    outputs = ops.cast(outputs, "float32")
    if tasks.output_activation(model) == "softmax":
        return ops.log(ops.clip(outputs, 1e-7, 1.0))
    return outputs
