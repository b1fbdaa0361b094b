"""Stops a run that is going nowhere: its loss has not moved, or it predicts no better than chance.

AUTOTRAINER (Zhang et al., ICSE 2021) checks a run every few epochs and restarts it with a
repair as soon as a problem shows, instead of training a broken network to the end; CS231n
lecture 6: "loss not going down" after a few epochs means the learning rate, the
initialization or the network is wrong. babysit's run as given and its repair attempts use
this callback: a run stuck for ``patience`` epochs is cut short, and its repair starts
sooner. Written by hand: Keras's ``EarlyStopping`` stops when a metric stops improving
*after* it has improved; a loss that never moved, or an accuracy that never left chance,
is not its case (its ``baseline`` needs the value in advance and ignores the noise).
"""

from __future__ import annotations

import math

import keras

__all__ = ["StopWhenFlat", "FLAT_DROP", "chance_bound"]

FLAT_DROP = 0.01  # < 1 % below the first epoch's loss: the lecture's "not going down"


def chance_bound(majority: float, num_val: int) -> float:
    """The best validation accuracy a network that has learnt nothing reaches, noise included.

    A network that predicts one class scores that class's share; the bound adds 3 binomial
    standard errors of a ``num_val``-example split (a false stop about 1 time in 700).

    Args:
        majority: the largest class's share of the labels.
        num_val: the validation examples.
    """
    p = min(max(float(majority), 0.0), 1.0)
    return p + 3.0 * math.sqrt(p * (1.0 - p) / max(int(num_val), 1))


class StopWhenFlat(keras.callbacks.Callback):
    """Stops a run whose loss stayed within 1 % of its first epoch, or whose accuracy is chance.

    Args:
        epochs: the run's planned epochs.
        fraction: wait at least this fraction of them (and 3 epochs) before judging.
        chance: the validation accuracy of a network that has learnt nothing
            (:func:`chance_bound`); None: only the loss is judged. The run stops when its
            best ``val_accuracy`` so far has not passed it.

    Attributes:
        stopped_epoch: the epoch it stopped after (0: it did not).
        why: ``"flat"`` or ``"chance"`` once stopped.
    """

    def __init__(self, epochs: int, fraction: float = 0.3, chance: float | None = None):
        super().__init__()
        self.patience = max(3, math.ceil(fraction * int(epochs)))
        self.chance = chance
        self.first: float | None = None
        self.best_val = -math.inf
        self.stopped_epoch, self.why = 0, ""

    def on_train_begin(self, logs=None):
        self.first, self.best_val, self.stopped_epoch, self.why = None, -math.inf, 0, ""

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        val = logs.get("val_accuracy")
        if val is not None and math.isfinite(float(val)):
            self.best_val = max(self.best_val, float(val))
        loss = logs.get("loss")
        if loss is None or not math.isfinite(float(loss)):
            return
        if self.first is None:
            self.first = float(loss)
            return
        if epoch + 1 < self.patience:
            return
        if float(loss) > (1 - FLAT_DROP) * self.first:
            self._stop(epoch, "flat")
        elif self.chance is not None and -math.inf < self.best_val <= self.chance:
            self._stop(epoch, "chance")

    def _stop(self, epoch: int, why: str) -> None:
        self.stopped_epoch, self.why = epoch + 1, why
        self.model.stop_training = True

    def reason(self) -> str:
        """Why it stopped, in words for the run's summary ("" when it did not)."""
        if self.why == "flat":
            return (f"loss flat for {self.stopped_epoch} epochs (< 1 % below its first "
                    "epoch): stopped, nothing more to gain")
        if self.why == "chance":
            return (f"validation accuracy at chance for {self.stopped_epoch} epochs (best "
                    f"{self.best_val:.4f} ≤ {self.chance:.4f}): stopped, nothing learnt")
        return ""
