"""Shared absl command-line plumbing for babysit's ``python -m`` entry points.

``--config=NAME_OR_PATH[:arg]`` is an ``ml_collections.config_flags`` config file flag, so
``--config.optimizer.learning_rate=3e-4`` overrides any field and an unknown field is an
error; a built-in name (``digits_mlp``) is resolved to its file first, the one thing
config_flags cannot do. Every user error — a bad flag, an unknown field, a bad value found
later by ``ValueError`` — ends as one line on stderr and exit status 2, never a traceback.

``--config.model.kwargs.NAME=VALUE`` is the one override of a field the tree does not have:
``model.kwargs`` holds a user's builder's keyword arguments, whatever their names, and
config_flags refuses new keys. ``parse_flags`` takes these out of the command line before
absl parses it and sets them on the loaded config afterwards, the value read as a Python
literal (``32``, ``0.5``, ``(3, 3)``, ``True``/``true``, ``'relu'``) or else as a string.
"""

from __future__ import annotations

import ast
import difflib
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ml_collections  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from recipes import configs, io  # noqa: E402

FLAGS = flags.FLAGS
USAGE_ERROR = 2
_prog: str | None = None  # the command's name in error lines, e.g. "recipes.train"
_config_default: str | None = None  # the path --config takes when it is not given
_ARGV: list[str] = []  # the command line being parsed; --config reads its overrides here
_parsed_before = False  # parse_flags ran already in this process (tests, notebooks)
_CONFIG_ARG = re.compile(r"^-{1,2}config(=|$)")  # --config=X or --config X, not --config.a
# --config.model.kwargs.NAME=VALUE (and the forms absl would also read as that flag)
_KWARG_ARG = re.compile(r"^-{1,2}(no)?config\.model\.kwargs\.([^=]*)(=?)(.*)$", re.DOTALL)


def define_common_flags(*, config_default: str | None = "digits_mlp") -> None:
    """Defines ``--config``, ``--workdir``, ``--overwrite`` and ``--verbose`` once.

    The default config is not loaded here but by ``parse_flags``, so that a bad override
    of it is a usage error like any other (and a second call in one process starts afresh).
    """
    global _config_default
    _config_default = configs.resolve_path(config_default) if config_default else None
    if "config" in FLAGS:
        return
    _define_config_flag("Built-in recipe name (e.g. digits_mlp) or path to a .py file "
                        "defining get_config(); `NAME:arg` passes arg to get_config.")
    flags.DEFINE_string("workdir", None, "Directory for the run's artifacts.")
    flags.DEFINE_bool("overwrite", False, "Replace a finished run in --workdir.")
    flags.DEFINE_integer("verbose", None, "0 quiet, 1 progress bar, 2 one line per epoch; "
                         "default: the config's train.verbose, 2 when not on a terminal.")


class ConfigError(flags.Error):
    """A ``--config`` file or override that cannot be used; the message is the whole line.

    A ``flags.Error`` rather than a ``ValueError`` so that absl passes it through as it is
    instead of prefixing it with ``flag --config=PATH:``.
    """


class ConfigFileParser(flags.ArgumentParser):
    """``--config``'s parser: loads through ``recipes.configs.get`` and checks overrides.

    It stands in for ml_collections' own ``ConfigFileFlagParser``, which lets most of a
    user file's exceptions escape as tracebacks. ``configs.get`` turns every failure of a
    user's file into one line and accepts a plain dict from ``get_config``;
    ``configs.complete`` fills in the fields a file left out, so ``FLAGS.config`` is always
    the full tree. The overrides on the command line are checked against it here, before
    ml_collections defines a flag for each, so that a misspelled field is one line with a
    suggestion rather than a ``KeyError``.
    """

    def __init__(self, name: str = "config") -> None:
        self.name = name

    def flag_type(self) -> str:
        return "config object"

    def parse(self, path: Any) -> Any:
        if isinstance(path, ml_collections.ConfigDict):
            return path  # already a config (FLAGS.config = cfg in a notebook)
        try:
            config = configs.get(path)
            try:  # a partial tree (or dict) takes base.py's defaults: every field overridable
                config = configs.complete(config)
            except ValueError as e:
                raise ValueError(f"--{self.name}={path}: {e}") from e
            check_overrides(config, _ARGV, self.name)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        config.lock()  # like DEFINE_config_file(lock_config=True): no new fields
        return config


def _define_config_flag(help_string: str) -> None:
    """``config_flags.DEFINE_config_file("config")`` with ``ConfigFileParser`` as its parser.

    DEFINE_config_file takes no parser, so the one it made is replaced on the flag (a
    public attribute of absl's ``Flag``). ``sys_argv=_ARGV`` makes the flag look for
    ``--config.a.b`` overrides in the command line ``parse_flags`` is parsing, not
    ``sys.argv``; the default is set (and loaded) by ``parse_flags``.
    """
    config_flags.DEFINE_config_file("config", None, help_string, lock_config=True,
                                    sys_argv=_ARGV)
    FLAGS["config"].parser = ConfigFileParser("config")


def check_overrides(config: Any, argv: list[str], name: str = "config") -> None:
    """Checks that every ``--NAME.a.b=v`` in ``argv`` names a field of ``config``.

    Raises:
        ValueError: ``--config.train.epoch: unknown field train.epoch; did you mean
            train.epochs?`` (or the valid fields of the branch when nothing is close).
    """
    pattern = re.compile(rf"^-{{1,2}}(?:no)?{re.escape(name)}\.([^=]*)")
    for arg in argv:
        m = pattern.match(arg)
        if m:
            _check_field(config, m.group(1), f"--{name}.{m.group(1)}")


def _check_field(config: Any, path: str, flag: str) -> None:
    node, done = config, []
    for part in path.split("."):
        here = ".".join(done)
        if not part:
            raise ValueError(f"{flag}: empty field name; give --config.BRANCH.FIELD=VALUE, "
                             "e.g. --config.train.epochs=5")
        if not isinstance(node, (ml_collections.ConfigDict, Mapping)):
            raise ValueError(f"{flag}: {here} is a field ({type(node).__name__}), not a "
                             f"branch; set it with --config.{here}=VALUE")
        keys = sorted(str(k) for k in node.keys())
        if part not in keys:
            full = ".".join([*done, part])
            close = difflib.get_close_matches(part, keys, n=1)
            prefix = f"{here}." if here else ""
            hint = (f"did you mean {prefix}{close[0]}?" if close else
                    f"valid fields of {here or 'the config'}: {', '.join(keys)}")
            raise ValueError(f"{flag}: unknown field {full}; {hint}")
        node = node[part]
        done.append(part)


def fail(message: str, prog: str | None = None) -> None:
    """Prints ``prog: error: message`` on one line and exits with status 2."""
    prog = prog or _prog or os.path.basename(sys.argv[0])
    line = " ".join(str(message).split())  # one line, whatever the message held
    # A value from the command line may hold control or invisible characters: show escapes.
    line = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in line)
    print(f"{prog}: error: {line}", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def resolve_config_argv(argv: list[str]) -> list[str]:
    """Replaces a built-in config name in ``--config=NAME`` with the path of its file.

    Raises:
        ValueError: ``--config`` given more than once, or an unknown name.
    """
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith("--config="):
            out[i] = "--config=" + configs.resolve_path(arg[len("--config="):])
        elif arg == "--config" and i + 1 < len(out):
            out[i + 1] = configs.resolve_path(out[i + 1])
    # After resolving: a bad name or missing file is reported as such, even when repeated.
    given = [arg for arg in argv[1:] if _CONFIG_ARG.match(arg)]
    if len(given) > 1:
        raise ValueError(f"--config was given {len(given)} times ({', '.join(given)}); give "
                         "it once and change single fields with --config.a.b=value")
    return out


def parse_flags(argv: list[str]) -> list[str]:
    """An ``app.run`` flags parser whose errors exit 2 with one line instead of status 1.

    It may be called again in the same process (tests, notebooks): every call starts from
    unparsed flags and a freshly loaded default config.
    """
    prog = _prog or (os.path.basename(argv[0]) if argv else None)
    try:
        argv = [*argv[:1], *FLAGS.read_flags_from_files(argv[1:], force_gnu=False)]
        argv = resolve_config_argv(argv)
        kwargs: dict[str, Any] = {}
        if "config" in FLAGS:
            argv, kwargs = split_model_kwargs(argv)
            _reset_config_flag(argv)
        rest = FLAGS(argv)
        if kwargs:
            apply_model_kwargs(FLAGS.config, kwargs)
        return rest
    except (flags.Error, ValueError, KeyError, TypeError, AttributeError, OSError) as e:
        fail(_flag_message(e), prog)
    except SyntaxError as e:
        fail(f"--config: {e.filename}:{e.lineno}: {e.msg}", prog)
    return []  # not reached


def split_model_kwargs(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Takes ``--config.model.kwargs.NAME=VALUE`` out of ``argv``.

    Args:
        argv: the command line (program first).

    Returns:
        ``(argv without them, {NAME: value})``, each value parsed by ``literal_value``; a
        NAME given twice keeps the last value, as absl does.

    Raises:
        ValueError: a name that is not a Python identifier, or no ``=VALUE``.
    """
    rest, kwargs = [], {}
    for arg in argv:
        m = _KWARG_ARG.match(arg)
        if not m:
            rest.append(arg)
            continue
        no, name, eq, text = m.groups()
        flag = arg.partition("=")[0]
        if no or not eq:
            raise ValueError(f"{flag}: give a value, --config.model.kwargs.{name}=VALUE "
                             "(e.g. =32, =0.5, =true, =relu)")
        if not name.isidentifier():
            raise ValueError(f"{flag}: model.kwargs.NAME takes one keyword argument name of "
                             f"your builder, such as model.kwargs.width; got {name!r}")
        kwargs[name] = literal_value(text)
    return rest, kwargs


def literal_value(text: str) -> Any:
    """A command-line value as Python: a literal (lists become tuples), else the string.

    ``true``/``false`` (any case) are booleans, as absl reads them; ``32`` an int, ``1e-3``
    a float, ``(3, 3)`` or ``[3, 3]`` a tuple, ``relu`` or ``'relu'`` a string.
    """
    if text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return text
    return tuple(value) if isinstance(value, list) else value


def apply_model_kwargs(config: Any, kwargs: dict[str, Any]) -> None:
    """Sets ``config.model.kwargs.NAME = value`` for each entry, the lock notwithstanding.

    A name the config already holds keeps its type, as ConfigDict checks it (a float takes
    an int too); a new name takes the value's type.

    Raises:
        ValueError: no config to set them on, or a value of the wrong type.
    """
    if config is None:
        raise ValueError("--config.model.kwargs.*: give --config=NAME_OR_FILE too")
    node = config.model.kwargs
    with config.unlocked():
        for name, value in kwargs.items():
            try:
                node[name] = value
            except (TypeError, ValueError):
                kind = type(node[name]).__name__
                raise ValueError(f"--config.model.kwargs.{name}={value!r}: the config sets "
                                 f"model.kwargs.{name} of type {kind}; give a {kind}") from None


def _reset_config_flag(argv: list[str]) -> None:
    """Points ``--config`` at ``argv`` and loads the default config unless argv gives one."""
    global _parsed_before
    _ARGV[:] = argv
    for name in [n for n in FLAGS if n.startswith("config.")]:
        delattr(FLAGS, name)  # an earlier parse's override flags, bound to its config
    if _parsed_before:  # every flag back to its default, also after a parse that failed
        for name in FLAGS:
            FLAGS[name].unparse()
    _parsed_before = True
    FLAGS.set_default("config", _config_default)


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
        except OSError as e:  # disk full, I/O error: the file, the free space, the fix
            fail(io.describe_os_error(e))
        except KeyboardInterrupt:
            print(f"interrupted; run the same command again to resume from the last saved "
                  f"epoch in {FLAGS.workdir}", file=sys.stderr)
            sys.exit(130)
        except Exception as e:  # noqa: BLE001 - TF's file writers raise their own types
            if not io.is_disk_full(e):
                raise
            fail(io.describe_os_error(io.as_os_error(e)))

    app.run(_main, argv=argv, flags_parser=parse_flags)


def _interrupt(signum: int, frame: Any) -> None:
    """Turns SIGTERM into KeyboardInterrupt, which ``main_for`` reports with the resume line."""
    raise KeyboardInterrupt


def _flag_message(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    # absl prefixes errors with the whole flag help; keep the informative first line (split
    # at newlines only: str.splitlines also splits at \x1c-\x1f, which a value may hold).
    return text.split("\n")[0]
