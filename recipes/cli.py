"""Shared absl command-line plumbing for babysit's ``python -m`` entry points.

``--config=NAME_OR_PATH[:arg]`` is an ``ml_collections.config_flags`` config file flag, so
``--config.optimizer.learning_rate=3e-4`` overrides any field and an unknown field is an
error; a built-in name (``digits_mlp``) is resolved to its file first, the one thing
config_flags cannot do. Every user error — a bad flag, an unknown field, a bad value found
later by ``ValueError`` — ends as one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from recipes import configs  # noqa: E402

FLAGS = flags.FLAGS
USAGE_ERROR = 2
_prog: str | None = None  # the command's name in error lines, e.g. "recipes.train"


def define_common_flags(*, config_default: str | None = "digits_mlp") -> None:
    """Defines ``--config``, ``--workdir``, ``--overwrite`` and ``--verbose`` once."""
    if "config" in FLAGS:
        return
    default = configs.resolve_path(config_default) if config_default else None
    config_flags.DEFINE_config_file(
        "config", default, "Built-in recipe name (e.g. digits_mlp) or path to a .py file "
        "defining get_config(); `NAME:arg` passes arg to get_config.", lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for the run's artifacts.")
    flags.DEFINE_bool("overwrite", False, "Replace a finished run in --workdir.")
    flags.DEFINE_integer("verbose", None, "0 quiet, 1 progress bar, 2 one line per epoch; "
                         "default: the config's train.verbose, 2 when not on a terminal.")


def fail(message: str, prog: str | None = None) -> None:
    """Prints ``prog: error: message`` on one line and exits with status 2."""
    prog = prog or _prog or os.path.basename(sys.argv[0])
    first = " ".join(str(message).split())  # one line, whatever the message held
    print(f"{prog}: error: {first}", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def resolve_config_argv(argv: list[str]) -> list[str]:
    """Replaces a built-in config name in ``--config=NAME`` with the path of its file."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith("--config="):
            out[i] = "--config=" + configs.resolve_path(arg[len("--config="):])
        elif arg == "--config" and i + 1 < len(out):
            out[i + 1] = configs.resolve_path(out[i + 1])
    return out


def parse_flags(argv: list[str]) -> list[str]:
    """An ``app.run`` flags parser whose errors exit 2 with one line instead of status 1."""
    prog = _prog or (os.path.basename(argv[0]) if argv else None)
    try:
        return FLAGS(resolve_config_argv(argv))
    except (flags.Error, ValueError, KeyError, TypeError, AttributeError, OSError) as e:
        fail(_flag_message(e), prog)
    except SyntaxError as e:
        fail(f"--config: {e.filename}:{e.lineno}: {e.msg}", prog)
    return []  # not reached


def main_for(fn: Callable[[Any, Any], Any], argv: list[str], *, prog: str,
             config_default: str | None = "digits_mlp", require_workdir: bool = True) -> None:
    """Runs ``fn(config, FLAGS)`` under absl, mapping user errors to exit status 2.

    Args:
        fn: the job; it receives the parsed config (with ``--verbose`` applied) and FLAGS.
        argv: the command line.
        prog: the command's name for error lines, e.g. ``"recipes.train"``.
        config_default: the config used when ``--config`` is not given.
        require_workdir: whether ``--workdir`` must be given.
    """
    global _prog
    _prog = prog
    define_common_flags(config_default=config_default)

    def _main(args: list[str]) -> None:
        if len(args) > 1:
            fail(f"unexpected arguments {args[1:]}; every option is a --flag=value")
        if require_workdir and not FLAGS.workdir:
            fail("--workdir is required: give a directory for the run's artifacts")
        cfg = FLAGS.config
        if cfg is None:
            fail("--config is required: a built-in name or a .py file")
        verbose = FLAGS.verbose
        if verbose is None and not sys.stdout.isatty() and cfg.train.verbose == 1:
            verbose = 2  # a progress bar in a log file is noise
        if verbose is not None:
            with cfg.unlocked():
                cfg.train.verbose = verbose
        # SIGTERM (kill, a batch scheduler) stops the run like Ctrl-C: with the resume line.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _interrupt)
        try:
            fn(cfg, FLAGS)
        except ValueError as e:
            fail(str(e))
        except KeyboardInterrupt:
            print(f"interrupted; run the same command again to resume from the last saved "
                  f"epoch in {FLAGS.workdir}", file=sys.stderr)
            sys.exit(130)

    app.run(_main, argv=argv, flags_parser=parse_flags)


def _interrupt(signum: int, frame: Any) -> None:
    """Turns SIGTERM into KeyboardInterrupt, which ``main_for`` reports with the resume line."""
    raise KeyboardInterrupt


def _flag_message(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    # absl prefixes errors with the whole flag help; keep the informative first line.
    return text.splitlines()[0]
