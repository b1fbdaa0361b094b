"""The epoch lines a person reads: loss, accuracy, validation and the learning rate.

The monitors put their numbers into each epoch's ``logs`` (``act_dead_max``,
``grad_norm_ratio``, ``update_ratio_median``, ``exploded``, ...) so that ``history.csv``,
TensorBoard and the report get them; Keras's ``ProgbarLogger`` would print all of them on
every epoch line. :class:`ReadableProgbar` is Keras's own progress bar (``verbose=1``, with
its ETA) and one-line-per-epoch output (``verbose=2``), shown only the metrics a person
reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

__all__ = ["ReadableProgbar", "readable"]

#: Keys the monitors and schedules write for the files, not for the console.
HIDDEN_PREFIXES = ("act_", "grad_norm_", "update_ratio_", "exploded", "momentum")


def readable(logs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The entries of ``logs`` a person reads: the compiled metrics, validation and ``lr``.

    ``learning_rate`` (Keras's own key) is left out where ``lr`` (the rate the epoch used,
    ``LearningRateLogger``) is there.
    """
    logs = dict(logs or {})
    shown = {k: v for k, v in logs.items()
             if not k.removeprefix("val_").startswith(HIDDEN_PREFIXES)}
    if "lr" in shown:
        shown.pop("learning_rate", None)
    return shown


class ReadableProgbar(keras.callbacks.ProgbarLogger):
    """Keras's ``ProgbarLogger`` showing only :func:`readable` metrics.

    Put it last in ``fit``'s callbacks (Keras then adds no progress bar of its own) so that
    it sees the epoch's logs once every other callback has written into them; ``fit``'s
    ``verbose`` chooses the bar (1) or one line per epoch (2).
    """

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, readable(logs))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, readable(logs))
