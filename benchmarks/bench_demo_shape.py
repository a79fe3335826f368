"""Does prefill dominate the demo's job on this CPU?  What a cache hit saves, per model shape.

`ggr-kv demo` runs 120 movie rows with 4 output tokens each. A prefix-cache hit saves
prefill work only, so an ordering can speed a job up only as far as the work hits remove
is a large part of it. This measures, per dummy-weight shape of
``ggr_kv.engine.models.SHAPES``, on ONE engine with prefix caching on (eager, as the demo):

- ``cold``: the demo's prompts in their input order after a cache reset (few hits: only
  the shared instruction fits whole 128-token blocks);
- ``warm``: the same prompts again (every whole block of every prompt now hits);
- ``decode``: the same warm pass with ``K`` more output tokens per row.

From these: the prefill cost of a prompt token, as a hit removes it,
``(cold - warm) / (hits_warm - hits_cold)``; the decode cost of a generated token,
``(decode - warm) / (rows * K)``; the share of the cold job that hits can remove
(``prefill ms/token * prompt tokens / cold``); and the speedup that GGR's 70.9% block hit
rate on these rows would then give, ``cold / (cold - saved * 0.709 * prompt tokens)``.
Times are the median of ``--repeats`` with min-max, as this process's CPU time (vLLM's
CPU engine runs one torch thread in this process, so CPU time is what the job costs on
an idle core) and as wall time (which includes waiting for other processes when the
machine is shared).

Run: ``.venv/bin/python benchmarks/bench_demo_shape.py`` (``--shapes tiny-llama
demo-llama``, ``--rows 120``). Prints a Markdown table; exits 1 when the demo shape's
removable share (CPU) is under ``--min-share`` (default 0.6: with 70.9% hits that is a
predicted speedup above 1.7x).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

GGR_HIT_RATE = 0.717  # block hit rate of GGR on the demo's 120 movie rows, 128-token blocks


def _spread(xs: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(xs))} [{fmt.format(min(xs))}-{fmt.format(max(xs))}]"


def _timed(llm, prompts, max_tokens: int) -> tuple[float, float, int, int]:
    from vllm import SamplingParams

    sp = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    w0, c0 = time.perf_counter(), time.process_time()
    outs = llm.generate(prompts, sp, use_tqdm=False)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    tokens = sum(len(o.prompt_token_ids) for o in outs)
    hits = sum(int(o.num_cached_tokens or 0) for o in outs)
    return wall, cpu, tokens, hits


def measure(shape: str, rows: int, k: int, repeats: int) -> dict:
    """Cold, warm and decode passes of the demo's prompts on one engine of ``shape``."""
    from ggr_kv.core.plan import ReorderPlan
    from ggr_kv.core.prompts import DEFAULT_INSTRUCTION, build_prompts
    from ggr_kv.core.table import Table
    from ggr_kv.datasets import load_dataset
    from ggr_kv.engine.config import EngineConfig, make_llm, shutdown_llm

    ds = load_dataset("movies", n=rows, sample="head")
    table = Table.from_frame(ds.frame)
    prompts = build_prompts(table, ReorderPlan.identity(table), ds.query("filter").text,
                            DEFAULT_INSTRUCTION)
    t0 = time.perf_counter()
    llm = make_llm(EngineConfig(model=shape, enforce_eager=True))
    res: dict = {"shape": shape, "start_s": time.perf_counter() - t0, "rows": rows, "k": k}
    try:
        for _ in range(repeats):
            llm.reset_prefix_cache()
            for name, mt in (("cold", 4), ("warm", 4), ("decode", 4 + k)):
                wall, cpu, tokens, hits = _timed(llm, prompts, mt)
                for key, v in (("wall", wall), ("cpu", cpu), ("hits", hits)):
                    res.setdefault(f"{name}_{key}", []).append(v)
                res["prompt_tokens"] = tokens
    finally:
        shutdown_llm(llm)
    return res


def derive(res: dict, kind: str) -> dict:
    """Per-token costs, the removable share of the cold job and GGR's predicted speedup."""
    med = {k: statistics.median(v) for k, v in res.items() if isinstance(v, list)}
    hits = med["warm_hits"] - med["cold_hits"]
    saved = max(med[f"cold_{kind}"] - med[f"warm_{kind}"], 0.0) / max(hits, 1)  # s per token
    decode = max(med[f"decode_{kind}"] - med[f"warm_{kind}"], 0.0) / (res["rows"] * res["k"])
    cold = med[f"cold_{kind}"]
    share = min(saved * res["prompt_tokens"] / cold, 1.0)
    ggr_saved = saved * (GGR_HIT_RATE * res["prompt_tokens"] - med["cold_hits"])
    return {"prefill_ms_per_1k": 1e6 * saved, "decode_ms_per_token": 1e3 * decode,
            "share": share, "speedup": cold / max(cold - ggr_saved, 1e-9)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", nargs="+", default=["tiny-llama", "demo-llama"])
    ap.add_argument("--demo-shape", default="demo-llama")
    ap.add_argument("--rows", type=int, default=120)
    ap.add_argument("--decode-tokens", type=int, default=8, help="K extra output tokens")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-share", type=float, default=0.6)
    args = ap.parse_args()
    from ggr_kv.engine.env import setup_vllm_env

    setup_vllm_env(quiet=True)
    load0 = os.getloadavg()[0]
    results = [measure(s, args.rows, args.decode_tokens, args.repeats) for s in args.shapes]
    print(f"\n{args.rows} movie rows, 4 output tokens, {os.cpu_count()} CPUs, load average "
          f"{load0:.1f} -> {os.getloadavg()[0]:.1f}; median [min-max] of {args.repeats}\n")
    print("| shape | engine start s | prompt tokens | cold job s (CPU) | warm job s (CPU) "
          "| cold job s (wall) | warm job s (wall) | hits cold / warm (tokens) "
          "| prefill ms / 1k tokens (CPU) | decode ms / token (CPU) "
          "| share of the cold job hits can remove (CPU) | predicted GGR speedup (CPU) "
          "| share (wall) | predicted GGR speedup (wall) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ok = True
    for r in results:
        c, w = derive(r, "cpu"), derive(r, "wall")
        hits = f"{statistics.median(r['cold_hits']):,.0f} / {statistics.median(r['warm_hits']):,.0f}"
        print(f"| {r['shape']} | {r['start_s']:.1f} | {r['prompt_tokens']:,} | "
              f"{_spread(r['cold_cpu'])} | {_spread(r['warm_cpu'])} | "
              f"{_spread(r['cold_wall'])} | {_spread(r['warm_wall'])} | {hits} | "
              f"{c['prefill_ms_per_1k']:.0f} | {c['decode_ms_per_token']:.2f} | "
              f"{100 * c['share']:.0f}% | {c['speedup']:.2f}x | {100 * w['share']:.0f}% | "
              f"{w['speedup']:.2f}x |")
        if r["shape"] == args.demo_shape and c["share"] < args.min_share:
            ok = False
    print(f"\npredicted speedup at GGR's {100 * GGR_HIT_RATE:.1f}% hits: cold / (cold - hits "
          "x prefill cost per token); decode unchanged")
    if not ok:
        print(f"FAIL: {args.demo_shape}'s removable share is under {args.min_share:.0%}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
