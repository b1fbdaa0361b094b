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

``--help`` (``-h``) prints what a user needs first, and exits 0: a usage line and an example,
the key flags (absl's key flags of the main module, each rendered by absl) in a fixed order
— ``--config``, ``--workdir``, ``--overwrite``, the command's own — and the most used
``--config.*`` fields with their values; ``--helpfull`` adds every flag of every module.

``--config=RUN/config.json`` reproduces a run. The JSON is data: a ``model.arch`` that names
code to import is refused (one line, exit 2) unless ``--trust_config`` or the same
``--config.model.arch=...`` confirms it.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# As recipes/__init__.py (which runs first): TensorFlow's C++ lines stay out of the console.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if os.environ.get("BABYSIT_TF_LOGS") else "3")

import ml_collections  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from recipes import configs, io  # noqa: E402

FLAGS = flags.FLAGS
USAGE_ERROR = 2
_prog: str | None = None  # the command's name in error lines, e.g. "recipes.train"
_config_default: str | None = None  # the name or path --config takes when it is not given
_ARGV: list[str] = []  # the command line being parsed; --config reads its overrides here
_parsed_before = False  # parse_flags ran already in this process (tests, notebooks)
_help: CliHelp | None = None  # set by main_for: --help is ours (else absl's, exit 1)
_CONFIG_ARG = re.compile(r"^-{1,2}config(=|$)")  # --config=X or --config X, not --config.a
# --config.model.kwargs.NAME=VALUE (and the forms absl would also read as that flag)
_KWARG_ARG = re.compile(r"^-{1,2}(no)?config\.model\.kwargs\.([^=]*)(=?)(.*)$", re.DOTALL)


def define_common_flags(*, config_default: str | None = "digits_mlp") -> None:
    """Defines ``--config``, ``--workdir``, ``--overwrite``, ``--verbose``, ``--trust_config``.

    The default config is not loaded here but by ``parse_flags``, so that a bad override
    of it is a usage error like any other (and a second call in one process starts afresh).
    It is kept as given (``digits_mlp``, not its file's absolute path), which ``--help``
    shows.
    """
    global _config_default
    if config_default:
        configs.resolve_path(config_default)  # a bad default is the programmer's error: now
    _config_default = config_default or None
    if "config" not in FLAGS:
        _define_flags()
    # What absl's help shows as the default; parse_flags sets (and loads) the default itself.
    FLAGS["config"].default_as_str = f"'{_config_default}'" if _config_default else None


def _define_flags() -> None:
    """The common flags themselves, defined once per process."""
    _define_config_flag(
        f"A built-in recipe: {', '.join(configs.names())} (NAME:quick shrinks it for a test); "
        "or a .py file defining get_config() (FILE.py:arg passes arg); or a run's "
        "WORKDIR/config.json or a search's best_config.json to reproduce it.")
    flags.DEFINE_string("workdir", None, "Directory for the run's artifacts (config.json, "
                        "history.csv, model.keras, ...); the same command resumes a killed run.")
    flags.DEFINE_bool("overwrite", False, "Replace a finished run in --workdir, once the new "
                      "one has finished.")
    flags.DEFINE_integer("verbose", None, "0 quiet, 1 progress bar, 2 one line per epoch; "
                         "default: the config's train.verbose, 2 when not on a terminal.")
    flags.DEFINE_bool("trust_config", False, "Let a .json --config name code to import "
                      "(model.arch=module:function or file.py:function); without it such a "
                      "file is refused.")


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
        self.json_file: str | None = None  # the .json file last loaded (None: not JSON)
        self.origins: dict[str, Any] = {}  # its "origins": what came from a user's model

    def flag_type(self) -> str:
        return "config object"

    def parse(self, path: Any) -> Any:
        self.json_file, self.origins = None, {}
        if isinstance(path, ml_collections.ConfigDict):
            return path  # already a config (FLAGS.config = cfg in a notebook)
        try:
            if configs.is_json(path):  # checked for code by check_json_config, after overrides
                config, self.origins = configs.load_json(configs.resolve_path(path))
                self.json_file = path
            else:
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


def check_json_config() -> None:
    """Refuses a ``--config=FILE.json`` whose network cannot be rebuilt without running code.

    Runs after every flag is parsed and before anything is built, so nothing is imported:
    a ``model.arch`` naming code (``configs.code_fields``) needs ``--trust_config`` or the
    same ``--config.model.arch=...`` on the command line; a run whose network was given from
    Python (its ``origins``) cannot be rebuilt from the file unless ``--config.model.arch``
    names a builder.

    Raises:
        ValueError: one line naming the file, the field and the two ways to confirm.
    """
    parser = FLAGS["config"].parser
    path = getattr(parser, "json_file", None)
    if not path or ("config.model.arch" in FLAGS and FLAGS["config.model.arch"].present):
        return
    source = str(parser.origins.get("model", "model.arch="))
    if not source.startswith("model.arch="):
        raise ValueError(f"--config={path}: the run's network was given from Python "
                         f"({source.split(';')[0]}), which the file cannot rebuild; rerun "
                         "from Python with model=..., or name a builder with "
                         "--config.model.arch=path/to/file.py:function")
    code = configs.code_fields(FLAGS.config)
    if code and not FLAGS.trust_config:
        arch = code.get("model.arch", "")
        raise ValueError(f"--config={path}: {configs.describe_code(code)}; a JSON config is "
                         "data and runs no code unless you confirm it: add --trust_config or "
                         f"--config.model.arch={arch}")


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
        kind = help_request(argv) if _help is not None else None
        if kind:  # before any check of the command line: help always helps
            print(help_text(argv, full=kind == "full"))
            sys.exit(0)
        argv = resolve_config_argv(argv)
        kwargs: dict[str, Any] = {}
        if "config" in FLAGS:
            argv, kwargs = split_model_kwargs(argv)
            _reset_config_flag(argv)
        rest = FLAGS(argv)
        if kwargs:
            apply_model_kwargs(FLAGS.config, kwargs)
        if "config" in FLAGS:
            check_json_config()
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


@dataclasses.dataclass(frozen=True)
class CliHelp:
    """What ``--help`` says about one command beyond its flags.

    Attributes:
        usage: the command line's shape after ``python -m PROG``.
        example: a command that runs as it is.
        summary: one sentence: what the command does and where its results go.
        fields: the ``--config.*`` fields shown with their values, most used first.
    """

    usage: str
    example: str
    summary: str
    fields: tuple[str, ...] = ()


#: The ``--config.*`` fields every command's ``--help`` shows (docs/training.md).
HELP_FIELDS = ("dataset.name", "model.arch", "model.hidden", "model.l2", "optimizer.name",
               "optimizer.learning_rate", "schedule.name", "train.epochs", "train.batch_size",
               "train.seed")

#: ``--help`` of the three commands, by ``prog``; another command passes its own to main_for.
HELP = {
    "recipes.train": CliHelp(
        "--config=NAME_OR_FILE --workdir=DIR [--overwrite] [--config.FIELD=VALUE ...]",
        "python -m recipes.train --config=digits_mlp:quick --workdir=runs/quick "
        "--config.optimizer.learning_rate=3e-3",
        "Trains one config into one workdir: config.json, history.csv, summary.json, "
        "model.keras, plots; see docs/training.md.", HELP_FIELDS),
    "recipes.babysit": CliHelp(
        "--config=NAME_OR_FILE --workdir=DIR [--steps=LIST] [--config.FIELD=VALUE ...]",
        "python -m recipes.babysit --config=digits_mlp:quick --workdir=runs/babysit "
        "--steps=checks,train,diagnose,repair,report",
        "Babysits a run as the lecture does, a verdict per step (checks, sanity, lr range, "
        "search, train, diagnose, repair, report) into babysit.json and report.html; see "
        "docs/babysitting.md.", (*HELP_FIELDS, "babysit.repair_rounds")),
    "tuning.search": CliHelp(
        "--config=NAME_OR_FILE --workdir=DIR [--space=SPEC] [--stages=TxE,... | --trials=N "
        "--epochs=E] [--config.FIELD=VALUE ...]",
        "python -m tuning.search --config=digits_mlp:quick --workdir=runs/search "
        "--space=optimizer.learning_rate=log:1e-4:1e-1 --stages=6x1,3x2",
        "Searches hyperparameters coarse to fine (KerasTuner) into trials.csv, plots and "
        "best_config.json; see docs/search.md.", (*HELP_FIELDS, "search.space")),
}

#: ``--help`` lists these key flags first, then the command's own (these first), then last.
_FIRST_FLAGS = ("config", "workdir", "overwrite")
_OWN_FLAGS = ("steps", "space", "stages", "trials", "epochs")
_LAST_FLAGS = ("verbose", "trust_config")
_HELP_ARGS = {"help": "short", "h": "short", "?": "short", "helpshort": "short",
              "helpfull": "full"}


def help_request(argv: list[str]) -> str | None:
    """``"short"`` for ``--help``/``-h``/``-?``/``--helpshort``, ``"full"`` for ``--helpfull``.

    Only options before a ``--`` count; None when none asks for help.
    """
    asked = None
    for arg in argv[1:]:
        if arg == "--":
            break
        if arg.startswith("-"):
            asked = asked or _HELP_ARGS.get(arg.lstrip("-").partition("=")[0])
    return asked


def answer_help(argv: list[str], *, prog: str, cli_help: CliHelp) -> None:
    """Prints ``--help`` and exits 0 when ``argv`` asks for it: a command without ``--config``.

    For the commands that do not go through :func:`main_for` (``recipes.predict``,
    ``recipes.export``); call it after the command's flags are defined.
    """
    global _prog, _help
    kind = help_request(argv)
    if kind is None:
        return
    _prog, _help = prog, cli_help
    register_key_flags(["__main__"])
    print(help_text(argv, full=kind == "full"))
    sys.exit(0)


def help_text(argv: list[str], *, full: bool = False) -> str:
    """The command's ``--help``: usage, example, key flags in order, config fields.

    ``full`` (``--helpfull``) appends absl's list of every flag of every module.
    """
    h = _help or CliHelp("--flag=value ...", "", "")
    lines = [f"usage: python -m {_prog} {h.usage}"]
    lines += [f"example: {h.example}"] if h.example else []
    lines += ["", flags.text_wrap(h.summary, length=80)] if h.summary else []
    lines += ["", "flags:"]
    lines += [flag_help(FLAGS[name]) for name in key_flag_names()]
    if h.fields and "config" in FLAGS:
        lines += ["", *config_field_lines(argv, h.fields)]
    if full:
        lines += ["", "every flag, by module:", FLAGS.get_help()]
    elif "config" in FLAGS:
        lines += ["", "Every --config.FIELD: recipes/configs/base.py. Every flag: --helpfull."]
    else:
        lines += ["", "Every flag: --helpfull."]
    return "\n".join(lines)


def flag_help(flag: flags.Flag) -> str:
    """One flag's help exactly as absl renders it (a FlagValues that holds only it)."""
    one = flags.FlagValues()
    one[flag.name] = flag
    return one.get_help(prefix="  ", include_special_flags=False)


def register_key_flags(modules: Sequence[str]) -> None:
    """Makes the common flags and ``modules``' key flags key flags of the main module.

    absl calls the main module ``sys.argv[0]``; a flag defined in a CLI's ``main()`` run as
    ``__main__`` is already one, one defined in an imported module (``tuning.cli``) is not.
    """
    main = sys.argv[0]
    found = [FLAGS[n] for n in (*_FIRST_FLAGS, *_LAST_FLAGS) if n in FLAGS]
    for module in modules:
        found += FLAGS.get_key_flags_for_module(main if module == "__main__" else module)
    for flag in found:
        FLAGS.register_key_flag_for_module(main, flag)


def key_flag_names() -> list[str]:
    """The main module's key flags, in the order ``--help`` shows them.

    ``--config``, ``--workdir``, ``--overwrite``, the command's own (``--steps``,
    ``--space``, ``--stages`` first), then ``--verbose`` and ``--trust_config``.
    """
    names = [f.name for f in FLAGS.get_key_flags_for_module(sys.argv[0])]
    names = [n for i, n in enumerate(names) if n in FLAGS and n not in names[:i]]
    first = [n for n in (*_FIRST_FLAGS, *_OWN_FLAGS) if n in names]
    last = [n for n in _LAST_FLAGS if n in names]
    return first + [n for n in names if n not in first + last] + last


def config_field_lines(argv: list[str], fields: Sequence[str]) -> list[str]:
    """``--config.FIELD=VALUE`` for ``fields``, valued from the ``--config`` in ``argv``.

    The config the command would load (the default when none is given, or when the given
    one cannot be loaded; a ``.json`` is read, never trusted into importing anything).
    """
    given = [a.partition("=")[2] for a in argv[1:] if a.startswith(("--config=", "-config="))]
    name, config = _config_default, None
    for candidate in [*given[-1:], _config_default]:
        try:
            config = configs.complete(configs.get(candidate, trust=True))
            name = candidate
            break
        except (ValueError, TypeError):
            continue
    if config is None:
        return []
    lines = [f"config fields, --config.FIELD=VALUE (here the values of --config={name}):"]
    for path in fields:
        value = config
        for part in path.split("."):
            value = value[part]
        text = value if isinstance(value, str) and value.strip() == value and value else \
            repr(value)
        lines.append(f"  --config.{path}={text}")
    return lines


def main_for(fn: Callable[[Any, Any], Any], argv: list[str], *, prog: str,
             config_default: str | None = "digits_mlp", require_workdir: bool = True,
             cli_help: CliHelp | None = None) -> None:
    """Runs ``fn(config, FLAGS)`` under absl, mapping user errors to exit status 2.

    Args:
        fn: the job; it receives the parsed config (with ``--verbose`` applied) and FLAGS.
        argv: the command line.
        prog: the command's name for error lines, e.g. ``"recipes.train"``.
        config_default: the config used when ``--config`` is not given.
        require_workdir: whether ``--workdir`` must be given.
        cli_help: what ``--help`` says (default: ``HELP[prog]``); the key flags shown are
            the common ones and those of ``fn``'s module and of ``__main__``.
    """
    global _prog, _help
    _prog = prog
    _help = cli_help or HELP.get(prog) or CliHelp(
        "--config=NAME_OR_FILE --workdir=DIR [--flag=VALUE ...]", "", "", HELP_FIELDS)
    define_common_flags(config_default=config_default)
    register_key_flags([getattr(fn, "__module__", None) or "__main__", "__main__"])

    def _main(args: list[str]) -> None:
        if len(args) > 1:
            fail(f"unexpected arguments {args[1:]}; every option is a --flag=value")
        if require_workdir and not FLAGS.workdir:
            fail("--workdir is required: give a directory for the run's artifacts")
        cfg = FLAGS.config
        if cfg is None:
            fail("--config is required: a built-in name, a .py or a .json file")
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


def run_on_workdir(fn: Callable[[Any], Any], argv: list[str], *, prog: str,
                   cli_help: CliHelp, required: Mapping[str, str]) -> None:
    """Runs ``fn(FLAGS)`` for a command on a finished run (no ``--config``) under absl.

    ``--help`` as :func:`answer_help`; stray arguments, an empty ``required`` flag
    (name -> what to give), a ``ValueError`` or an ``OSError`` from ``fn`` are one line and
    exit status 2, as :func:`main_for` does for the commands with a config.
    """
    answer_help(argv, prog=prog, cli_help=cli_help)

    def _main(args: list[str]) -> None:
        if len(args) > 1:
            fail(f"unexpected arguments {args[1:]}; every option is a --flag=value", prog)
        for name, what in required.items():
            if not FLAGS[name].value:
                fail(f"--{name} is required: {what}", prog)
        try:
            fn(FLAGS)
        except ValueError as e:
            fail(str(e), prog)
        except OSError as e:
            fail(io.describe_os_error(e), prog)

    app.run(_main, argv=[prog, *argv[1:]], flags_parser=parse_flags)


def _interrupt(signum: int, frame: Any) -> None:
    """Turns SIGTERM into KeyboardInterrupt, which ``main_for`` reports with the resume line."""
    raise KeyboardInterrupt


def _flag_message(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    # absl prefixes errors with the whole flag help; keep the informative first line (split
    # at newlines only: str.splitlines also splits at \x1c-\x1f, which a value may hold).
    return text.split("\n")[0]
