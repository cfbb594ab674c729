"""One command-line library for every `python -m polynet_tf...` command.

Every command defines its options as absl flags in a fresh `flags.FlagValues`
(so commands can be called in one process, e.g. by tests, without clashing
flag names) and hands its body to `run`, which gives all of them the same
behaviour:

* `--help` (`-h`, `-?`, `--helpshort`) prints the command's description and
  options and exits 0; `--helpfull` adds absl's special flags (`--flagfile`,
  `--undefok`) and exits 0.
* Booleans are spelled `--name` / `--noname` (absl), e.g. `--progress` /
  `--noprogress`.
* A usage error (unknown flag, bad or out-of-range value, missing required
  flag, positional argument, or a `ValueError` that the library raises before
  doing any work) prints `PROG: error: MESSAGE` on stderr and exits 2.

Library functions raise errors naming their arguments; the command layer may
translate them with `flag_error`.
"""

import sys
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Type

from absl import flags

EXIT_USAGE = 2
_HELP = ("--help", "-help", "-h", "-?", "--helpshort", "-helpshort")
_HELPFULL = ("--helpfull", "-helpfull")


class UsageError(ValueError):
    """Bad command-line arguments or inputs: reported without a traceback, exit 2."""


def help_requested(argv: Sequence[str]) -> Optional[str]:
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


def help_text(prog: str, doc: str, flag_values: flags.FlagValues, full: bool) -> str:
    """The text `--help` (or `--helpfull`) prints."""
    text = flag_values.get_help(prefix="  ", include_special_flags=full)
    lines = [f"usage: {prog} [--flag=value ...]", "", (doc or "").strip(), "", "flags:", text,
             "", "  --[no]help: show this help and exit", "  --helpfull: show every flag "
             "(also absl's --flagfile, --undefok) and exit"]
    if not full:
        lines.append("")
        lines.append("Try --helpfull to get a list of all flags.")
    return "\n".join(lines)


def fail(prog: str, message: str, status: int = EXIT_USAGE) -> int:
    """Prints `PROG: error: MESSAGE` on stderr and returns `status` (for `return`)."""
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    return status


def parse(prog: str, doc: str, define_flags: Callable[[flags.FlagValues], None],
          argv: Optional[Sequence[str]] = None,
          positional: Optional[str] = None) -> Tuple[Optional[flags.FlagValues], int]:
    """Parses argv into fresh flags.

    Args:
      prog: the command as users type it, e.g. 'python -m polynet_tf.export'.
      doc: description printed by --help.
      define_flags: defines the command's flags in the `FlagValues` it is given.
      argv: arguments without the program name (default: sys.argv[1:]).
      positional: name of the positional arguments the command takes (one or
        more, e.g. 'MODEL_DIR'); None: none. They are stored in the returned
        flag values' `positional_arguments` list.

    Returns:
      (flag_values, 0) on success, or (None, status) when the command must stop
      now: 0 after --help/--helpfull, 2 after a usage error (already printed).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    wanted = help_requested(argv)
    if wanted:
        print(help_text(prog, doc, flag_values, full=wanted == "full"))
        return None, 0
    try:
        rest = flag_values([prog, *argv])
    except flags.Error as error:
        message = str(error).strip().replace("\n", " ")
        return None, fail(prog, f"{message} (--help lists the options)")
    if positional:
        if len(rest) < 2:
            return None, fail(prog, f"give at least one {positional} (--help)")
        flag_values.__dict__["positional_arguments"] = list(rest[1:])
    elif len(rest) > 1:
        return None, fail(prog, f"unexpected arguments {rest[1:]}: every option is a "
                                "--flag (--help lists them)")
    return flag_values, 0


def run(prog: str, doc: str, define_flags: Callable[[flags.FlagValues], None],
        body: Callable[[flags.FlagValues], Optional[int]],
        argv: Optional[Sequence[str]] = None,
        usage_errors: Iterable[Type[BaseException]] = (ValueError,),
        positional: Optional[str] = None) -> int:
    """Parses flags and runs `body(flag_values)`; returns the exit status.

    Args:
      prog: the command as users type it.
      doc: description printed by --help.
      define_flags: defines the command's flags in the `FlagValues` it is given.
      body: the command; returns its exit status (None means 0).
      argv: arguments without the program name (default: sys.argv[1:]).
      usage_errors: exception classes reported as `error: ...` with exit 2
        (default: ValueError, which includes `UsageError`).
      positional: see `parse`.

    Returns:
      The exit status: 0 done (or help shown), 2 usage error, else body's.
    """
    flag_values, status = parse(prog, doc, define_flags, argv, positional)
    if flag_values is None:
        return status
    try:
        status = body(flag_values)
    except tuple(usage_errors) as error:
        return fail(prog, str(error))
    return 0 if status is None else int(status)


def require(flag_values: flags.FlagValues, *names: str) -> None:
    """Raises UsageError naming the first of `names` that has no value."""
    for name in names:
        if flag_values[name].value in (None, "", []):
            raise UsageError(f"--{name} is required.")


def one_of(flag_values: flags.FlagValues, names: List[str], required: bool = True) -> str:
    """The single given flag among `names`; UsageError if several (or none, when required)."""
    given = [name for name in names if flag_values[name].value not in (None, "", [])]
    if len(given) > 1 or (required and not given):
        raise UsageError("Give exactly one of " + ", ".join(f"--{n}" for n in names) +
                         (f" (received {', '.join('--' + n for n in given)})." if given
                          else "."))
    return given[0] if given else ""


class definer:  # noqa: N801 (used like a module: `define.string(...)`)
    """`define = cli.definer(flag_values)`; `define.string(name, default, help)` is
    `flags.DEFINE_string(..., flag_values=flag_values)` (likewise integer, float,
    bool, enum, list, multi_string, ...)."""

    def __init__(self, flag_values: flags.FlagValues):
        self._flag_values = flag_values

    def __getattr__(self, kind: str):
        function = getattr(flags, f"DEFINE_{kind}")
        flag_values = self._flag_values

        def define(*args, **kwargs):
            return function(*args, flag_values=flag_values, **kwargs)

        return define

    def required(self, *names: str) -> None:
        """Marks flags required: parsing without them is a usage error naming them."""
        for name in names:
            flags.mark_flag_as_required(name, flag_values=self._flag_values)


def absl_flags_parser(argv: Sequence[str]) -> List[str]:
    """`flags_parser` for commands run by `absl.app.run` on the global FLAGS.

    Gives them this library's behaviour: --help/--helpfull print usage and
    exit 0 (absl exits 1), a flag error prints `PROG: error: ...` and exits 2
    (absl exits 1).

    Args:
      argv: the command line, program name first.

    Returns:
      The arguments left after the flags, program name first.
    """
    from absl import app  # noqa: PLC0415

    wanted = help_requested(argv[1:])
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
