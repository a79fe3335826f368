"""``ggr-kv prompts TABLE --plan PLAN.json``: the plan's prompts as JSON lines, in run order.

Each line is ``{"row": <original row position>, "prompt": <text>}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ggr_kv.cli.commands.score import add_prompt_arguments

HELP = "write the prompts of a plan as JSON lines, in run order"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", help="the table: .csv or .parquet")
    parser.add_argument("--plan", required=True, help="plan JSON written by `ggr-kv reorder --out`")
    add_prompt_arguments(parser)
    parser.add_argument("--out", default=None, metavar="FILE", help="write here, not to stdout")
    parser.add_argument("--force", action="store_true", help="let --out replace an existing file")


def main(args: argparse.Namespace) -> int:
    from ggr_kv.core.plan import ReorderPlan
    from ggr_kv.core.prompts import build_prompts
    from ggr_kv.core.table import load_table

    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not args.force:
        raise FileExistsError(f"{out}: already exists; pick another --out or add --force")
    table = load_table(args.table)
    plan = ReorderPlan.from_json(Path(args.plan), table)
    texts = build_prompts(table, plan, args.query, args.instruction)
    lines = (
        json.dumps({"row": r, "prompt": t}, ensure_ascii=False) + "\n"
        for r, t in zip(plan.row_order.tolist(), texts)
    )
    if out is not None:
        with open(out, "w" if args.force else "x", encoding="utf-8") as f:
            f.writelines(lines)
        return 0
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8")  # prompts keep their non-ASCII text
    try:
        sys.stdout.writelines(lines)
        sys.stdout.flush()
    except BrokenPipeError:  # `ggr-kv prompts ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0
