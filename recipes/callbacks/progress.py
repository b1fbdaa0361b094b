"""The epoch lines a person reads: loss, accuracy, validation and the learning rate.

The monitors put their numbers into each epoch's ``logs`` (``act_dead_max``,
``grad_norm_ratio``, ``update_ratio_median``, ``exploded``, ...) so that ``history.csv``,
TensorBoard and the report get them; Keras's ``ProgbarLogger`` would print all of them on
every epoch line. :class:`ReadableProgbar` is Keras's own progress bar (``verbose=1``, with
its ETA) and one-line-per-epoch output (``verbose=2``), shown only the metrics a person
reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import keras

__all__ = ["EpochETA", "ReadableProgbar", "readable"]

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


class EpochETA(keras.callbacks.Callback):
    """A line now and then while a quiet run trains: the epoch, the time so far, the ETA.

    For a run whose Keras output is off (babysit's steps print one line each): a user
    waiting on a step of minutes sees it move. At most one line every ``every_seconds``,
    none after the last epoch (the step's own line follows).

    Args:
        echo: where the line goes (``print``, babysit's echo).
        label: what trains, e.g. ``"training"``.
        every_seconds: the least time between two lines.
        clock: the time source (tests pass a fake one).
    """

    def __init__(self, echo: Callable[[str], None], label: str = "training",
                 every_seconds: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.echo, self.label, self.every, self.clock = echo, label, float(every_seconds), clock
        self._start = self._last = 0.0

    def on_train_begin(self, logs=None):
        self._start = self._last = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        done, planned = epoch + 1, int((self.params or {}).get("epochs") or 0)
        now = self.clock()
        if done >= planned or now - self._last < self.every:
            return
        self._last = now
        elapsed = now - self._start
        eta = elapsed / done * (planned - done)
        self.echo(f"{'':8}{self.label}: epoch {done}/{planned}, {elapsed:.0f} s, "
                  f"eta {eta:.0f} s")
