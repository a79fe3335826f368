"""``ggr-kv reorder TABLE --method M``: reorder rows and fields, print PHC and hit rates."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ggr_kv.cli.commands.score import (
    add_score_arguments,
    compute_score,
    emit,
    load_score_tokenizer,
    run_metadata,
)

HELP = "reorder a table's rows and fields (original, sorted, ggr, ophr)"


def _methods() -> tuple[str, ...]:
    from ggr_kv.reorder.methods import METHODS

    return tuple(METHODS)


def _fd_group(text: str) -> tuple[str, ...] | str:
    if text.strip() == "auto":
        return "auto"
    cols = tuple(c.strip() for c in text.split(","))
    if len(cols) < 2 or not all(cols):
        raise argparse.ArgumentTypeError(
            f"FD group {text!r} must name two or more columns separated by commas"
        )
    return cols


def _knob(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"knob {text!r} must look like KEY=VALUE")
    try:
        value = json.loads(raw)  # numbers, true/false, null, lists
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", help="the table: .csv or .parquet")
    parser.add_argument("--method", required=True, choices=_methods(), help="reorder method")
    parser.add_argument(
        "--fd",
        action="extend",
        nargs="+",
        type=_fd_group,
        default=None,
        metavar="COL,COL",
        help="a functional-dependency group (columns that determine each other); "
        "give several groups after one --fd or repeat --fd; 'auto' discovers exact ones",
    )
    parser.add_argument(
        "--knob",
        action="append",
        type=_knob,
        default=[],
        metavar="KEY=VALUE",
        help="a method setting passed to ggr_kv.reorder.reorder (VALUE parsed as JSON)",
    )
    parser.add_argument("--out", default=None, metavar="PLAN.json", help="write the plan here")
    parser.add_argument("--force", action="store_true", help="let --out replace an existing file")
    add_score_arguments(parser)


def _check_out(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise FileExistsError(f"{path}: already exists; pick another --out or add --force")
    if path.is_dir():
        raise FileExistsError(f"{path}: is a directory; --out needs a file name")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such directory for --out")


def main(args: argparse.Namespace) -> int:
    from ggr_kv.core.table import load_table
    from ggr_kv.reorder.methods import reorder

    out = Path(args.out) if args.out else None
    if out is not None:
        _check_out(out, args.force)  # before the solver runs, not after
    tokenizer = load_score_tokenizer(args)
    table = load_table(args.table)
    fds: list[tuple[str, ...]] | str | None = args.fd
    if fds and "auto" in fds:
        if len(fds) > 1:
            raise ValueError("--fd auto discovers the groups; do not list groups beside it")
        fds = "auto"
    knobs = dict(args.knob)
    if args.method == "ggr":
        knobs.setdefault("progress", sys.stderr.isatty())  # a tqdm bar on a terminal
    try:
        res = reorder(table, args.method, fds=fds, **knobs)
    except TypeError as e:
        if "knob" not in str(e):
            raise
        raise ValueError(str(e)) from None  # an unknown --knob: exit 2 with the message
    if out is not None:
        text = res.plan.to_json()
        with open(out, "w" if args.force else "x", encoding="utf-8") as f:
            f.write(text)
    result: dict[str, Any] = {"table": str(args.table), "method": res.method}
    result["seconds"] = float(res.seconds)
    result["plan"] = str(out) if out is not None else None
    result.update(compute_score(table, res.plan, args, tokenizer))
    if args.json:
        result["fds"] = fds if isinstance(fds, str) else [list(g) for g in fds or []] or None
        result["knobs"] = dict(args.knob)
        result["info"] = res.info
        result.update(run_metadata(args))
    emit(result, args.json)
    return 0
