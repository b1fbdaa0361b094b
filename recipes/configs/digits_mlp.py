"""The lecture's 2-layer net (50 hidden units, ReLU) on scikit-learn's 8x8 digits.

Command: ``python -m recipes.train --config=digits_mlp --workdir=/tmp/digits_mlp``
Runtime: about 10 s of training on 2 CPU cores (30 epochs of 1293 images).
Expected: test accuracy about 0.96 (>= 0.90 guaranteed by tests/test_train.py).
``--config=digits_mlp:quick`` trains 5 epochs on 300 images for tests.
"""

from __future__ import annotations

import ml_collections

from recipes.configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the digits MLP recipe; ``arg="quick"`` shrinks it for tests."""
    c = base.get_config()
    c.dataset.name = "digits"
    c.dataset.preprocess = "standardize"
    c.model.arch = "mlp"
    c.model.hidden = (50,)
    c.model.activation = "relu"
    c.model.init = "he"
    c.model.l2 = 1e-4
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.train.epochs = 30
    c.train.batch_size = 64
    if arg == "quick":
        c.dataset.limit = 300
        c.train.epochs = 5
    elif arg:
        raise ValueError(f"--config=digits_mlp:{arg}: unknown argument; use digits_mlp:quick")
    return c
