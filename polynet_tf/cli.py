"""What absl lacks for the `python -m polynet_tf...` commands: exit status 2 and one-line errors.

Every command defines its flags with absl's own `flags.DEFINE_*` at module
level, in its own `FLAGS = flags.FlagValues()` (so that several commands can
be imported and run in one process, e.g. by tests, without clashing flag
names; `python -m polynet_tf.train` uses the global `flags.FLAGS`), and runs
under `absl.app.run` (`app_run`). This module adds the behaviour absl does not
have, the same for all of them:

* `--help` (`-h`, `-?`, `--helpshort`) prints the command's description and
  options and exits 0; `--helpfull` adds absl's special flags (`--flagfile`,
  `--undefok`) and exits 0 (absl exits 1).
* A usage error (unknown flag, bad or out-of-range value, missing required
  flag, unexpected positional argument, or a `ValueError` that the library
  raises before doing any work) prints `PROG: error: MESSAGE` on stderr, one
  line and no traceback, and exits 2 (absl prints its whole usage and exits 1).

Booleans are spelled `--name` / `--noname` (absl).
"""

import sys
from typing import Callable, Iterable, Optional, Sequence, Type

from absl import app, flags

EXIT_USAGE = 2
_HELP = ("--help", "-help", "-h", "-?", "--helpshort", "-helpshort")
_HELPFULL = ("--helpfull", "-helpfull")


class UsageError(ValueError):
    """Bad command-line arguments or inputs: reported without a traceback, exit 2."""


def fail(prog: str, message: str, status: int = EXIT_USAGE) -> int:
    """Prints `PROG: error: MESSAGE` on stderr and returns `status` (for `return`)."""
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    return status


def _help_requested(argv: Sequence[str]) -> Optional[str]:
    """'short', 'full' or None: whether argv (before a `--`) asks for help."""
    for arg in argv:
        if arg == "--":
            return None
        name = arg.split("=", 1)[0]
        if name in _HELPFULL and not arg.endswith(("=false", "=0")):
            return "full"
        if name in _HELP and not arg.endswith(("=false", "=0")):
            return "short"
    return None


def _help_text(prog: str, doc: str, flag_values: flags.FlagValues, full: bool) -> str:
    text = flag_values.get_help(prefix="  ", include_special_flags=full)
    lines = [f"usage: {prog} [--flag=value ...]", "", (doc or "").strip(), "", "flags:", text,
             "", "  --[no]help: show this help and exit", "  --helpfull: show every flag "
             "(also absl's --flagfile, --undefok) and exit"]
    if not full:
        lines += ["", "Try --helpfull to get a list of all flags."]
    return "\n".join(lines)


def parse(prog: str, doc: str, flag_values: flags.FlagValues,
          argv: Optional[Sequence[str]] = None, positional: Optional[str] = None) -> int:
    """Parses argv into `flag_values` afresh (earlier values are reset).

    Args:
      prog: the command as users type it, e.g. 'python -m polynet_tf.export'.
      doc: description printed by --help.
      flag_values: the command's flags.
      argv: arguments without the program name (default: sys.argv[1:]).
      positional: name of the positional arguments the command takes (one or
        more, e.g. 'MODEL_DIR'), stored in `flag_values.positional_arguments`;
        None: none.

    Returns:
      -1 when the flags are parsed; otherwise the exit status to stop with
      now: 0 after --help/--helpfull, 2 after a usage error (already printed).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    wanted = _help_requested(argv)
    if wanted:
        print(_help_text(prog, doc, flag_values, full=wanted == "full"))
        return 0
    flag_values.unparse_flags()  # A second call in one process starts from the defaults.
    try:
        rest = flag_values([prog, *argv])
    except flags.Error as error:
        message = str(error).strip().replace("\n", " ")
        return fail(prog, f"{message} (--help lists the options)")
    if positional:
        if len(rest) < 2:
            return fail(prog, f"give at least one {positional} (--help)")
        flag_values.__dict__["positional_arguments"] = list(rest[1:])
    elif len(rest) > 1:
        return fail(prog, f"unexpected arguments {rest[1:]}: every option is a --flag "
                          "(--help lists them)")
    return -1


def run(prog: str, doc: str, flag_values: flags.FlagValues,
        body: Callable[[flags.FlagValues], Optional[int]],
        argv: Optional[Sequence[str]] = None,
        usage_errors: Iterable[Type[BaseException]] = (ValueError,),
        positional: Optional[str] = None) -> int:
    """Parses argv into `flag_values` and runs `body(flag_values)`; returns the exit status.

    Args:
      prog: the command as users type it.
      doc: description printed by --help.
      flag_values: the command's flags (its module-level `FLAGS`).
      body: the command; returns its exit status (None means 0).
      argv: arguments without the program name (default: sys.argv[1:]).
      usage_errors: exception classes reported as `error: ...` with exit 2
        (default: ValueError, which includes `UsageError`).
      positional: see `parse`.

    Returns:
      The exit status: 0 done (or help shown), 2 usage error, else body's.
    """
    status = parse(prog, doc, flag_values, argv, positional)
    if status >= 0:
        return status
    try:
        status = body(flag_values)
    except tuple(usage_errors) as error:
        return fail(prog, str(error))
    return 0 if status is None else int(status)


def app_run(main: Callable[[Optional[Sequence[str]]], int]) -> None:
    """Runs `main(argv)` (the command's arguments) under `absl.app.run`; exits with its status.

    absl's app initialises logging and reports an uncaught exception; the
    command's arguments go to `main` unparsed (it parses them with `run`), and
    absl's own global flags keep their defaults.
    """
    app.run(lambda argv: main(list(argv[1:])), flags_parser=_global_defaults)


def _global_defaults(argv: Sequence[str]) -> Sequence[str]:
    if not flags.FLAGS.is_parsed():
        flags.FLAGS(list(argv[:1]))
    return argv


def absl_flags_parser(argv: Sequence[str]) -> Sequence[str]:
    """`flags_parser` of `app.run` for a command on the global `flags.FLAGS` (train).

    Gives it the same behaviour: --help/--helpfull print usage and exit 0, a
    flag error prints `PROG: error: ...` and exits 2.

    Args:
      argv: the command line, program name first.

    Returns:
      The arguments left after the flags, program name first.
    """
    wanted = _help_requested(argv[1:])
    if wanted:
        app.usage(shorthelp=wanted == "short", writeto_stdout=True)
        sys.exit(0)
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    prog = f"python -m {spec.name}" if spec is not None else argv[0]
    try:
        return flags.FLAGS(list(argv))
    except flags.Error as error:
        message = str(error).strip().replace("\n", " ")
        sys.exit(fail(prog, f"{message} (--help lists the options)"))
