"""Small single-purpose Keras callbacks (layer 3), and the one function that orders them.

* ``recipes.callbacks.optimizer``: the learning rate used (``LearningRateLogger``) and
  optimizer hyperparameters over a run (``MomentumSchedule``, ``MomentumCycle``,
  ``AveragedWeights``, ``SwitchOptimizer``).
* ``recipes.callbacks.monitors``: the lecture's babysitting measurements (``ExplosionGuard``,
  ``BatchLossRecorder``, ``UpdateRatioMonitor``, ``ActivationMonitor``,
  ``FirstLayerWeights``), written into ``logs``.
* ``recipes.callbacks.gradients``: per-layer gradient norms on a probe batch
  (``GradientNormMonitor``, ``gradient_verdict``): vanishing and exploding gradients.
* ``recipes.callbacks.writers``: the artifact writers (``HistoryCSV``, ``RecordsWriter``,
  ``AtomicBackupAndRestore``, ``BestModelCheckpoint``), every file written atomically, and
  ``SaveClock``, which spaces their writes out in time.
* ``recipes.callbacks.progress``: Keras's progress bar showing what a person reads
  (``ReadableProgbar``).
* :func:`build_callbacks` (``recipes.callbacks.build``): a run's callbacks from the config
  tree, in the order the writers and a bit-for-bit resume need.

The classes are re-exported here: ``recipes.callbacks.ExplosionGuard`` and so on.
"""

from recipes.callbacks.build import build_callbacks
from recipes.callbacks.gradients import GradientNormMonitor, gradient_verdict
from recipes.callbacks.monitors import (
    EXPLOSION_FACTOR,
    ActivationMonitor,
    BatchLossRecorder,
    ExplosionGuard,
    FirstLayerWeights,
    UpdateRatioMonitor,
    monitor_callbacks,
)
from recipes.callbacks.optimizer import (
    AveragedWeights,
    LearningRateLogger,
    MomentumCycle,
    MomentumSchedule,
    SwitchOptimizer,
    inner_optimizer,
    learning_rate_schedule,
    learning_rate_used,
)
from recipes.callbacks.progress import EpochETA, ReadableProgbar, readable
from recipes.callbacks.writers import (
    AtomicBackupAndRestore,
    BestModelCheckpoint,
    HistoryCSV,
    RecordsWriter,
    SaveClock,
    checkpoint_bytes,
    first_loss,
    save_monitor_records,
)

__all__ = [
    "EXPLOSION_FACTOR", "ActivationMonitor", "AtomicBackupAndRestore", "AveragedWeights",
    "BatchLossRecorder", "BestModelCheckpoint", "EpochETA", "ExplosionGuard", "FirstLayerWeights",
    "GradientNormMonitor", "HistoryCSV", "LearningRateLogger", "MomentumCycle", "MomentumSchedule",
    "ReadableProgbar", "RecordsWriter", "SaveClock", "SwitchOptimizer", "UpdateRatioMonitor",
    "build_callbacks", "checkpoint_bytes", "first_loss", "gradient_verdict", "inner_optimizer",
    "learning_rate_schedule", "learning_rate_used", "monitor_callbacks", "readable",
    "save_monitor_records",
]
