"""The lecture's weight-initialization experiment: activation statistics of a 10-layer net.

Lecture: "Weight initialization" (CS231n, Training Neural Networks I): 1000 unit-Gaussian
inputs of dimension 500 through 10 Dense layers of 500 units, no normalization, and the
per-layer mean/std and histograms of the activations for five settings:

* tanh + small (0.01 * randn): activations collapse to zero (layer-10 std < 1e-4);
* tanh + large (randn): almost every unit saturates at +-1;
* tanh + xavier (randn / sqrt(fan_in)): the std shrinks slowly, stays usable;
* relu + xavier: the std halves layer after layer (>= 10x smaller by layer 10);
* relu + he (randn / sqrt(fan_in / 2)): the std holds.

Then the same five with batch normalization before every activation (Ioffe & Szegedy 2015),
which keeps all of them well scaled. BN is measured in *training* mode, i.e. each layer is
normalized with the statistics of this batch of 1000 examples: that is what BN does while
training, and in inference mode a fresh BN layer (moving mean 0, variance 1) would be an
identity and show nothing.

Command: ``python -m recipes.experiments.init_stats --workdir=/tmp/init_stats [--quick]``
(about 10 s on 2 CPU cores; ``--quick``: 100 units, 200 examples). Writes ``results.json``
and ``init_stats.png`` into the workdir, atomically.
"""

from __future__ import annotations

import os
import sys

import numpy as np

import models
from models import inspect
from recipes import cli, io

CASES = (
    ("tanh", "small"),
    ("tanh", "large"),
    ("tanh", "xavier"),
    ("relu", "xavier"),
    ("relu", "he"),
)
NORMS = ("none", "batch")


def label(activation: str, init: str, norm: str) -> str:
    """The run's name in results.json and on the plot, e.g. ``tanh+xavier+batch``."""
    return f"{activation}+{init}" + ("" if norm == "none" else f"+{norm}")


def run_experiment(
    *,
    layers: int = 10,
    units: int = 500,
    examples: int = 1000,
    cases=CASES,
    norms=NORMS,
    init_scale: float = 0.01,
    seed: int = 0,
    bins: int = 30,
) -> dict:
    """Measures per-layer activation statistics for every (activation, init) x norm.

    Args:
        layers: Hidden layers (10 in the lecture).
        units: Units per hidden layer, also the input dimension (500).
        examples: Unit-Gaussian input rows (1000).
        cases: ``(activation, init)`` pairs.
        norms: ``none`` and/or a norm name (``batch``), placed before every activation.
        init_scale: Std of the ``small`` init.
        seed: Seeds the inputs and the weights.
        bins: Histogram bins per layer.

    Returns:
        ``{"setup": {...}, "runs": {label: {"activation", "init", "norm", "stats": [...]}},
        "summary": {label: {"first_std", "last_std", "last_mean", "last_saturated",
        "last_dead", "std_ratio"}}}`` with ``stats`` as ``models.inspect.activation_stats``
        returns it (one record per layer) and ``std_ratio = first_std / last_std``.
    """
    import keras


    x = np.random.default_rng(seed).standard_normal((examples, units)).astype("float32")
    runs, summary = {}, {}
    for norm in norms:
        for activation, init in cases:
            keras.utils.set_random_seed(seed)  # every run draws its weights from the same seed
            model = models.build(
                {
                    "arch": "mlp",
                    "hidden": (units,) * layers,
                    "activation": activation,
                    "init": init,
                    "init_scale": init_scale,
                    "norm": norm,
                    "norm_position": "before_activation",
                },
                (units,),
                10,
            )
            # training=True: BN normalizes with this batch's statistics (see module docstring).
            stats = inspect.activation_stats(model, x, bins=bins, training=norm != "none")
            name = label(activation, init, norm)
            runs[name] = {"activation": activation, "init": init, "norm": norm, "stats": stats}
            first, last = stats[0], stats[-1]
            summary[name] = {
                "first_std": first["std"],
                "last_std": last["std"],
                "last_mean": last["mean"],
                "last_saturated": last["saturated"],
                "last_dead": last["dead"],
                "std_ratio": first["std"] / max(last["std"], 1e-30),
            }
            keras.backend.clear_session()
    setup = {
        "layers": layers,
        "units": units,
        "examples": examples,
        "init_scale": init_scale,
        "seed": seed,
        "norm_position": "before_activation",
        "batchnorm_mode": "training (batch statistics)",
    }
    return {"setup": setup, "runs": runs, "summary": summary}


def write(results: dict, workdir: str) -> None:
    """Writes ``results.json`` and ``init_stats.png`` into ``workdir`` atomically."""
    os.makedirs(workdir, exist_ok=True)
    io.write_json(os.path.join(workdir, "results.json"), results)
    inspect.plot_activation_stats(
        {name: run["stats"] for name, run in results["runs"].items()},
        os.path.join(workdir, "init_stats.png"),
    )


def main(argv: list[str]) -> None:
    """Runs the experiment with the flags' settings and prints the summary table."""
    from absl import flags


    f = flags.FLAGS
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}; every option is a --flag=value")
    if not f.workdir:
        cli.fail("--workdir is required: the directory for results.json and init_stats.png")
    kw = {"units": 100, "examples": 200} if f.quick else {}
    results = run_experiment(seed=f.seed, **kw)
    write(results, f.workdir)
    print(f"{'run':<22}{'std L1':>10}{'std L10':>12}{'saturated':>11}{'dead':>7}")
    for name, s in results["summary"].items():
        print(
            f"{name:<22}{s['first_std']:>10.3g}{s['last_std']:>12.3g}"
            f"{s['last_saturated']:>11.2f}{s['last_dead']:>7.2f}"
        )
    print(f"wrote {f.workdir}/results.json and init_stats.png")


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("workdir", None, "Directory for results.json and init_stats.png.")
    flags.DEFINE_bool("quick", False, "Smaller layers and fewer examples (100 units, 200 rows).")
    flags.DEFINE_integer("seed", 0, "Seed for the inputs and the weights.")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from absl import app


    _define_flags()
    app.run(main, argv=sys.argv, flags_parser=cli.parse_flags)
