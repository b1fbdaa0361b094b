"""The command line: ``python -m tuning.search --config=NAME --space=... --stages=20x1,10x4``.

(``python -m tuning.cli`` and ``python -m tuning`` run the same command.) Flags select a
one-stage search (``--trials``/``--epochs``) or coarse to fine (``--stages``); without them
the config's ``search`` branch decides. Bad input is one line on stderr and exit status 2
(``recipes.cli.main_for``). See docs/search.md.

Process recycling: TensorFlow keeps every trained model's traced functions (~4.5 MB per
model with Keras 3.15 / TF 2.21, in plain ``model.fit`` too; ``keras.backend.clear_session``
and ``gc.collect`` do not free them), so a long search's memory grows with its trials. Like
a web server's ``max_requests``, the command starts afresh every ``--recycle_every`` trials:
the state on disk is complete at any moment (tests/test_kill_resume.py kills the search at
random), so the new process resumes where this one stopped, same PID. Only the command line
does this, through ``coarse_to_fine``'s ``on_trial_end`` hook: a library never replaces its
caller's process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import ml_collections
from absl import flags as absl_flags

from recipes import cli as recipes_cli
from tuning import search as search_lib
from tuning.narrowing import Stage, parse_stages

__all__ = ["main", "recycler"]

PROG = "tuning.search"


def recycler(every: int, argv: list[str], *, verbose: bool = True
             ) -> Callable[[search_lib.TrialEnd], None] | None:
    """The ``on_trial_end`` hook that restarts a local search every ``every`` trials.

    Args:
        every: finished trials per process (0: never; returns None).
        argv: the command's arguments (without the program), re-run as
            ``python -m tuning.search ARGV``; ``--overwrite`` included: an unfinished search
            of the same request resumes where it is, in the workdir or in its staged
            replacement.
        verbose: say so on stdout before restarting.
    """
    if every <= 0:
        return None

    def on_trial_end(end: search_lib.TrialEnd) -> None:
        # A chief serves its workers' trials; the last trial leaves nothing to resume.
        if end.more and end.role == "none" and every <= end.finished:
            _reexec(end.finished, argv, verbose)

    return on_trial_end


def _reexec(trials: int, argv: list[str], verbose: bool) -> None:
    """Replaces this process by a fresh run of the same command, which resumes the search."""
    if verbose:
        print(f"(restarting the process after {trials} trials to free TensorFlow's memory; "
              "the search resumes)", flush=True)
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", PROG, *argv])


def _define_flags() -> None:
    if "space" in absl_flags.FLAGS:
        return
    absl_flags.DEFINE_string("space", None, "Search space, e.g. optimizer.learning_rate=log:1e-6:"
                             "1e-3,model.l2=log:1e-5:1e5 (default: the config's search.space). "
                             "See docs/search.md.")
    absl_flags.DEFINE_integer("trials", None, "Trials of a one-stage search.")
    absl_flags.DEFINE_integer("epochs", None, "Epochs per trial of a one-stage search (default: "
                              "the config's train.epochs).")
    absl_flags.DEFINE_string("stages", None, "Coarse-to-fine stages TRIALSxEPOCHS, e.g. 20x2,10x8 "
                             "(default without --trials: the config's search.stages).")
    absl_flags.DEFINE_integer("keep_top", None, "Top trials the next stage's ranges span "
                              "(default: search.keep_top).")
    absl_flags.DEFINE_string("strategy", None, "random | grid | hyperband (default: "
                             "search.strategy; hyperband: KerasTuner's Hyperband, max_epochs = "
                             "a stage's EPOCHS, factor search.hyperband_factor).")
    absl_flags.DEFINE_integer("seed", None, "Sampling seed (default: search.seed).")
    absl_flags.DEFINE_string("role", None, "Distributed search: chief | worker (default: none, or "
                             "from KERASTUNER_TUNER_ID).")
    absl_flags.DEFINE_string("oracle", None, "The chief's HOST:PORT (or KERASTUNER_ORACLE_IP/"
                             "_PORT); stage i uses PORT+i-1.")
    absl_flags.DEFINE_string("tuner_id", None, "A worker's unique id (or KERASTUNER_TUNER_ID).")
    absl_flags.DEFINE_integer("recycle_every", 25, "Restart the process (it resumes) every N "
                              "finished trials so TensorFlow's per-model memory is freed; 0 = "
                              "never. Local searches only.")


def _stages(cfg: ml_collections.ConfigDict, flags: Any) -> list[Stage]:
    """``--trials``/``--epochs`` (one stage) or ``--stages``, else the config's stages."""
    if flags.stages and (flags.trials is not None or flags.epochs is not None):
        raise ValueError("give either --stages (coarse to fine) or --trials/--epochs "
                         "(one stage), not both")
    if flags.epochs is not None and flags.trials is None:
        raise ValueError("--epochs needs --trials (or use --stages=TRIALSxEPOCHS,...)")
    if flags.trials is not None:
        return [Stage(flags.trials, flags.epochs if flags.epochs is not None
                      else int(cfg.train.epochs))]
    return parse_stages(flags.stages or cfg.search.stages)


def _cli(cfg: ml_collections.ConfigDict, flags: Any, argv: list[str]) -> None:
    """The search the flags ask for; ``argv`` (no program) is what a restart re-runs."""
    s = cfg.search
    stages = _stages(cfg, flags)
    verbose = 0 if flags.verbose == 0 else 1
    if flags.recycle_every < 0:
        raise ValueError(f"--recycle_every must be >= 0 (0 = never), got {flags.recycle_every}")
    search_lib.coarse_to_fine(
        cfg, flags.space or s.space, stages,
        keep_top=flags.keep_top if flags.keep_top is not None else int(s.keep_top),
        workdir=flags.workdir, strategy=flags.strategy or s.strategy,
        seed=flags.seed if flags.seed is not None else int(s.seed),
        role=flags.role, oracle=flags.oracle, tuner_id=flags.tuner_id, verbose=verbose,
        overwrite=flags.overwrite,
        on_trial_end=recycler(flags.recycle_every, argv, verbose=bool(verbose)))


def main(argv: list[str] | None = None) -> None:
    """``python -m tuning.search --config=NAME_OR_PATH --space=... --trials=N --epochs=E``."""
    _define_flags()
    argv = list(argv if argv is not None else sys.argv)
    recipes_cli.main_for(lambda cfg, flags: _cli(cfg, flags, argv[1:]), argv, prog=PROG)


if __name__ == "__main__":
    main()
