"""Per-layer gradient norms on a fixed probe batch: vanishing and exploding gradients.

AUTOTRAINER (Zhang et al., ICSE 2021) and DeepDiagnosis (Wardat et al., ICSE 2022) tell a
vanishing gradient from an exploding one by the ratio of the first layer's gradient norm
to the last layer's: backpropagation multiplies the error by every layer's Jacobian on the
way down, so a deep stack of saturating units shrinks it geometrically (ratio ≪ 1) and a
stack of too-large weights blows it up (ratio ≫ 1). :class:`GradientNormMonitor` measures
that ratio every N epochs on a fixed ``(x, y)`` batch and writes it into the epoch's
``logs``; :func:`gradient_verdict` is the pure rule.

What is differentiated: the model's *compiled* loss only (``model.compute_loss`` on the
model's own outputs, so loss objects, loss names, ``from_logits`` and loss weights are all
as in training), without the regularization losses (L1/L2 penalties, ``add_loss``). A
penalty's gradient ``2λW`` is local to its weight and does not travel through the network:
on a vanishing net it can be orders of magnitude larger than the data gradient of the
first layer and would hide the very thing measured. They are subtracted from
``compute_loss``'s total inside the tape (their gradients cancel to float32 rounding, about
1e-7 of the penalty's own gradient). Differentiating the loss w.r.t. the outputs and
pushing that back would be exact, but misses a crossentropy on a softmax output: Keras
then computes the loss from the softmax's input (the logits) found in the graph.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from models import inspect as models_inspect

__all__ = [
    "GRAD_RATIO_LOW",
    "GRAD_RATIO_HIGH",
    "PROBE_EXAMPLES",
    "GradientNormMonitor",
    "gradient_verdict",
    "kernel_layers",
    "summarize_gradients",
]

logger = logging.getLogger(__name__)

#: AUTOTRAINER's starting points for ‖∇W_first‖ / ‖∇W_last‖: below ``GRAD_RATIO_LOW`` the
#: gradient vanishes on its way to the first layer, above ``GRAD_RATIO_HIGH`` it explodes.
#: Measured on digits MLPs (3 seeds, 5 epochs): healthy ReLU/He and tanh nets 0.03-7 (0.1 at
#: the start with the models' head_init_scale=0.1, which scales the ratio with it), a
#: 10-layer sigmoid net 1e-15..2e-5. In a ReLU net the ratio follows the last layer's
#: weight scale over the first's, not the overall scale: N(0, 1) weights everywhere (~7x He)
#: give 0.03-0.07 with gradient norms 50-7000x larger, and only a 1000x head reached 30-60
#: (the net died in its first epoch).
GRAD_RATIO_LOW = 1e-3
GRAD_RATIO_HIGH = 70.0

#: At most this many probe examples: the measurement is one forward and one backward pass.
PROBE_EXAMPLES = 256


def gradient_verdict(ratio: float, low: float = GRAD_RATIO_LOW,
                     high: float = GRAD_RATIO_HIGH) -> str | None:
    """AUTOTRAINER's rule on the first/last layer gradient-norm ratio.

    Args:
        ratio: ‖∇W_first‖ / ‖∇W_last‖ (NaN when it could not be measured).
        low: below this the gradients vanish.
        high: above this they explode.

    Returns:
        ``"vanishing"``, ``"exploding"`` (also for an infinite ratio) or None (healthy, NaN).
    """
    if math.isnan(ratio):
        return None
    if ratio < low:
        return "vanishing"
    if ratio > high:
        return "exploding"
    return None


def kernel_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers with a trainable Dense/Conv kernel, in model order (nested models too).

    Layer order is ``models.inspect.walk``'s, i.e. the order the model lists its layers:
    input to output for Sequential and functional models. Frozen layers are left out.
    """
    out, seen = [], set()
    for layer in models_inspect.walk(model):
        kernel = getattr(layer, "kernel", None)
        if (kernel is None or not isinstance(kernel, keras.Variable) or id(layer) in seen
                or len(kernel.shape) < 2 or not (layer.trainable and kernel.trainable)):
            continue
        seen.add(id(layer))
        out.append(layer)
    return out


def summarize_gradients(layers: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The three logged numbers from per-layer records.

    Args:
        layers: ``{"name", "grad_norm", "weight_norm"}`` per kernel layer, input first.

    Returns:
        ``grad_norm_first``, ``grad_norm_last`` and ``grad_norm_ratio`` (first / last); the
        ratio is NaN with fewer than two layers or a zero last norm, the norms NaN without
        layers.
    """
    if not layers:
        return dict.fromkeys(GradientNormMonitor.KEYS, math.nan)
    first, last = float(layers[0]["grad_norm"]), float(layers[-1]["grad_norm"])
    ratio = first / last if len(layers) > 1 and last != 0 and not math.isnan(last) else math.nan
    return {"grad_norm_first": first, "grad_norm_last": last, "grad_norm_ratio": ratio}


class GradientNormMonitor(keras.callbacks.Callback):
    """Per-layer gradient norms of the training loss on a fixed probe batch, every N epochs.

    AUTOTRAINER (ICSE 2021) / DeepDiagnosis (ICSE 2022): the first/last layer ratio of the
    gradient norms detects vanishing (< 1e-3) and exploding (> 70) gradients. Per layer with
    a trainable kernel (:func:`kernel_layers`), the L2 norm of the kernel's gradient and of
    the kernel itself. The gradient is that of the compiled loss without regularization
    (see the module docstring), from ``model(x, training=False)``.

    Measures once before the first update (at the first epoch's start, after a
    ``BackupAndRestore`` would have restored weights; kept as record epoch 0, not logged,
    and only for a ``fit`` that starts at epoch 0), then at the end of epochs E (1-based)
    with ``E % every == 0``. Nothing it does changes training: no weight, optimizer, metric
    or random state is touched.

    Args:
        probe_x: the fixed probe inputs, as the model takes them (preprocessed).
        probe_y: their targets in the form the compiled loss takes (sparse class ids or
            one-hot rows).
        every: epochs between measurements (>= 1).
        max_examples: only the first this many probe examples are used.

    Attributes:
        records: ``{"epoch": E, "layers": [{"name", "grad_norm", "weight_norm"}, ...]}`` per
            measurement, epoch 0 first.
        verdict: the first :func:`gradient_verdict` of a logged epoch, as
            ``"epoch E: vanishing gradients (...)"`` (also logged as a warning); "" while
            healthy.

    Logs ``grad_norm_first``, ``grad_norm_last`` and ``grad_norm_ratio`` at every epoch end
    (NaN in epochs not measured).
    """

    KEYS = ("grad_norm_first", "grad_norm_last", "grad_norm_ratio")

    def __init__(self, probe_x: Any, probe_y: Any, every: int = 1,
                 max_examples: int = PROBE_EXAMPLES):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"GradientNormMonitor every must be >= 1 epoch, got {every}")
        if probe_x is None or probe_y is None:
            raise ValueError("GradientNormMonitor needs probe_x and probe_y (a fixed batch)")
        n = int(max_examples)
        self.probe_x = tf.nest.map_structure(lambda a: np.asarray(a)[:n], probe_x)
        self.probe_y = tf.nest.map_structure(lambda a: np.asarray(a)[:n], probe_y)
        self.every = int(every)
        self.records: list[dict[str, Any]] = []
        self.verdict = ""
        self._probe = tf.nest.map_structure(tf.convert_to_tensor, (self.probe_x, self.probe_y))
        self._fn = self._fn_model = None
        self._layers: list[keras.layers.Layer] = []

    def on_train_begin(self, logs=None):
        self.records, self.verdict = [], ""
        layers = kernel_layers(self.model)
        if self._fn is None or self._fn_model is not self.model or layers != self._layers:
            # Traced once, on the first measurement; kept across fits of the same model (a
            # fit per epoch does not retrace), rebuilt for another model.
            self._layers, self._kernels = layers, [layer.kernel for layer in layers]
            self._fn = tf.function(self._norms, reduce_retracing=True)
            self._fn_model = self.model
        self._first_epoch = True

    def on_epoch_begin(self, epoch, logs=None):
        # Here, not in on_train_begin: BackupAndRestore (later in the list) restores the
        # weights in its on_train_begin, and a resumed fit (epoch > 0) has no "before".
        if self._first_epoch and epoch == 0:
            self.records.append({"epoch": 0, "layers": self.measure()})
            # A multi-output model's compiled loss tracks each output's loss; fit has just
            # reset those trackers, and the probe must not count in epoch 1's logs.
            self.model.reset_metrics()
        self._first_epoch = False

    def on_epoch_end(self, epoch, logs=None):
        values = dict.fromkeys(self.KEYS, math.nan)
        if (epoch + 1) % self.every == 0:
            layers = self.measure()
            self.records.append({"epoch": epoch + 1, "layers": layers})
            values = summarize_gradients(layers)
            verdict = gradient_verdict(values["grad_norm_ratio"])
            if verdict and not self.verdict:
                self.verdict = (f"epoch {epoch + 1}: {verdict} gradients (first/last layer "
                                f"gradient norm {values['grad_norm_ratio']:.3g})")
                logger.warning("GradientNormMonitor: %s", self.verdict)
        if logs is not None:
            logs.update(values)

    def measure(self) -> list[dict[str, Any]]:
        """Per kernel layer, input first: ``{"name", "grad_norm", "weight_norm"}`` now."""
        if not self._layers:
            return []
        grads, weights = self._fn(*self._probe)
        return [{"name": layer.name, "grad_norm": float(g), "weight_norm": float(w)}
                for layer, g, w in zip(self._layers, grads.numpy(), weights.numpy())]

    def _norms(self, x: Any, y: Any) -> tuple[tf.Tensor, tf.Tensor]:
        """L2 norms of the kernels' loss gradients and of the kernels (float64, (layers,))."""
        # training=False: BatchNormalization uses (and does not update) its moving
        # statistics and Dropout is off, so measuring leaves the training state untouched
        # and every measurement sees the same deterministic network.
        with tf.GradientTape() as tape:
            y_pred = self.model(x, training=False)
            # In the same tape as the forward pass: a crossentropy on a softmax output takes
            # the softmax's logits from the graph (as in training), bypassing ``y_pred``.
            loss = self.model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)
            penalties = self.model.losses  # recomputed from the weights: the same terms
            if penalties:  # the compiled loss alone (module docstring)
                loss -= tf.add_n([tf.reduce_sum(tf.cast(p, loss.dtype)) for p in penalties])
        grads = tape.gradient(loss, self._kernels,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        # float64: an exploding gradient's squares overflow float32 above ~1e19.
        return (tf.stack([_l2(g) for g in grads]),
                tf.stack([_l2(k) for k in self._kernels]))


def _l2(t: Any) -> tf.Tensor:
    """The L2 norm of a tensor, summed in float64."""
    return tf.sqrt(tf.reduce_sum(tf.square(tf.cast(t, tf.float64))))
