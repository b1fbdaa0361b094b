"""Stops a run whose loss has not moved: nothing more will come of it.

AUTOTRAINER (Zhang et al., ICSE 2021) checks a run every few epochs and restarts it with a
repair as soon as a problem shows, instead of training a broken network to the end; CS231n
lecture 6: "loss not going down" after a few epochs means the learning rate, the
initialization or the network is wrong. babysit's run as given and its repair attempts use
this callback: a run flat for ``patience`` epochs is cut short, and its repair starts
sooner. Written by hand: Keras's ``EarlyStopping`` stops when a metric stops improving
*after* it has improved; a loss that never moved is not its case (its ``baseline`` needs
the value in advance).
"""

from __future__ import annotations

import math

import keras

__all__ = ["StopWhenFlat", "FLAT_DROP"]

FLAT_DROP = 0.01  # < 1 % below the first epoch's loss: the lecture's "not going down"


class StopWhenFlat(keras.callbacks.Callback):
    """Stops training once the loss has stayed within 1 % of its first epoch for a while.

    Args:
        epochs: the run's planned epochs.
        fraction: wait at least this fraction of them (and 3 epochs) before judging.
    """

    def __init__(self, epochs: int, fraction: float = 0.3):
        super().__init__()
        self.patience = max(3, math.ceil(fraction * int(epochs)))
        self.first: float | None = None
        self.stopped_epoch = 0

    def on_train_begin(self, logs=None):
        self.first, self.stopped_epoch = None, 0

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or not math.isfinite(float(loss)):
            return
        if self.first is None:
            self.first = float(loss)
            return
        if epoch + 1 >= self.patience and float(loss) > (1 - FLAT_DROP) * self.first:
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True
