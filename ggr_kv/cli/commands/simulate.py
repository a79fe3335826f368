"""``ggr-kv simulate TABLE --plan PLAN.json --tokenizer T --num-blocks N``: predicted cache use.

Replays vLLM V1's scheduler and prefix cache over the plan's prompts (see
`ggr_kv.simulate`) and prints the predicted prefix-cache hit rate, peak KV usage and
preemptions; ``--out`` also writes the per-step table (``ggr_kv.core.schema.STEP_COLUMNS``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ggr_kv.cli.commands.score import add_prompt_arguments, emit, run_metadata

HELP = "predict vLLM's prefix-cache hits and KV usage for a plan"

_LABELS = {
    "table": "table",
    "plan": "plan",
    "num_requests": "requests",
    "prompt_tokens": "prompt tokens",
    "prefix_cache_queries": "prefix-cache queries (tokens)",
    "prefix_cache_hits": "prefix-cache hits (tokens)",
    "hit_rate": "hit rate",
    "peak_kv_usage": "peak KV usage",
    "num_preemptions": "preemptions",
    "evicted_blocks": "evicted blocks",
    "num_steps": "engine steps",
    "seconds": "seconds (simulation)",
}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", help="the table: .csv or .parquet")
    parser.add_argument("--plan", required=True, help="plan JSON written by `ggr-kv reorder --out`")
    add_prompt_arguments(parser)
    parser.add_argument(
        "--tokenizer",
        required=True,
        metavar="NAME",
        help="the model's tokenizer: llama3, qwen3, or a model folder with tokenizer.json",
    )
    parser.add_argument(
        "--block-size",
        type=_positive,
        default=16,
        metavar="TOKENS",
        help="KV block size (default 16, vLLM on GPU; the CPU backend uses 128)",
    )
    parser.add_argument(
        "--num-blocks",
        type=_positive,
        required=True,
        metavar="N",
        help="KV blocks in the pool, as vLLM's num_gpu_blocks (KV cache tokens / block size)",
    )
    parser.add_argument("--max-num-seqs", type=_positive, default=256, metavar="N")
    parser.add_argument(
        "--max-batched-tokens",
        type=_positive,
        default=8192,
        metavar="TOKENS",
        help="per-step token budget, vLLM's max_num_batched_tokens (default 8192)",
    )
    parser.add_argument(
        "--output-len",
        type=_positive,
        default=16,
        metavar="TOKENS",
        help="tokens generated per row (default 16, vLLM's default max_tokens)",
    )
    parser.add_argument(
        "--long-prefill-threshold",
        type=_non_negative,
        default=0,
        metavar="TOKENS",
        help="vLLM's long_prefill_token_threshold (default 0: off)",
    )
    parser.add_argument(
        "--no-prefix-caching", action="store_true", help="simulate with the prefix cache off"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="write the per-step table here (.csv or .parquet); never replaces a file "
        "unless --force",
    )
    parser.add_argument("--force", action="store_true", help="let --out replace an existing file")


def main(args: argparse.Namespace) -> int:
    from ggr_kv.core.plan import ReorderPlan
    from ggr_kv.core.table import load_table
    from ggr_kv.core.tokenizer import load_tokenizer
    from ggr_kv.simulate.api import simulate_plan

    out = Path(args.out) if args.out else None
    if out is not None:
        if out.suffix.lower() not in (".csv", ".parquet"):
            raise ValueError(f"{out}: --out must end in .csv or .parquet")
        if out.exists() and not args.force:
            raise FileExistsError(f"{out}: already exists; pick another --out or add --force")
    tokenizer = load_tokenizer(args.tokenizer)
    table = load_table(args.table)
    plan = ReorderPlan.from_json(Path(args.plan), table)
    res = simulate_plan(
        table,
        plan,
        args.query,
        args.instruction,
        tokenizer,
        args.output_len,
        block_size=args.block_size,
        num_blocks=args.num_blocks,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_batched_tokens,
        long_prefill_token_threshold=args.long_prefill_threshold,
        enable_prefix_caching=not args.no_prefix_caching,
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".parquet":
            res.steps.to_parquet(out, index=False)
        else:
            res.steps.to_csv(out, index=False)
    result = {"table": str(args.table), "plan": str(args.plan), **res.summary}
    result["seconds"] = res.meta["seconds"]
    if args.json:
        meta = run_metadata(args)
        result.update(
            {
                "params": res.params,
                "output_len": args.output_len,
                "steps_file": str(out) if out is not None else None,
                "versions": meta["versions"],
                "meta": res.meta,
            }
        )
        emit(result, True)
        return 0
    _print(result)
    return 0


def _print(result: dict) -> None:
    width = max(len(v) for v in _LABELS.values())
    for key, label in _LABELS.items():
        value = result.get(key)
        if value is None:
            continue
        if key in ("hit_rate", "peak_kv_usage"):
            text = f"{value:.4f} ({100 * value:.1f}%)"
        elif key == "seconds":
            text = f"{value:.3f}"
        elif isinstance(value, int):
            text = f"{value:,}"
        else:
            text = str(value)
        print(f"{label:<{width}}  {text}")
