"""Speed of `ggr_kv.simulate`: 100,000 prompts of ~500 tokens in under 60 s.

Synthetic prompts shaped like table queries: a 100-token instruction shared by all,
150 tokens shared by each group of ~50 consecutive rows (rows sorted by a key, as a
reorder plan would run them), then 150-350 tokens of row-specific text. Token ids are
random; only equality matters to the cache.

Run: ``.venv/bin/python benchmarks/bench_simulate.py`` (``--prompts 10000`` for a quick
look). Prints a Markdown table and exits with status 1 if any case over 100,000 prompts
misses the target.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

from ggr_kv import __version__
from ggr_kv.simulate import simulate

TARGET_S = 60.0

#: (label, output tokens per request, num_blocks of 16 tokens)
CASES = [
    ("1 output token (prefill only), 40k blocks", 1, 40_000),
    ("16 output tokens, 40k blocks", 16, 40_000),
    ("16 output tokens, 5k blocks", 16, 5_000),
    ("16 output tokens, 2k blocks (preempts)", 16, 2_000),
    ("64 output tokens, 40k blocks", 64, 40_000),
]


def make_prompts(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic prompts (CSR tokens, offsets) of 400-600 tokens, grouped by key."""
    rng = np.random.default_rng(seed)
    n_groups = max(1, n // 50)
    group = np.sort(rng.integers(0, n_groups, n))
    instruction = rng.integers(0, 128_000, 100)
    group_text = rng.integers(0, 128_000, (n_groups, 150))
    lens = 250 + rng.integers(150, 351, n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    tokens = rng.integers(0, 128_000, int(offsets[-1]))
    starts = offsets[:-1, None]
    tokens[starts + np.arange(100)] = instruction
    tokens[starts + 100 + np.arange(150)] = group_text[group]
    return tokens, offsets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=100_000)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--max-batched-tokens", type=int, default=8192)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    tokens, offsets = make_prompts(args.prompts)
    gen_s = time.perf_counter() - t0
    n_tok = int(offsets[-1])
    print(
        f"ggr_kv {__version__}, python {platform.python_version()}, numpy {np.__version__}, "
        f"{platform.machine()} x{os.cpu_count()} ({platform.processor() or 'cpu'}); "
        f"{args.prompts:,} prompts, {n_tok:,} tokens ({n_tok / args.prompts:.0f}/prompt), "
        f"generated in {gen_s:.1f} s; block 16, max_num_seqs {args.max_num_seqs}, "
        f"max_num_batched_tokens {args.max_batched_tokens}\n"
    )
    print(
        "| case | wall s | CPU s | steps | hit rate | peak KV | preemptions | evicted blocks |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    failed = False
    for label, out_len, blocks in CASES:
        t0, c0 = time.perf_counter(), time.process_time()
        res = simulate(
            tokens,
            offsets,
            out_len,
            block_size=16,
            num_blocks=blocks,
            max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_batched_tokens,
            progress=False,
        )
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        s = res.summary
        print(
            f"| {label} | {secs:.1f} | {cpu:.1f} | {s['num_steps']:,} | {s['hit_rate']:.3f} | "
            f"{s['peak_kv_usage']:.2f} | {s['num_preemptions']:,} | {s['evicted_blocks']:,} |",
            flush=True,
        )
        if args.prompts >= 100_000 and out_len <= 16 and secs > TARGET_S:
            failed = True
    if failed:
        print(f"\nFAILED: a case with <= 16 output tokens took more than {TARGET_S:.0f} s")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
