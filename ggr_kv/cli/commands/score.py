"""``ggr-kv score TABLE --plan PLAN.json``: PHC and prefix hit rates of an existing plan.

Also holds the options and output shared with ``ggr-kv reorder``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ggr_kv.cli.common import add_input_arguments, emit, load_input, positive_int, query_file

#: printed result keys -> labels
LABELS = {
    "table": "table",
    "plan": "plan",
    "rows": "rows",
    "columns": "columns",
    "method": "method",
    "winner": "blocks: winning candidate",
    "optimizes": "optimizes",
    "seconds": "seconds (solver)",
    "prompt_text": "prompts scored",
    "phc": "PHC (chars^2)",
    "char_hit_rate": "char hit rate",
    "total_chars": "prompt chars",
    "tokenizer": "tokenizer",
    "prompt_tokens": "prompt tokens",
    "token_hit_rate": "token hit rate",
    "block_size": "block size (tokens)",
    "block_hit_rate": "block hit rate",
}


def add_prompt_arguments(parser: argparse.ArgumentParser) -> None:
    """``--query`` and ``--instruction``: the text shared by every prompt."""
    from ggr_kv.core.prompts import DEFAULT_INSTRUCTION

    q = parser.add_mutually_exclusive_group()
    q.add_argument("--query", default="", help="query text of every prompt (default: empty)")
    q.add_argument("--query-file", dest="query", type=query_file, metavar="FILE",
                   help="read the query text from FILE (long queries)")
    parser.add_argument(
        "--instruction",
        default=DEFAULT_INSTRUCTION,
        help="instruction at the start of every prompt (default: the package's)",
    )


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the metrics: prompt text, tokenizer, block size, ``--json``."""
    add_prompt_arguments(parser)
    parser.add_argument(
        "--tokenizer",
        default=None,
        metavar="NAME",
        help="also compute token and block hit rates with this tokenizer "
        "(llama3, qwen3, a folder with tokenizer.json, ...)",
    )
    parser.add_argument(
        "--block-size",
        type=positive_int,
        default=None,
        metavar="TOKENS",
        help="KV block size for the block hit rate (default 16; the CPU backend uses 128)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run_metadata(args: argparse.Namespace) -> dict[str, Any]:
    """Parameters and versions that make a printed score reproducible."""
    import platform

    import pandas as pd

    from ggr_kv import __version__

    return {
        "query": args.query,
        "instruction": args.instruction,
        "versions": {
            "ggr_kv": __version__,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pandas": pd.__version__,
        },
    }


def load_score_tokenizer(args: argparse.Namespace) -> Any:
    """Check the tokenizer options and load the tokenizer (None without ``--tokenizer``).

    Called before any slow work, so that a bad option fails at once.
    """
    if args.block_size is not None and args.tokenizer is None:
        raise ValueError("--block-size needs --tokenizer (block hits are counted in tokens)")
    if args.tokenizer is None:
        return None
    from ggr_kv.core.tokenizer import load_tokenizer

    return load_tokenizer(args.tokenizer)


def compute_score(
    table: Any, plan: Any, args: argparse.Namespace, tokenizer: Any = None
) -> dict[str, Any]:
    """`ggr_kv.reorder.metrics.score` with the command-line options, as a dict."""
    from ggr_kv.reorder.metrics import score

    counted = ("instruction + query + row" if args.query
               else "instruction + row (no --query: give the run's query to score its prompts)")
    return {"prompt_text": counted, **score(
        table,
        plan,
        query=args.query,
        instruction=args.instruction,
        tokenizer=tokenizer,
        block_size=args.block_size,
    ).to_dict()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser)
    parser.add_argument("--plan", required=True, help="plan JSON written by `ggr-kv reorder --out`")
    add_score_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from ggr_kv.core.plan import ReorderPlan

    tokenizer = load_score_tokenizer(args)
    table = load_input(args.table, sep=args.sep).table
    plan = ReorderPlan.from_json(Path(args.plan), table)
    result = {"table": str(args.table), "plan": str(args.plan)}
    result.update(compute_score(table, plan, args, tokenizer))
    if args.json:
        result.update(run_metadata(args))
    emit(result, args.json, LABELS)
    return 0
