"""Monitoring callbacks: the lecture's babysitting measurements, written into ``logs``.

CS231n "Training Neural Networks II", babysitting the learning process: watch the loss
(stop when it explodes), the ratio of update to weight magnitudes (~1e-3), the per-layer
activation statistics, and the first-layer weights as images. Each monitor is one small
callback in the style of Keras ``TerminateOnNaN``: it samples every N steps or epochs,
writes its numbers into the epoch's ``logs`` (so ``history.csv`` and TensorBoard get them:
put monitors *before* CSV/TensorBoard loggers in the callback list), keeps per-layer
records for the report, and leaves plotting to small pure helpers. ``recipes.monitors``,
this module's older name, re-exports it. Per-layer gradient norms (vanishing/exploding
gradients) are ``recipes.callbacks.gradients``; :func:`monitor_callbacks` builds them too.

Keras 3 quirks these callbacks are written around:

* ``on_train_batch_end`` logs hold the epoch's running *mean* loss (the loss tracker is a
  ``Mean`` weighted by batch size), not the batch's loss: :func:`batch_loss` recovers it.
* A callback that overrides ``on_train_batch_end`` (or ``on_batch_end``) turns off
  ``CallbackList``'s asynchronous batch-end dispatch, so each step's logs are converted to
  Python floats on the main thread (a device sync each step). Only :class:`ExplosionGuard`
  (and :class:`BatchLossRecorder`, where every step's loss is wanted) needs batch-end
  logs; :class:`UpdateRatioMonitor` reads the weights after a sampled step at the *next*
  step's ``on_train_batch_begin`` (nothing changes the weights in between), so on its own
  it keeps the fast path. ``benchmarks/monitor_overhead.py``
  measures what each costs.
* ``fit`` calls ``on_epoch_end`` also for the epoch a batch-level stop interrupted.
* Not Keras but numpy: ``np.linalg.norm`` goes through OpenBLAS, whose idle worker threads
  spin and steal CPU from TensorFlow (+20% epoch time); norms here are plain ufunc sums.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from models import inspect as models_inspect
from recipes import io
from recipes.callbacks.gradients import GradientNormMonitor
from recipes.callbacks.optimizer import learning_rate_schedule, learning_rate_used

__all__ = [
    "EXPLOSION_FACTOR",
    "ExplosionGuard",
    "BatchLossRecorder",
    "UpdateRatioMonitor",
    "ActivationMonitor",
    "FirstLayerWeights",
    "batch_loss",
    "explosion_reason",
    "summarize_ratios",
    "summarize_activations",
    "ratio_warning",
    "weights_grid",
    "first_kernel_layer",
    "save_image",
    "check_applicable",
    "monitor_callbacks",
]

logger = logging.getLogger(__name__)

#: CS231n "Training Neural Networks II": "if the cost is ever > 3× the original cost, break out
#: early". The one default of ``monitor.explosion_factor``, ``ExplosionGuard``,
#: ``BatchLossRecorder`` and the rules that read a curve afterwards.
EXPLOSION_FACTOR = 3.0

#: The lecture's healthy band for ‖Δw‖/‖w‖ ("should be ~1e-3").
RATIO_LOW, RATIO_HIGH = 1e-4, 1e-2


def _epoch_start_step(model: keras.Model) -> int:
    """Optimizer steps taken before this epoch (one device read per epoch)."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


# -- the loss: stop when it explodes ---------------------------------------------------------

def batch_loss(mean: float, count: int, prev_mean: float, prev_count: int) -> float:
    """Recovers the loss of the last batch (group) from two running means of the epoch.

    Keras 3 passes ``on_train_batch_end`` the epoch's running mean ``m_k`` over the first
    ``k`` batches. With equal batch sizes the k-th batch's loss is exactly
    ``k·m_k − (k−1)·m_{k−1}``; with ``steps_per_execution > 1`` the hook sees only every
    group's end, and ``(n·m_n − p·m_p)/(n − p)`` is the mean loss over the group's batches.
    Keras weights the mean by batch size, so for a short last batch of size ``b' < b`` the
    value is pulled towards the running mean by ``b'/b``: an underestimate of a jump, never
    a false alarm.

    Args:
        mean: running mean ``m_n`` after ``count`` batches of this epoch.
        count: ``n`` batches seen this epoch (``batch + 1`` in the hook).
        prev_mean: running mean ``m_p`` at the previous call (anything when ``prev_count`` is 0).
        prev_count: ``p`` batches seen at the previous call of this epoch (0 at its start).

    Returns:
        The (group's mean) batch loss; NaN or inf if ``mean`` is.
    """
    if count <= prev_count:
        raise ValueError(f"count must grow: count={count}, prev_count={prev_count}")
    if prev_count == 0:
        return float(mean)
    return (count * float(mean) - prev_count * float(prev_mean)) / (count - prev_count)


def explosion_reason(loss: float, initial: float | None, factor: float) -> str | None:
    """Decides whether training has blown up (CS231n: "cost > 3× original → break out early").

    Args:
        loss: the current batch loss.
        initial: the first finite batch loss of the run (None before one was seen).
        factor: the allowed multiple of ``initial``; 0 turns the ratio rule off.

    Returns:
        None while healthy, else ``"nan/inf"`` or ``"loss > F× initial"`` followed by the
        numbers in parentheses.
    """
    if not math.isfinite(loss):
        return f"nan/inf (loss {loss})"
    if factor > 0 and initial is not None and initial > 0 and loss > factor * initial:
        return f"loss > {factor:g}× initial ({loss:.4g} > {factor:g} × {initial:.4g})"
    return None


class ExplosionGuard(keras.callbacks.Callback):
    """Stops training when the loss is NaN/inf or exceeds ``factor`` × the first loss.

    CS231n "Training Neural Networks II" (hyperparameter search): "if the cost is ever
    > 3× the original cost, break out early". Each batch's loss is recovered from the
    running mean in the logs (:func:`batch_loss`, no extra device read), so a rising loss is
    caught at the step it happens. On a stop the model gets back the best weights so far:
    those at the end of the epoch with the lowest training loss, or the weights at the start
    of training if no epoch finished (the optimizer's slots are not rolled back).

    The "original cost" is the first batch's loss of a ``fit`` that starts at epoch 0. A
    ``fit`` that continues a run (``initial_epoch > 0``, e.g. resumed by
    ``BackupAndRestore``) starts from a trained model whose single batch losses can be
    several times its first one, so there the ratio rule needs ``initial_loss`` (the
    original run's ``initial_loss``, saved by the caller); without it only the NaN/inf rule
    applies.

    Args:
        factor: stop when a batch loss exceeds ``factor`` × the original loss; 0 turns this
            rule off (NaN/inf still stops).
        initial_loss: the original loss to compare with (None: measured, see above).

    Attributes:
        stopped: whether this callback stopped the run.
        reason: ``"nan/inf (...)"`` or ``"loss > 3× initial (a > 3 × b)"``; "" if not stopped.
        stopped_step: global step (0-based optimizer step) of the batch that blew up.
        initial_loss: the original loss (given, or the first finite batch loss).
        best_epoch: 1-based epoch whose weights are kept (0 = the initial weights).

    Logs ``exploded`` (1.0 in the epoch it stopped, else 0.0) at every epoch end.
    """

    def __init__(self, factor: float = EXPLOSION_FACTOR, initial_loss: float | None = None):
        super().__init__()
        factor = float(factor)
        if not math.isfinite(factor) or factor < 0:
            raise ValueError(f"ExplosionGuard factor must be >= 0 (0 = only NaN/inf), got "
                             f"{factor}")
        if initial_loss is not None and not (math.isfinite(initial_loss) and initial_loss > 0):
            raise ValueError(f"ExplosionGuard initial_loss must be finite and > 0, got "
                             f"{initial_loss}")
        self.factor = factor
        self.given_initial_loss = initial_loss
        self._reset()

    def _reset(self) -> None:
        self.stopped = False
        self.reason = ""
        self.stopped_step: int | None = None
        self.initial_loss: float | None = self.given_initial_loss
        self._measure_initial = False
        self.best_epoch = 0
        self.best_loss = math.inf
        self._best_weights: list[np.ndarray] | None = None
        self._offset = 0
        self._prev = (0.0, 0)

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_begin(self, epoch, logs=None):
        if self._best_weights is None:  # the fit's first epoch
            # Here, not in on_train_begin: BackupAndRestore may restore weights there.
            self._best_weights = self.model.get_weights()
            self._measure_initial = self.initial_loss is None and epoch == 0
        self._offset = _epoch_start_step(self.model)
        self._prev = (0.0, 0)

    def on_train_batch_end(self, batch, logs=None):
        mean = (logs or {}).get("loss")
        if self.stopped or mean is None:
            return
        count = batch + 1  # ``fit`` passes a group's last batch index
        loss = batch_loss(float(mean), count, *self._prev)
        self._prev = (float(mean), count)
        if self._measure_initial and math.isfinite(loss):
            self.initial_loss, self._measure_initial = loss, False
        reason = explosion_reason(loss, self.initial_loss, self.factor)
        if reason is None:
            return
        self.stopped, self.stopped_step = True, self._offset + batch
        self.reason = f"{reason} at step {self.stopped_step}"
        self.model.stop_training = True
        self.model.set_weights(self._best_weights)
        logger.warning("ExplosionGuard: stopping, %s; restored the weights of %s", self.reason,
                       f"epoch {self.best_epoch}" if self.best_epoch else "the start")

    def on_epoch_end(self, epoch, logs=None):
        exploded = self.stopped and (self.stopped_step or 0) >= self._offset  # this epoch
        if logs is not None:
            logs["exploded"] = float(exploded)
        if self.stopped:
            return
        loss = float((logs or {}).get("loss", math.nan))
        if math.isfinite(loss) and loss < self.best_loss:
            self.best_loss, self.best_epoch = loss, epoch + 1
            self._best_weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        self._best_weights = None  # free the copy


class BatchLossRecorder(keras.callbacks.Callback):
    """Records every step's loss, recovered from Keras 3's running epoch mean.

    The one batch-loss recorder (``recipes.lr_range`` sweeps, ``recipes.babysit``'s
    ``batch_losses.json``): each loss comes from the logs' running mean by
    :func:`batch_loss` (no extra device read), as in :class:`ExplosionGuard`. Stops training
    on a NaN/inf loss, or once a loss exceeds ``explode`` × ``initial``
    (:func:`explosion_reason`, the lecture's "break out early"). In ``evaluate`` it records
    the test batches (the same running mean); in ``fit`` only the training batches, not
    those of the validation pass at each epoch's end.

    Args:
        initial: the loss the explosion rule compares against (None: no ratio rule).
        explode: the factor (lecture: 3); 0 turns the ratio rule off (NaN/inf still stops).

    Attributes:
        losses: one loss per step (per group of steps with ``steps_per_execution > 1``).
        stopped: "" while healthy, else the first :func:`explosion_reason`.
    """

    def __init__(self, initial: float | None = None, explode: float = EXPLOSION_FACTOR):
        super().__init__()
        self.initial, self.explode = initial, float(explode)
        self.losses: list[float] = []
        self.stopped = ""
        self._prev = (0.0, 0)  # (running mean, batches) at the previous call of this pass
        self._fitting = False

    def on_train_begin(self, logs=None):
        self._fitting = True

    def on_train_end(self, logs=None):
        self._fitting = False

    def on_train_batch_end(self, batch, logs=None):
        self._record(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        if not self._fitting:  # ``fit``'s validation pass is not a training step
            self._record(batch, logs)

    def _record(self, batch: int, logs: dict | None) -> None:
        mean, count = float((logs or {}).get("loss", math.nan)), int(batch) + 1
        if count <= self._prev[1]:  # a new epoch or evaluation: a new running mean
            self._prev = (0.0, 0)
        loss = batch_loss(mean, count, *self._prev)
        self._prev = (mean, count)
        self.losses.append(loss)
        reason = explosion_reason(loss, self.initial, self.explode)
        if reason is not None and not self.stopped:
            self.stopped = reason
        if self.stopped:
            self.model.stop_training = True


# -- update / weight ratio ------------------------------------------------------------------

def summarize_ratios(samples: Sequence[Mapping[str, float]]) -> tuple[float, float, float]:
    """Per tensor the median ratio over time, then min, median and max over tensors.

    Args:
        samples: one ``{tensor name: ‖Δw‖/‖w‖}`` per sampled step.

    Returns:
        ``(min, median, max)``; NaNs when there are no samples.
    """
    per_tensor: dict[str, list[float]] = {}
    for sample in samples:
        for name, ratio in sample.items():
            per_tensor.setdefault(name, []).append(float(ratio))
    if not per_tensor:
        return math.nan, math.nan, math.nan
    medians = np.array([np.median(v) for v in per_tensor.values()])
    return float(medians.min()), float(np.median(medians)), float(medians.max())


ANNEALED = 0.1
"""Below this fraction of its peak the learning rate counts as annealed by its schedule."""


def ratio_warning(median: float, low: float = RATIO_LOW, high: float = RATIO_HIGH) -> str | None:
    """The lecture's rule of thumb: ‖Δw‖/‖w‖ should be about 1e-3.

    Args:
        median: the median update/weight ratio over layers.
        low: below this the learning rate is probably too low.
        high: above this the learning rate is probably too high.

    Returns:
        None inside ``[low, high]`` (or for NaN), else a one-line verdict.
    """
    if not math.isfinite(median):
        return None
    if median < low:
        return (f"update/weight ratio {median:.2e} < {low:g}: learning rate probably too low "
                "(CS231n: ~1e-3)")
    if median > high:
        return (f"update/weight ratio {median:.2e} > {high:g}: learning rate probably too high "
                "(CS231n: ~1e-3)")
    return None


def _norm(a: np.ndarray) -> float:
    """‖a‖₂ without BLAS.

    ``np.linalg.norm`` calls OpenBLAS ``dot``, whose worker threads then spin-wait and take
    CPU from TensorFlow's: measured +20% epoch CPU time for two samples per epoch. The
    squares are summed in float64.
    """
    return math.sqrt(float(np.sum(np.square(a), dtype=np.float64)))


class UpdateRatioMonitor(keras.callbacks.Callback):
    """Samples ‖Δw‖/‖w‖ of one update for every trainable tensor, every ``every`` steps.

    CS231n "Neural Networks 3" (ratio of weights:updates): the update magnitudes should be
    about 1e-3 of the weight magnitudes; much lower means a too-low learning rate, much
    higher a too-high one. At a sampled step the weights are copied in
    ``on_train_batch_begin`` and compared in the next step's ``on_train_batch_begin`` (or at
    the epoch's end): the same as at the sampled step's ``on_train_batch_end``, without
    overriding that hook (which would turn off Keras's asynchronous batch-end dispatch).
    Steps that are not sampled cost one integer comparison. With ``steps_per_execution``
    k > 1 a sample covers k updates.

    Tensors whose norm is 0 before the update (zero-initialized biases at step 0) are
    skipped at that sample: their ratio is undefined, and an epsilon would make it huge.

    Attributes:
        records: one ``{"step", "epoch", "ratios": {tensor path: ratio}}`` per sample.
        warning: the one warning given this run ("" if none).

    Logs ``update_ratio_min``, ``update_ratio_median``, ``update_ratio_max`` at each epoch
    end: per tensor the median over the epoch's samples, then min/median/max over tensors
    (NaN in an epoch with no sample). Warns once per run (``logging``) when an epoch's
    median leaves ``[low, high]``, from epoch ``settle + 1`` on: in the first epoch Adam's
    first update is ±lr for every weight (ratio ~2e-2 for a He-initialized 784-256 layer at
    lr 1e-3) and zero-initialized biases start from 0, so it would warn about nothing.
    Nor does it call the rate "too low" while the schedule has annealed it below
    ``ANNEALED`` x its peak so far (the end of a cosine or step schedule): small updates are
    then the schedule's intent, not a mistake. "Too high" is always reported.

    Args:
        every: steps between samples (the first at step 0).
        low: the lower end of the healthy band.
        high: the upper end of the healthy band.
        settle: epochs whose median is logged but not judged.
    """

    def __init__(self, every: int = 100, low: float = RATIO_LOW, high: float = RATIO_HIGH,
                 settle: int = 1):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"UpdateRatioMonitor every must be >= 1 step, got {every}")
        if not 0 < low < high:
            raise ValueError(f"need 0 < low < high, got low={low}, high={high}")
        self.every, self.low, self.high = int(every), float(low), float(high)
        self.settle = int(settle)
        self.records: list[dict[str, Any]] = []
        self.warning = ""

    def on_train_begin(self, logs=None):
        self.records, self.warning = [], ""
        self._peak_lr = 0.0
        self._next = 0  # next global step to sample
        self._pending: tuple[int, list[np.ndarray]] | None = None  # (step, weights before)
        self._epoch_samples: list[dict[str, float]] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._offset = epoch + 1, _epoch_start_step(self.model)
        # After a resume, the next multiple of `every`: the samples an uninterrupted run takes.
        self._next = max(self._next, -(-self._offset // self.every) * self.every)
        self._epoch_samples = []

    def on_train_batch_begin(self, batch, logs=None):
        if self._pending is not None:
            self._finish()
        step = self._offset + batch
        if step >= self._next:
            self._next = step - step % self.every + self.every
            self._pending = (step, self._snapshot())

    def _snapshot(self) -> list[np.ndarray]:
        # float32 copies: the difference of two nearby float32 values is exact, and the
        # norms sum in float64; a float64 copy costs 4x the time.
        return [np.array(v.numpy(), copy=True) for v in self.model.trainable_weights]

    def _finish(self) -> None:
        step, before = self._pending
        self._pending = None
        ratios = {}
        for v, w0 in zip(self.model.trainable_weights, before):
            norm = _norm(w0)
            if norm > 0:
                ratios[v.path] = _norm(v.numpy() - w0) / norm
        self.records.append({"step": step, "epoch": self._epoch, "ratios": ratios})
        self._epoch_samples.append(ratios)

    def on_epoch_end(self, epoch, logs=None):
        if self._pending is not None:
            if self.model.stop_training:  # a batch-level stop may have restored weights
                self._pending = None
            else:
                self._finish()
        lo, med, hi = summarize_ratios(self._epoch_samples)
        if logs is not None:
            logs.update(update_ratio_min=lo, update_ratio_median=med, update_ratio_max=hi)
        message = ratio_warning(med, self.low, self.high) if epoch >= self.settle else None
        lr, peak = self._learning_rates()
        if message and med < self.low and lr is not None and lr < ANNEALED * peak:
            message = None  # annealed on purpose
        if message and not self.warning:
            self.warning = f"epoch {epoch + 1}: {message}"
            logger.warning("UpdateRatioMonitor: %s", self.warning)

    def on_train_end(self, logs=None):
        self._pending = None

    def _learning_rates(self) -> tuple[float | None, float]:
        """The rate of the last step and the highest so far.

        On a run's first call (a resumed run's too) a schedule's peak over the steps already
        taken is sampled at 64 points, so a run resumed after the peak still knows it.
        """
        opt = getattr(self.model, "optimizer", None)
        if opt is None:
            return None, self._peak_lr
        lr = learning_rate_used(opt)
        schedule = learning_rate_schedule(opt)
        if not self._peak_lr and schedule is not None:
            last = max(int(keras.ops.convert_to_numpy(opt.iterations)) - 1, 0)
            self._peak_lr = max(float(keras.ops.convert_to_numpy(schedule(int(t))))
                                for t in np.linspace(0, last, 64))
        self._peak_lr = max(self._peak_lr, lr)
        return lr, self._peak_lr


# -- activations on a fixed probe batch ------------------------------------------------------

class ActivationMonitor(keras.callbacks.Callback):
    """Activation statistics of every hidden layer on a fixed probe batch, every N epochs.

    CS231n "Training Neural Networks I" (weight initialization): look at the per-layer
    activation histograms; collapsing stds, saturated tanh/sigmoid units or dead ReLUs mean
    a bad initialization or learning rate. Uses ``models.inspect.activation_stats``.

    Args:
        probe_x: the fixed probe inputs (e.g. 256 training images, preprocessed).
        every: measure at the end of epochs E (1-based) with ``E % every == 0``.
        log_dir: if set, a TensorBoard directory (its own, e.g. ``tensorboard/activations``)
            for per-layer histograms ``activations/<layer>``, step = epoch, written from the
            stats' bins and closed in ``on_train_end``.
        bins: histogram bins per layer.

    Attributes:
        records: one ``{"epoch": E, "layers": [per-layer stats]}`` per measured epoch.

    Logs ``act_mean`` (mean of the per-layer means), ``act_std_min`` (smallest per-layer
    std), ``act_dead_max`` and ``act_saturated_max`` (largest per-layer fractions) at every
    epoch end (NaN in epochs not measured).
    """

    KEYS = ("act_mean", "act_std_min", "act_dead_max", "act_saturated_max")

    def __init__(self, probe_x: Any, every: int = 1, log_dir: str | None = None, bins: int = 30):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"ActivationMonitor every must be >= 1 epoch, got {every}")
        self.probe_x = probe_x
        self.every, self.log_dir, self.bins = int(every), log_dir, int(bins)
        self.records: list[dict[str, Any]] = []
        self._writer = None

    def on_train_begin(self, logs=None):
        if not models_inspect.activation_layers(self.model):  # fail now, not after an epoch
            raise ValueError(f"ActivationMonitor: model {self.model.name!r} has no activation "
                             f"layers named {models_inspect.ACT_PREFIX!r}* (build it with "
                             "models.build)")
        self.records = []
        if self.log_dir:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        values = dict.fromkeys(self.KEYS, math.nan)
        if (epoch + 1) % self.every == 0:
            layers = models_inspect.activation_stats(self.model, self.probe_x, bins=self.bins)
            self.records.append({"epoch": epoch + 1, "layers": layers})
            values = summarize_activations(layers)
            if self._writer is not None:
                self._write_histograms(layers, epoch + 1)
        if logs is not None:
            logs.update(values)

    def _write_histograms(self, layers: Sequence[Mapping[str, Any]], step: int) -> None:
        from tensorboard.plugins.histogram import metadata

        # The stats already hold each layer's histogram: write it as TensorBoard's own
        # histogram tensor, rows (left edge, right edge, count), exactly what
        # tf.summary.histogram would compute from the raw activations (millions of values
        # for a convnet) with the same bins.
        with self._writer.as_default():
            for s in layers:
                counts = np.asarray(s["hist"]["counts"], dtype=np.float64)
                edges = np.asarray(s["hist"]["edges"], dtype=np.float64)
                tensor = np.stack([edges[:-1], edges[1:], counts], axis=1)
                tf.summary.write(f"activations/{s['name']}", tensor, step=step,
                                 metadata=metadata.create_summary_metadata("", ""))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def summarize_activations(layers: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Reduces per-layer activation statistics to the four logged numbers.

    Args:
        layers: ``models.inspect.activation_stats`` output (``mean, std, dead, saturated``).

    Returns:
        ``act_mean, act_std_min, act_dead_max, act_saturated_max`` (NaN without layers).
    """
    if not layers:
        return dict.fromkeys(ActivationMonitor.KEYS, math.nan)
    return {
        "act_mean": float(np.mean([s["mean"] for s in layers])),
        "act_std_min": float(min(s["std"] for s in layers)),
        "act_dead_max": float(max(s["dead"] for s in layers)),
        "act_saturated_max": float(max(s["saturated"] for s in layers)),
    }


# -- first-layer weights as images ------------------------------------------------------------

def first_kernel_layer(model: keras.Model) -> keras.layers.Layer:
    """The first layer (depth first through nested models) with a Dense or Conv2D kernel.

    Raises:
        ValueError: if the model has none.
    """
    stack = list(reversed(model.layers))
    while stack:
        layer = stack.pop()
        kernel = getattr(layer, "kernel", None)
        if kernel is not None and len(kernel.shape) in (2, 4):
            return layer
        stack.extend(reversed(getattr(layer, "layers", [])))
    raise ValueError(f"model {model.name!r} has no Dense or Conv2D layer with a kernel")


def _tile_normalize(tiles: np.ndarray) -> np.ndarray:
    """Scales every tile to [0, 1] on its own (CS231n ``visualize_grid``)."""
    axes = tuple(range(1, tiles.ndim))
    low = tiles.min(axis=axes, keepdims=True)
    span = tiles.max(axis=axes, keepdims=True) - low
    return (tiles - low) / np.where(span > 0, span, 1.0)


def weights_grid(kernel: Any, input_shape: Sequence[int] | None = None, *,
                 pad: int = 1) -> np.ndarray:
    """Lays out a first-layer kernel as one image (CS231n: "visualize the first-layer weights").

    * Conv kernels ``(kh, kw, C, F)``: one ``kh×kw`` tile per filter, RGB when ``C == 3``,
      else one grey tile per filter and input channel.
    * Dense kernels ``(fan_in, units)`` with ``input_shape = (H, W, C)`` and
      ``fan_in == H·W·C``: each unit's weights reshaped to the input image (row-major, as
      ``Flatten`` does), tiled like conv filters.
    * Other Dense kernels: the ``units × fan_in`` matrix itself.

    Tiles are scaled to [0, 1] each and laid out ``ceil(sqrt(n))`` per row with ``pad``
    black pixels between them.

    Args:
        kernel: the layer's kernel.
        input_shape: ``(H, W, C)`` of the model input, for Dense kernels.
        pad: pixels between tiles.

    Returns:
        A float image in [0, 1]: ``(height, width)`` grey or ``(height, width, 3)`` RGB.
    """
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim == 4:
        tiles = k.transpose(3, 0, 1, 2)  # (F, kh, kw, C)
    elif k.ndim == 2:
        fan_in, units = k.shape
        shape = tuple(int(d) for d in input_shape) if input_shape is not None else ()
        if len(shape) != 3 or int(np.prod(shape)) != fan_in:
            return _tile_normalize(k.T[None])[0]
        tiles = k.T.reshape(units, *shape)  # (units, H, W, C)
    else:
        raise ValueError(f"kernel must be 2-D (Dense) or 4-D (Conv2D), got shape {k.shape}")
    n, h, w, c = tiles.shape
    if c != 3:  # grey: one tile per (filter, channel)
        tiles = tiles.transpose(0, 3, 1, 2).reshape(n * c, h, w, 1)
    tiles = _tile_normalize(tiles)
    n = len(tiles)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * (h + pad) - pad, cols * (w + pad) - pad, tiles.shape[-1]))
    for i, tile in enumerate(tiles):
        r, q = divmod(i, cols)
        grid[r * (h + pad):r * (h + pad) + h, q * (w + pad):q * (w + pad) + w] = tile
    return grid[..., 0] if grid.shape[-1] == 1 else grid


def save_image(path: str, image: np.ndarray, *, min_size: int = 256) -> None:
    """Writes a [0, 1] image as 8-bit PNG atomically, enlarged (nearest) to ``min_size`` pixels.

    Pillow (matplotlib's own image writer) directly, in grey ("L") or RGB: about 10× faster
    than ``matplotlib.image.imsave``, which colour-maps to RGBA first.

    Args:
        path: the ``.png`` file.
        image: ``(H, W)`` grey or ``(H, W, 3)`` RGB in [0, 1].
        min_size: the longer side is scaled up by a whole factor to at least this.
    """
    from PIL import Image

    scale = max(1, math.ceil(min_size / max(image.shape[:2])))
    big = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
    pixels = (np.clip(big, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    with io.atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


class FirstLayerWeights(keras.callbacks.Callback):
    """Saves the first Dense/Conv layer's weights as an image grid every N epochs.

    CS231n "Training Neural Networks I/II": nice first-layer filters are smooth and varied;
    noisy ones mean too little regularization or training, identical ones a symmetry that
    never broke. Writes ``directory/first_layer_epoch{E:03d}.png`` at the end of epochs E
    (1-based) with ``E % every == 0`` (:func:`weights_grid`, :func:`save_image`).

    Args:
        directory: where the PNGs go (created).
        every: epochs between images.
        input_shape: ``(H, W, C)`` to show Dense rows as images; None = the model's input
            shape when it is ``(H, W, C)``.

    Attributes:
        paths: the files written this run.
    """

    def __init__(self, directory: str, every: int = 5,
                 input_shape: Sequence[int] | None = None):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"FirstLayerWeights every must be >= 1 epoch, got {every}")
        self.directory, self.every = str(directory), int(every)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.paths: list[str] = []

    def on_train_begin(self, logs=None):
        os.makedirs(self.directory, exist_ok=True)
        self.paths = []
        self._layer = first_kernel_layer(self.model)
        self._shape = self.input_shape
        if self._shape is None:
            inputs = getattr(self.model, "inputs", None)  # None for subclassed models
            model_shape = tuple(inputs[0].shape[1:]) if inputs else ()
            if len(model_shape) == 3 and all(d is not None for d in model_shape):
                self._shape = model_shape

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        path = os.path.join(self.directory, f"first_layer_epoch{epoch + 1:03d}.png")
        save_image(path, weights_grid(self._layer.kernel.numpy(), self._shape))
        self.paths.append(path)


def check_applicable(cfg: Any, model: keras.Model) -> None:
    """Refuses monitors that the ``monitor`` config turns on but ``model`` cannot feed.

    Called before a run writes anything, so that a monitor fails before the first epoch,
    not after the config and preprocessing are on disk.

    Raises:
        ValueError: naming the field, what the model lacks and the flag that turns it off.
    """
    c = dict(cfg.items()) if hasattr(cfg, "items") else dict(cfg)
    every = int(c.get("activations_every", 0))
    if every > 0 and not models_inspect.activation_layers(model):
        raise ValueError(f"monitor.activations_every={every}: model {model.name!r} has no "
                         f"hidden activation layers (named {models_inspect.ACT_PREFIX!r}*) to "
                         "watch, e.g. a linear classifier with model.hidden=(); set "
                         "--config.monitor.activations_every=0")
    every = int(c.get("first_layer_every", 0))
    if every > 0:
        try:
            first_kernel_layer(model)
        except ValueError as e:
            raise ValueError(f"monitor.first_layer_every={every}: {e}; set "
                             "--config.monitor.first_layer_every=0") from None


# -- from the config tree ----------------------------------------------------------------------

def monitor_callbacks(cfg: Any, *, probe_x: Any = None, probe_y: Any = None,
                      workdir: str | None = None, input_shape: Sequence[int] | None = None,
                      initial_loss: float | None = None) -> list[keras.callbacks.Callback]:
    """The monitors the ``monitor`` config branch turns on, in a sensible order.

    Args:
        cfg: the ``monitor`` branch (``explosion_factor``, ``update_ratio_every``,
            ``gradient_norms_every``, ``activations_every``, ``first_layer_every``,
            ``tensorboard``), a ConfigDict or mapping; a 0 turns a monitor off
            (``explosion_factor=0`` keeps the NaN/inf rule).
        probe_x: the fixed probe batch for ``ActivationMonitor`` (required when it is on)
            and ``GradientNormMonitor``.
        probe_y: the probe's targets, in the form the compiled loss takes, for
            ``GradientNormMonitor`` (``recipes.callbacks.gradients``); without them (or
            ``probe_x``) that monitor is left out with a warning.
        workdir: the run's directory: images go to ``workdir/plots/first_layer``, activation
            histograms to ``workdir/tensorboard/activations`` (when ``tensorboard``).
        input_shape: ``(H, W, C)`` for Dense first-layer images (None: the model's input).
        initial_loss: ``ExplosionGuard``'s original loss, for a resumed run.

    Returns:
        The callbacks; put them before the CSV/TensorBoard loggers.
    """
    c = dict(cfg.items()) if hasattr(cfg, "items") else dict(cfg)
    out: list[keras.callbacks.Callback] = [
        ExplosionGuard(float(c.get("explosion_factor", EXPLOSION_FACTOR)),
                       initial_loss=initial_loss)]
    if int(c.get("update_ratio_every", 0)) > 0:
        out.append(UpdateRatioMonitor(int(c["update_ratio_every"])))
    every = int(c.get("gradient_norms_every", 0))
    if every > 0 and (probe_x is None or probe_y is None):
        logger.warning("monitor.gradient_norms_every=%d: no probe batch with labels "
                       "(probe_x, probe_y) was given; gradient norms are not measured", every)
    elif every > 0:
        out.append(GradientNormMonitor(probe_x, probe_y, every=every))
    if int(c.get("activations_every", 0)) > 0:
        if probe_x is None:
            raise ValueError("monitor.activations_every > 0 needs probe_x (a fixed input batch)")
        log_dir = (os.path.join(workdir, "tensorboard", "activations")
                   if workdir and c.get("tensorboard", False) else None)
        out.append(ActivationMonitor(probe_x, every=int(c["activations_every"]),
                                     log_dir=log_dir))
    if int(c.get("first_layer_every", 0)) > 0:
        if not workdir:
            raise ValueError("monitor.first_layer_every > 0 needs a workdir for the images")
        out.append(FirstLayerWeights(os.path.join(workdir, "plots", "first_layer"),
                                     every=int(c["first_layer_every"]), input_shape=input_shape))
    return out
