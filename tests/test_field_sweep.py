"""Every field of the config tree, set to odd values: accepted and trainable, or a ValueError.

The search for inputs that crash instead of being refused (issue "Nothing lost, ever"): each
leaf field of ``configs/base.py`` (not the procedure's own ``babysit.*``/``search.*`` or the
data source, covered by their own catalogs) takes each value below; the config must either
be refused by the ConfigDict's types (a usage error on the command line), be refused by
``recipes.train.prepare`` with a ``ValueError``, or prepare and train one step. Any other
exception is a crash a user would see as a traceback.
"""

import math
import warnings

import pytest

from recipes import configs, data, train

ODD_VALUES = [-1, 0, 3, 1e9, math.nan, "", "x", (), (0,), True]
SKIPPED = ("babysit.", "search.", "dataset.name", "dataset.data_dir", "train.distribute")


def _leaves(cfg, prefix=""):
    for key in cfg.keys():
        value = cfg[key]
        if hasattr(value, "keys") and key != "activation_kw":
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


FIELDS = [f for f in _leaves(configs.get("base")) if not f.startswith(SKIPPED)]


@pytest.fixture(scope="module")
def splits():
    return data.load("digits", limit=120)


@pytest.mark.slow  # 84 fields x 10 values, one training step each: ~2 min on 2 cores
@pytest.mark.parametrize("path", FIELDS)
def test_odd_values_are_refused_or_train(splits, path):
    branch, field = path.split(".", 1)
    for value in ODD_VALUES:
        cfg = configs.get("digits_mlp:quick")
        cfg.train.verbose = 0
        cfg.train.epochs = 1
        cfg.monitor.tensorboard = False
        try:
            cfg[branch][field] = value
        except (TypeError, ValueError):
            continue  # the ConfigDict's type refuses it: a one-line usage error on the CLI
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p = train.prepare(cfg, splits=splits)
                p.model.fit(p.train_ds.take(1), epochs=1, verbose=0)
        except ValueError:
            continue
        except Exception as e:  # noqa: BLE001 - anything else is the crash we look for
            pytest.fail(f"{path}={value!r} crashed with {type(e).__name__}: {e}")
