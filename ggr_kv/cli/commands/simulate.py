"""``ggr-kv simulate TABLE --plan PLAN.json --tokenizer T --num-blocks N``: predicted cache use.

Replays vLLM V1's scheduler and prefix cache over the plan's prompts (see
`ggr_kv.simulate`) and prints the predicted prefix-cache hit rate, peak KV usage and
preemptions; ``--out`` also writes the per-step table (``ggr_kv.core.schema.STEP_COLUMNS``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ggr_kv.cli.commands.score import add_prompt_arguments, run_metadata
from ggr_kv.cli.common import (
    add_input_arguments,
    check_out_path,
    emit,
    load_input,
    non_negative_int,
    positive_int,
)

LABELS = {
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
    "predicted_job_s": "predicted job s",
    "bound": "bound by",
    "baseline_predicted_job_s": "baseline predicted job s",
    "predicted_speedup": "predicted speedup vs baseline",
    "ideal_speedup": "ideal speedup (hit rates)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser)
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
        type=positive_int,
        default=16,
        metavar="TOKENS",
        help="KV block size (default 16, vLLM on GPU; the CPU backend uses 128)",
    )
    parser.add_argument(
        "--num-blocks",
        type=positive_int,
        required=True,
        metavar="N",
        help="KV blocks in the pool, as vLLM's num_gpu_blocks (KV cache tokens / block size)",
    )
    parser.add_argument("--max-num-seqs", type=positive_int, default=256, metavar="N")
    parser.add_argument(
        "--max-batched-tokens",
        type=positive_int,
        default=8192,
        metavar="TOKENS",
        help="per-step token budget, vLLM's max_num_batched_tokens (default 8192)",
    )
    parser.add_argument(
        "--output-len",
        type=positive_int,
        default=16,
        metavar="TOKENS",
        help="tokens generated per row (default 16, vLLM's default max_tokens)",
    )
    parser.add_argument(
        "--long-prefill-threshold",
        type=non_negative_int,
        default=0,
        metavar="TOKENS",
        help="vLLM's long_prefill_token_threshold (default 0: off)",
    )
    parser.add_argument(
        "--no-prefix-caching", action="store_true", help="simulate with the prefix cache off"
    )
    tp = parser.add_argument_group(
        "job time (predict it from an engine's speeds: ggr_kv.engine.throughput)"
    )
    tp.add_argument("--prefill-tok-s", type=float, default=None, metavar="TOK_S",
                    help="the engine's uncached prefill tokens/s (H200, 8B: about 43000)")
    tp.add_argument("--decode-tok-s", type=float, default=None, metavar="TOK_S",
                    help="the engine's decode tokens/s at batch")
    tp.add_argument("--step-overhead-ms", type=float, default=0.0, metavar="MS",
                    help="fixed cost of one engine step (default 0)")
    tp.add_argument("--throughputs", default=None, metavar="FILE",
                    help="a JSON of measured throughputs (Throughputs.to_dict()) instead")
    tp.add_argument("--baseline-plan", default=None, metavar="PLAN.json",
                    help="also predict this plan (e.g. the original order) and the speedup")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="write the per-step table here (.csv or .parquet); never replaces a file "
        "unless --force",
    )
    parser.add_argument("--force", action="store_true", help="let --out replace an existing file")


def _throughputs(args: argparse.Namespace):
    """The engine speeds the options give, or None (checked before any slow work)."""
    import json

    from ggr_kv.simulate import Throughputs

    if args.throughputs:
        path = Path(args.throughputs)
        try:
            return Throughputs.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise ValueError(f"{path}: not a throughputs JSON ({e})") from None
    given = (args.prefill_tok_s is not None, args.decode_tok_s is not None)
    if any(given) and not all(given):
        raise ValueError("--prefill-tok-s and --decode-tok-s go together (or give --throughputs)")
    if not any(given):
        if args.baseline_plan:
            raise ValueError("--baseline-plan predicts a speedup: give the engine's speeds too")
        return None
    if args.prefill_tok_s <= 0 or args.decode_tok_s <= 0 or args.step_overhead_ms < 0:
        raise ValueError("throughputs must be > 0 tokens/s and the step overhead >= 0 ms")
    return Throughputs(args.prefill_tok_s, args.decode_tok_s, args.step_overhead_ms / 1e3)


def main(args: argparse.Namespace) -> int:
    from ggr_kv.core.plan import ReorderPlan
    from ggr_kv.core.tokenizer import load_tokenizer
    from ggr_kv.simulate.api import simulate_plan

    out = None
    if args.out:
        if Path(args.out).suffix.lower() not in (".csv", ".parquet"):
            raise ValueError(f"{args.out}: --out must end in .csv or .parquet")
        out = check_out_path(args.out, force=args.force, inputs=[args.table, args.plan, args.baseline_plan])
    speeds = _throughputs(args)
    tokenizer = load_tokenizer(args.tokenizer)
    table = load_input(args.table, sep=args.sep).table
    plan = ReorderPlan.from_json(Path(args.plan), table)
    baseline = ReorderPlan.from_json(Path(args.baseline_plan), table) if args.baseline_plan else None
    engine = {
        "block_size": args.block_size,
        "num_blocks": args.num_blocks,
        "max_num_seqs": args.max_num_seqs,
        "max_num_batched_tokens": args.max_batched_tokens,
        "long_prefill_token_threshold": args.long_prefill_threshold,
        "enable_prefix_caching": not args.no_prefix_caching,
    }

    def replay(p):
        return simulate_plan(table, p, args.query, args.instruction, tokenizer, args.output_len,
                             **engine)

    res = replay(plan)
    if out is not None:
        from ggr_kv.core.atomic import write_atomic

        steps = res.steps
        if out.suffix.lower() == ".parquet":
            write_atomic(out, lambda p: steps.to_parquet(p, index=False), overwrite=args.force)
        else:
            write_atomic(out, lambda p: steps.to_csv(p, index=False), overwrite=args.force)
    result = {"table": str(args.table), "plan": str(args.plan), **res.summary}
    result["seconds"] = res.meta["seconds"]
    if speeds is not None:
        from ggr_kv.simulate import predict_job_time, predict_speedup

        pred = predict_job_time(res, speeds)
        result.update(predicted_job_s=pred.job_s, bound=pred.bound,
                      prediction=pred.to_dict())
        if baseline is not None:
            sp = predict_speedup(replay(baseline), res, speeds)
            result.update(baseline_predicted_job_s=sp.baseline.job_s,
                          predicted_speedup=sp.predicted, ideal_speedup=sp.ideal)
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
    emit(result, args.json, LABELS)
    return 0
