"""``ggr-kv prompts TABLE --plan PLAN.json``: the plan's prompts as JSON lines, in run order.

Each line is ``{"row": <original row position>, "prompt": <text>}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ggr_kv.cli.commands.score import add_prompt_arguments
from ggr_kv.cli.common import add_input_arguments, check_out_path, load_input
from ggr_kv.core.atomic import write_atomic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser)
    parser.add_argument("--plan", required=True, help="plan JSON written by `ggr-kv reorder --out`")
    add_prompt_arguments(parser)
    parser.add_argument("--out", default=None, metavar="FILE", help="write here, not to stdout")
    parser.add_argument("--force", action="store_true", help="let --out replace an existing file")


def main(args: argparse.Namespace) -> int:
    from ggr_kv.core.plan import ReorderPlan
    from ggr_kv.core.prompts import build_prompts
    out = None
    if args.out:
        out = check_out_path(args.out, force=args.force, inputs=[args.table, args.plan])
    table = load_input(args.table, sep=args.sep).table
    plan = ReorderPlan.from_json(Path(args.plan), table)
    texts = build_prompts(table, plan, args.query, args.instruction)
    lines = (
        json.dumps({"row": r, "prompt": t}, ensure_ascii=False) + "\n"
        for r, t in zip(plan.row_order.tolist(), texts)
    )
    if out is not None:
        write_atomic(out, "".join(lines), overwrite=args.force)
        print(f"{len(texts):,} prompts (JSON lines, run order) written to {out}")
        return 0
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8")  # prompts keep their non-ASCII text
    sys.stdout.writelines(lines)  # `| head`: ggr_kv.cli.main stops quietly
    sys.stdout.flush()
    return 0
