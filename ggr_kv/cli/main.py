"""``ggr-kv`` command line: one subcommand per module in ``ggr_kv.cli.commands``.

Each command module defines ``add_arguments(parser)`` and ``main(args) -> int``; its
one-line help is in `COMMANDS`. Modules are imported only when their command runs, so
``ggr-kv reorder`` never imports vLLM. Every error ends the command with one line on
stderr naming what is at fault and exit status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ggr_kv import __version__

#: command name -> (module under ggr_kv.cli.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "reorder": ("reorder", "reorder a table's rows and fields (original, sorted, ggr, ...)"),
    "score": ("score", "score an existing plan: PHC and prefix hit rates"),
    "prompts": ("prompts", "write the prompts of a plan as JSON lines, in run order"),
    "run": ("run", "run a table through vLLM with the metrics collector and save a run folder"),
    "compare": ("compare", "run several orderings of a table on one engine: report, speedups, figures"),
    "simulate": ("simulate", "predict vLLM's prefix-cache hits and KV usage for a plan"),
    "predict": ("predict", "predict job time per ordering from a calibration file (no GPU)"),
    "sweep": ("sweep", "run a grid of datasets x orderings x engines (resumable)"),
    "demo": ("demo", "compare every ordering on the bundled table (the README's demo table)"),
    "report": ("report", "remake the figures and the Markdown report of run folders"),
    "datasets": ("datasets", "list the bundled datasets"),
    "make-model": ("make_model", "write a local model folder for dummy-weight runs"),
}

#: what ``ggr-kv --help`` opens with
USER_DESCRIPTION = (
    "Reorder a table's rows and fields so that vLLM's prefix cache serves more of the\n"
    "prompts (GGR), run them through vLLM, and see in curves and a report what the KV\n"
    "cache did."
)
USER_EPILOG = """start here:
  ggr-kv datasets                              the bundled tables
  ggr-kv compare movies --rows 40              every ordering on one engine: report + figures
  ggr-kv compare my.csv --query "Is it spam?"  the same on your own table
  ggr-kv COMMAND --help                        each command's options"""

#: exit status of every error the command reports
EXIT_ERROR = 2


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ggr-kv", description=USER_DESCRIPTION, epilog=USER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ggr-kv {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = next((a for a in (argv or []) if not a.startswith("-")), None)
    for name, (mod, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == wanted:  # import only the module that will run
            importlib.import_module(f"ggr_kv.cli.commands.{mod}").add_arguments(p)
    return parser


def _quiet_broken_pipe() -> int:
    """``ggr-kv ... | head``: stop writing without a traceback (Python's recipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 0


def error_line(exc: BaseException) -> str:
    """One line naming what went wrong: the exception's first line (its type if empty)."""
    from ggr_kv.engine.errors import cause_line

    text = str(exc).strip()
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = f"missing key {exc.args[0]!r}"
    line = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, RuntimeError) or " validation error" in line:
        line = cause_line(exc)  # the cause, not "1 validation error for ModelConfig"
    known = (ValueError, OSError, LookupError, ImportError, TypeError, RuntimeError)
    return line if isinstance(exc, known) else f"{type(exc).__name__}: {line}"


def main(argv: list[str] | None = None) -> int:
    # no downloads at run time: offline before any Hugging Face client loads (HF_HUB_OFFLINE=0
    # in the environment allows them)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", os.environ["HF_HUB_OFFLINE"])
    from ggr_kv.engine.lifetime import EXIT_INTERRUPTED, interrupted, stop_on_interrupt

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    module = importlib.import_module(f"ggr_kv.cli.commands.{COMMANDS[args.command][0]}")
    try:
        with stop_on_interrupt():
            return int(module.main(args) or 0)
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt:
        print(f"ggr-kv {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if interrupted():  # what Ctrl-C made fail (an engine stopping mid-start) is no error
            print(f"ggr-kv {args.command}: interrupted ({error_line(e)})", file=sys.stderr)
            return EXIT_INTERRUPTED
        if args.debug:
            raise
        hint = "" if _expected(e) else " (--debug shows the traceback)"
        print(f"ggr-kv {args.command}: error: {error_line(e)}{hint}", file=sys.stderr)
        return EXIT_ERROR


def _expected(exc: BaseException) -> bool:
    """Errors the commands raise on purpose for bad input (their message says it all)."""
    from ggr_kv.core.plan import PlanError
    from ggr_kv.core.table import TableError

    return isinstance(exc, (TableError, PlanError, FileNotFoundError, FileExistsError,
                            ValueError, ConnectionError, ImportError, KeyError))


if __name__ == "__main__":
    sys.exit(main())
