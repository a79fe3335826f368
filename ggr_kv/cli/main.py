"""``ggr-kv`` command line: one subcommand per module in ``ggr_kv.cli.commands``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``main(args) -> int``. Modules are imported only when their command runs, so
``ggr-kv reorder`` never imports vLLM.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ggr_kv.core.plan import PlanError
from ggr_kv.core.table import TableError

#: command name -> module under ggr_kv.cli.commands
COMMANDS: dict[str, str] = {
    "reorder": "reorder",
    "score": "score",
    "prompts": "prompts",
    "run": "run",
    "simulate": "simulate",
    "sweep": "sweep",
    "demo": "demo",
    "make-model": "make_model",
}

_HELP: dict[str, str] = {
    "reorder": "reorder a table's rows and fields (original, sorted, ggr, ophr)",
    "score": "score an existing plan: PHC and prefix hit rates",
    "prompts": "write the prompts of a plan as JSON lines, in run order",
    "run": "run a table through vLLM with the metrics collector and save a run folder",
    "simulate": "predict vLLM's prefix-cache hits and KV usage for a plan",
    "sweep": "run the notebooks over a grid with papermill (resumable)",
    "demo": "reorder, run and plot the bundled default dataset on the CPU engine",
    "make-model": "write a local model folder for dummy-weight runs",
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ggr-kv", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = next((a for a in (argv or []) if not a.startswith("-")), None)
    for name, mod in COMMANDS.items():
        p = sub.add_parser(name, help=_HELP[name], description=_HELP[name])
        if name == wanted:  # import only the module that will run
            importlib.import_module(f"ggr_kv.cli.commands.{mod}").add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    module = importlib.import_module(f"ggr_kv.cli.commands.{COMMANDS[args.command]}")
    try:
        return int(module.main(args) or 0)
    except (TableError, PlanError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"ggr-kv {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
