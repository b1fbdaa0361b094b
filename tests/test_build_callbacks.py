"""recipes.callbacks.build_callbacks: every callback a run asks for, in the one right order."""

import keras
import numpy as np
import pytest

from recipes import callbacks, configs, pipeline

#: The order of a run with everything on. The writers read what the callbacks before them
#: wrote into logs; HistoryCSV and RecordsWriter come before the backup, so that a killed
#: run's backed-up epoch always has its row and records on disk (bit-for-bit resume).
EVERYTHING = [
    "EpochSeed", "LearningRateLogger", "CropAveraging", "LinearWarmupCallback",
    "ReduceLROnPlateau", "MomentumSchedule", "SwitchOptimizer",
    "ExplosionGuard", "UpdateRatioMonitor", "ActivationMonitor", "FirstLayerWeights",
    "TerminateOnNaN", "Extra",
    "SaveClock", "HistoryCSV", "RecordsWriter", "AtomicBackupAndRestore",
    "BestModelCheckpoint", "TensorBoard",
]


class CropAveraging(keras.callbacks.Callback):
    """Stands in for recipes.tta.CropAveragingEval (layer 5, above the callbacks)."""


class Extra(keras.callbacks.Callback):
    """A caller's callback."""


def _config(**overrides):
    cfg = configs.get("digits_mlp:quick")
    for path, value in overrides.items():
        branch, field = path.split(".")
        cfg[branch][field] = value
    return cfg


def _everything():
    return _config(**{"schedule.name": "plateau", "schedule.warmup_epochs": 1.0,
                      "optimizer.momentum_epochs": 2, "optimizer.switch_to": "momentum",
                      "optimizer.switch_epoch": 2, "monitor.update_ratio_every": 10,
                      "monitor.activations_every": 1, "monitor.first_layer_every": 1,
                      "monitor.tensorboard": True})


def test_a_run_with_everything_on_gets_every_callback_in_order(tmp_path):
    cbs = callbacks.build_callbacks(
        _everything(), steps_per_epoch=7, epoch_seed=pipeline.EpochSeed(),
        workdir=str(tmp_path), probe_x=np.zeros((2, 8, 8, 1)), input_shape=(8, 8, 1),
        initial_loss=2.0, has_val=True, tta_eval=CropAveraging(), extra=[Extra()])
    assert [type(c).__name__ for c in cbs] == EVERYTHING
    guard = cbs[EVERYTHING.index("ExplosionGuard")]
    assert guard.given_initial_loss == 2.0 and guard.factor == callbacks.EXPLOSION_FACTOR
    records = cbs[EVERYTHING.index("RecordsWriter")]
    assert records.cbs is cbs  # it finds the monitors in the run's own list
    assert not list(tmp_path.iterdir())  # building writes nothing


def test_without_a_workdir_only_the_callbacks_that_write_nothing():
    seed = pipeline.EpochSeed()
    cbs = callbacks.build_callbacks(_everything(), steps_per_epoch=7, epoch_seed=seed)
    assert [type(c).__name__ for c in cbs] == EVERYTHING[:2] + EVERYTHING[3:7]
    assert cbs[0] is seed


def test_the_defaults_and_what_is_left_out(tmp_path):
    cfg = _config(**{"monitor.tensorboard": False, "monitor.activations_every": 0})
    cbs = callbacks.build_callbacks(cfg, steps_per_epoch=7, workdir=str(tmp_path))
    assert [type(c).__name__ for c in cbs] == [
        "LearningRateLogger", "ExplosionGuard", "UpdateRatioMonitor", "FirstLayerWeights",
        "TerminateOnNaN", "SaveClock", "HistoryCSV", "RecordsWriter",
        "AtomicBackupAndRestore"]
    clock = cbs[-4]
    assert clock.every == 10.0 and all(c.clock is clock for c in cbs[-3:])


@pytest.mark.parametrize("overrides", [{"train.save_every_seconds": 0.0},
                                       {"train.distribute": "multi_worker"}])
def test_writes_after_every_epoch_without_a_clock(tmp_path, overrides):
    # Under multi_worker every worker must back up the same epochs: no clock.
    cbs = callbacks.build_callbacks(_config(**overrides, **{"monitor.activations_every": 0}),
                                    steps_per_epoch=7, workdir=str(tmp_path))
    names = [type(c).__name__ for c in cbs]
    assert "SaveClock" not in names
    assert cbs[names.index("AtomicBackupAndRestore")].clock is None


@pytest.mark.parametrize("overrides, match", [
    ({"optimizer.switch_to": "adamm"}, "optimizer.switch_to"),
    ({"monitor.activations_every": 1}, "probe_x"),
    ({"train.save_every_seconds": -1.0, "monitor.activations_every": 0},
     "train.save_every_seconds"),
])
def test_bad_fields_fail_while_building(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        callbacks.build_callbacks(_config(**overrides), steps_per_epoch=7,
                                  workdir=str(tmp_path))
