"""Row order for a finite KV cache, judged by the simulator (`ggr_kv.simulate`).

What a finite cache changes
---------------------------
vLLM's prefix cache evicts the least recently used free block when it needs room, admits
requests first come first served within ``max_num_seqs`` and the per-step token budget,
and preempts the newest running request when decoding runs out of blocks. A hit needs
the block to survive from its previous use to the next one.

In *token order* (prompts sorted by their token ids, what ``blocks`` outputs) every
shared prefix is used by one contiguous run of prompts, and a block that gets a hit is
taken out of the free queue before anything is allocated. So with every KV size vLLM
accepts (down to one request's worth), the simulator gives a token-order plan exactly
its unbounded-cache hits, and no row order of the same prompts can hit more: a finite
cache only ever holds a subset of the unbounded one (``experiments/RESULTS-finite-cache.md``
shows it for every bundled table and real sample). Orders that are NOT token orders
lose hits as the cache shrinks: the original order badly, and the code orders of
``sorted`` / ``ggr`` slightly (values that share leading tokens, e.g. links, are not
adjacent when rows are sorted by value codes).

What a finite cache still costs is recomputation: preempted requests come back and
prefill again whatever of theirs was evicted. `order_for_cache` therefore simulates the
loss-free row orders (token order and its reverse; both keep every prefix contiguous),
and the plan's own row order if it is another one, with the given engine settings and
keeps the one that computes the fewest prompt tokens (first admissions plus
re-admissions after preemption), first-admission hits breaking ties; the token order
wins ties, so the result never prefills more than the token order in the simulator.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.reorder.blockscore import BlockScorer
from ggr_kv.reorder.fragments import PromptPieces
from ggr_kv.simulate import simulate

__all__ = ["CacheChoice", "computed_tokens", "order_for_cache", "simulate_pieces"]


@dataclass
class CacheChoice:
    """Result of `order_for_cache`.

    Attributes
    ----------
    plan : the chosen plan (field orders unchanged, rows reordered).
    chosen : name of the winning row order.
    candidates : per row order, the simulator's summary numbers: ``hits`` (first
        admissions), ``queries``, ``preempted_hits``, ``preempted_queries``,
        ``computed_tokens`` (prompt tokens prefilled, recompute included),
        ``num_preemptions``, ``num_steps``.
    engine : the simulated engine settings.
    seconds : wall time of the simulations (s).
    """

    plan: ReorderPlan
    chosen: str
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def computed_tokens(summary: dict[str, Any]) -> int:
    """Prompt tokens the engine prefills: misses at first admission plus re-admissions."""
    return int(
        summary["prefix_cache_queries"]
        - summary["prefix_cache_hits"]
        + summary["preempted_queries"]
        - summary["preempted_hits"]
    )


def simulate_pieces(
    pieces: PromptPieces,
    plan: ReorderPlan,
    *,
    block_size: int,
    kv_blocks: int,
    max_num_seqs: int,
    output_len: int,
    max_num_batched_tokens: int,
    progress: bool | None = False,
) -> dict[str, Any]:
    """Simulate ``plan``'s prompts (tokens from ``pieces``) and return the summary numbers.

    ``progress``: the simulator's tqdm bar (None: only above 20,000 prompts).
    """
    tokens, offsets = pieces.encode(plan)
    res = simulate(
        tokens,
        offsets,
        int(output_len),
        block_size=int(block_size),
        num_blocks=int(kv_blocks),
        max_num_seqs=int(max_num_seqs),
        max_num_batched_tokens=int(max_num_batched_tokens),
        progress=progress,
    )
    s = res.summary
    return {
        "hits": int(s["prefix_cache_hits"]),
        "queries": int(s["prefix_cache_queries"]),
        "hit_rate": float(s["hit_rate"]),
        "preempted_hits": int(s["preempted_hits"]),
        "preempted_queries": int(s["preempted_queries"]),
        "computed_tokens": computed_tokens(s),
        "num_preemptions": int(s["num_preemptions"]),
        "num_steps": int(s["num_steps"]),
    }


def order_for_cache(
    pieces: PromptPieces,
    plan: ReorderPlan,
    *,
    block_size: int,
    kv_blocks: int,
    max_num_seqs: int = 256,
    output_len: int = 1,
    max_num_batched_tokens: int = 8192,
    scorer: BlockScorer | None = None,
    progress: bool | None = False,
) -> CacheChoice:
    """Pick the row order of ``plan`` that prefills the fewest prompt tokens.

    Tried: ``plan``'s rows in token order and in reverse token order (both loss-free),
    and ``plan`` as given when its rows are not in token order.

    Parameters
    ----------
    pieces : the table's prompt pieces (tokens of any plan; must be exact).
    plan : the field orders (and a row order) to run.
    block_size : tokens per KV block.
    kv_blocks : KV blocks in the pool as vLLM counts them (``num_gpu_blocks``).
    max_num_seqs : most requests running at once.
    output_len : tokens generated per request.
    max_num_batched_tokens : per-step token budget.
    scorer : a `BlockScorer` of ``pieces`` to reuse (sorting rows in token order).
    progress : the simulator's tqdm bars (None: only above 20,000 prompts).

    Returns
    -------
    `CacheChoice`; ``candidates`` holds the simulator's numbers of every order tried.
    """
    t0 = time.perf_counter()
    engine = {
        "block_size": int(block_size),
        "kv_blocks": int(kv_blocks),
        "max_num_seqs": int(max_num_seqs),
        "output_len": int(output_len),
        "max_num_batched_tokens": int(max_num_batched_tokens),
    }
    sim = dict(engine)
    scorer = scorer or BlockScorer(pieces, block_size)
    order = scorer.sorted_hits(plan.row_order, plan.field_perm)[0]
    tok = ReorderPlan(plan.columns, plan.row_order[order], plan.field_perm[order])
    orders = {
        "token order": tok,
        "reverse token order": ReorderPlan(
            plan.columns, tok.row_order[::-1].copy(), tok.field_perm[::-1].copy()
        ),
    }
    if not np.array_equal(order, np.arange(len(order))):
        orders["as planned"] = plan
    cands: dict[str, dict[str, Any]] = {}
    best_name, best_key = "token order", None
    for name, p in orders.items():
        s = simulate_pieces(pieces, p, progress=progress, **sim)
        cands[name] = s
        key = (s["computed_tokens"], -s["hits"])
        if best_key is None or key < best_key:
            best_name, best_key = name, key
    return CacheChoice(orders[best_name], best_name, cands, engine, time.perf_counter() - t0)
