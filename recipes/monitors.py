"""The monitors' older address: a re-export of ``recipes.callbacks.monitors``.

The monitoring callbacks (``ExplosionGuard``, ``UpdateRatioMonitor``, ``ActivationMonitor``,
``FirstLayerWeights``, ``BatchLossRecorder``) and their helpers live in
``recipes/callbacks/monitors.py``; this module keeps ``recipes.monitors.X`` working, with
``callbacks`` standing for ``recipes.callbacks.monitors.monitor_callbacks``. Their warnings
go to the logger ``recipes.callbacks.monitors`` (``recipes.monitors.logger``).
"""

from recipes.callbacks.monitors import (
    ANNEALED,
    EXPLOSION_FACTOR,
    RATIO_HIGH,
    RATIO_LOW,
    ActivationMonitor,
    BatchLossRecorder,
    ExplosionGuard,
    FirstLayerWeights,
    UpdateRatioMonitor,
    batch_loss,
    check_applicable,
    explosion_reason,
    first_kernel_layer,
    logger,
    monitor_callbacks,
    ratio_warning,
    save_image,
    summarize_activations,
    summarize_ratios,
    weights_grid,
)

callbacks = monitor_callbacks

__all__ = [
    "ANNEALED", "EXPLOSION_FACTOR", "RATIO_HIGH", "RATIO_LOW", "ActivationMonitor",
    "BatchLossRecorder", "ExplosionGuard", "FirstLayerWeights", "UpdateRatioMonitor",
    "batch_loss", "callbacks", "check_applicable", "explosion_reason", "first_kernel_layer",
    "logger", "monitor_callbacks", "ratio_warning", "save_image", "summarize_activations",
    "summarize_ratios", "weights_grid",
]
