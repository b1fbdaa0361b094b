"""A one-hidden-layer MLP (256 ReLU units) on the real Fashion-MNIST.

Command: ``python -m recipes.train --config=fashion_mlp --workdir=/tmp/fashion_mlp``
Data: ``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``),
``--config.dataset.data_dir=DIR`` with the four IDX files, or tensorflow-datasets.
Runtime: about 6 s per epoch on 2 CPU cores; 10 epochs.
Expected: test accuracy about 0.88 after 10 epochs, >= 0.85 after 5
(``--config.train.epochs=5``). ``fashion_mlp:quick`` trains 2 epochs on 2000 images.
"""

from __future__ import annotations

import ml_collections

from recipes.configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the Fashion-MNIST MLP recipe; ``arg="quick"`` shrinks it for tests."""
    c = base.get_config()
    c.dataset.name = "fashion_mnist"
    c.dataset.preprocess = "standardize"
    c.model.arch = "mlp"
    c.model.hidden = (256,)
    c.model.activation = "relu"
    c.model.init = "he"
    c.model.l2 = 1e-5
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.train.epochs = 10
    c.train.batch_size = 128
    if arg == "quick":
        c.dataset.limit = 2000
        c.train.epochs = 2
    elif arg:
        raise ValueError(f"--config=fashion_mlp:{arg}: unknown argument; use fashion_mlp:quick")
    return c
