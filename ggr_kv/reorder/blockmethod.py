"""The ``blocks`` reorder method end to end: tokenize, seed, refine, pick, order for the cache.

See `ggr_kv.reorder.blockaware` for what it optimizes and how it differs from GGR, and
`ggr_kv.reorder.cacheaware` for the finite-cache row order. This module wires the
stages, times them and records what each candidate scored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.prompts import DEFAULT_INSTRUCTION
from ggr_kv.core.table import Table
from ggr_kv.reorder.blockaware import greedy_fixed_order, refine
from ggr_kv.reorder.blockscore import BlockScorer
from ggr_kv.reorder.fragments import PromptPieces, as_tokenizer
from ggr_kv.reorder.ggr import ggr_config, ggr_unit_order
from ggr_kv.reorder.units import Units, column_scores, expand_perm, fixed_order, sort_rows

__all__ = ["BLOCKS_KNOBS", "BlocksConfig", "blocks_config", "blocks_plan"]

#: knobs `ggr_kv.reorder.reorder` accepts for ``blocks``
BLOCKS_KNOBS = (
    "tokenizer",
    "block_size",
    "query",
    "instruction",
    "kv_blocks",
    "max_num_seqs",
    "output_len",
    "max_num_batched_tokens",
    "refine_seeds",
    "progress",
)


@dataclass(frozen=True)
class BlocksConfig:
    """Settings of ``blocks`` (see `ggr_kv.reorder.reorder`).

    Attributes
    ----------
    tokenizer : name or path for `ggr_kv.core.tokenizer.load_tokenizer`, or a tokenizer.
    block_size : tokens per KV block (vLLM: 16 on GPU, 128 on the CPU backend).
    query, instruction : the prompt text every row shares.
    kv_blocks : KV blocks of the engine (``num_gpu_blocks``); None = unbounded cache,
        no simulation.
    max_num_seqs : most requests running at once (simulated with ``kv_blocks``).
    output_len : tokens generated per request (simulated with ``kv_blocks``).
    max_num_batched_tokens : per-step token budget (simulated with ``kv_blocks``).
    refine_seeds : how many of the best seeds the refinement starts from (None: 2 up
        to 60,000 cells, else 1; 0: no refinement, the best seed wins, which halves the
        time on large tables).
    progress : tqdm bars for stages over ~2 s.
    """

    tokenizer: Any = "llama3"
    block_size: int = 16
    query: str = ""
    instruction: str = DEFAULT_INSTRUCTION
    kv_blocks: int | None = None
    max_num_seqs: int = 256
    output_len: int = 1
    max_num_batched_tokens: int = 8192
    refine_seeds: int | None = None
    progress: bool = False


def _positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def blocks_config(**knobs: Any) -> BlocksConfig:
    """Validate ``blocks`` knobs (None means the default) into a `BlocksConfig`.

    Raises
    ------
    ValueError
        a knob out of range (named in the message), or a finite-cache knob
        (``max_num_seqs``, ``output_len``, ``max_num_batched_tokens``) without
        ``kv_blocks``.
    """
    given = {k: v for k, v in knobs.items() if v is not None}
    cfg = BlocksConfig(**given)
    _positive_int("block_size", cfg.block_size)
    for name in ("max_num_seqs", "output_len", "max_num_batched_tokens"):
        _positive_int(name, getattr(cfg, name))
    if cfg.refine_seeds is not None and (
        isinstance(cfg.refine_seeds, bool)
        or not isinstance(cfg.refine_seeds, (int, np.integer))
        or cfg.refine_seeds < 0
    ):
        raise ValueError(f"refine_seeds must be an integer >= 0, got {cfg.refine_seeds!r}")
    if cfg.kv_blocks is None:
        extra = [k for k in ("max_num_seqs", "output_len", "max_num_batched_tokens") if k in given]
        if extra:
            raise ValueError(
                f"{extra} only matter with kv_blocks (a finite KV cache); give kv_blocks"
            )
    elif _positive_int("kv_blocks", cfg.kv_blocks) < 2:
        raise ValueError(f"kv_blocks must be >= 2 (one is vLLM's null block), got {cfg.kv_blocks}")
    if not isinstance(cfg.query, str) or not isinstance(cfg.instruction, str):
        raise TypeError("query and instruction must be strings")
    return cfg


def _plan(columns: tuple[str, ...], rows: np.ndarray, colperm: np.ndarray) -> ReorderPlan:
    m = colperm.shape[1]
    dtype = np.int16 if m < np.iinfo(np.int16).max else np.int32
    return ReorderPlan(columns, rows, colperm.astype(dtype))


def _code_order_plan(t: Table, units: Units, unit_perm: np.ndarray) -> ReorderPlan:
    """The plan ``sorted`` / ``ggr`` output for these unit orders (rows by value codes)."""
    colperm = expand_perm(units, unit_perm)
    rows = sort_rows(t.codes, colperm)
    return _plan(t.columns, rows, colperm.take(rows, axis=0))


def _original_plan(t: Table, units: Units) -> ReorderPlan:
    """The input order; the identity field order unless it splits an FD group."""
    n = t.n_rows
    ident = ReorderPlan.identity(t)
    if all(sorted(mm) == list(range(min(mm), min(mm) + len(mm))) for mm in units.members):
        return ident  # every FD group is already adjacent in the table
    perm = np.broadcast_to(np.arange(units.n_units, dtype=np.int32), (n, units.n_units))
    return _plan(t.columns, np.arange(n, dtype=np.int64), expand_perm(units, perm))


def _rate(scorer: BlockScorer, plan: ReorderPlan, sort=None) -> tuple[float, int, int]:
    """Block hit rate, hits and prompt tokens of ``plan`` in its row order (``sort``: the
    `_sort_all` of its field orders, reused)."""
    ph = scorer.plan_hits(plan, None if sort is None else sort[1])
    return ph.block_hit_rate, int(ph.block_hits.sum()), int(ph.lengths.sum())


def _sort_all(
    scorer: BlockScorer, units: Units, unit_perm: np.ndarray, hint: np.ndarray | None = None
) -> tuple[np.ndarray, tuple]:
    """Column orders of ``unit_perm`` and `BlockScorer.sorted_hits` of all rows under them
    (``hint``: a guess of the rows' token order, e.g. the plan's value-code order)."""
    colperm = expand_perm(units, unit_perm)
    return colperm, scorer.sorted_hits(None, colperm, hint=hint)  # exact: refine starts from it


def _token_order_plan(columns: tuple[str, ...], colperm: np.ndarray, sort: tuple) -> ReorderPlan:
    """The plan of ``colperm`` with rows in the token order of ``sort`` (its `sorted_hits`)."""
    order = sort[0]
    return _plan(columns, order, colperm.take(order, axis=0))


def _fallback(t: Table, units: Units, pieces: PromptPieces, cfg: BlocksConfig, info: dict):
    """Unknown tokenizer: score the seeds on whole-prompt tokens and keep the best."""
    from ggr_kv.core.blocks import block_hashes, unbounded_prefix_hits

    cands = _seed_plans(t, units)
    best, best_rate = None, -1.0
    for name, plan in cands.items():
        tokens, offsets = pieces.encode(plan)
        hits = unbounded_prefix_hits(block_hashes(tokens, offsets, cfg.block_size)).sum()
        rate = float(hits / max(1, int(offsets[-1])))
        info["candidates"][name] = {"block_hit_rate": rate}
        if rate > best_rate:
            best, best_rate = name, rate
    info["winner"] = best
    info["note"] = (
        f"tokenizer {pieces.tokenizer_name!r} is not known to split at field boundaries: "
        "scored original, sorted and ggr on whole prompts, no refinement"
        + ("; no finite-cache row order either" if cfg.kv_blocks is not None else "")
    )
    return cands[best]


def _seed_plans(t: Table, units: Units) -> dict[str, ReorderPlan]:
    n, u = units.codes.shape
    sorted_u = np.broadcast_to(fixed_order(column_scores(units)).astype(np.int32), (n, u))
    return {
        "original": _original_plan(t, units),
        "sorted": _code_order_plan(t, units, sorted_u),
        "ggr": _code_order_plan(t, units, ggr_unit_order(units, ggr_config())[0]),
        "ggr paper": _code_order_plan(t, units, ggr_unit_order(units, ggr_config("paper"))[0]),
    }


def blocks_plan(t: Table, units: Units, cfg: BlocksConfig) -> tuple[ReorderPlan, dict]:
    """Run ``blocks`` on ``t`` (as ``units``) with ``cfg``; return the plan and its info.

    ``info`` holds: ``knobs``; ``fragment_tokenization`` (exact pieces or whole prompts);
    ``fixed_order`` (the greedy fixed field order); ``candidates`` (block hit rate, hits and
    prompt tokens of every seed as its method outputs it and of every refined result in
    token order, all scored exactly in their own row order); ``winner``; ``refinement`` (per
    refined seed: levels, nodes changed, moves taken); ``finite_cache`` (with
    ``kv_blocks``: the simulator's numbers of each row order tried and the chosen one);
    ``timings`` (seconds per stage).
    """
    tim: dict[str, float] = {}
    info: dict[str, Any] = {"candidates": {}, "timings": tim}
    tok = as_tokenizer(cfg.tokenizer)
    info["knobs"] = {
        "tokenizer": str(getattr(tok, "name", cfg.tokenizer)),
        "block_size": cfg.block_size,
        "query": cfg.query,
        "instruction": cfg.instruction,
        "kv_blocks": cfg.kv_blocks,
        "max_num_seqs": cfg.max_num_seqs if cfg.kv_blocks else None,
        "output_len": cfg.output_len if cfg.kv_blocks else None,
        "max_num_batched_tokens": cfg.max_num_batched_tokens if cfg.kv_blocks else None,
        "refine_seeds": cfg.refine_seeds,
    }
    t0 = time.perf_counter()
    pieces = PromptPieces.build(t, tok, cfg.query, cfg.instruction, progress=cfg.progress)
    tim["tokenize"] = time.perf_counter() - t0
    info["fragment_tokenization"] = pieces.exact
    if cfg.kv_blocks is not None:
        _check_pool(pieces, t, cfg)
    if not pieces.exact:
        t1 = time.perf_counter()
        plan = _fallback(t, units, pieces, cfg, info)
        tim["seeds"] = time.perf_counter() - t1
        return plan, info

    t1 = time.perf_counter()
    scorer = BlockScorer(pieces, cfg.block_size, progress=cfg.progress)
    tim["rank_pieces"] = time.perf_counter() - t1
    n, u = units.codes.shape

    t1 = time.perf_counter()
    seeds_u = {
        "sorted": np.broadcast_to(fixed_order(column_scores(units)).astype(np.int32), (n, u)),
        "ggr": ggr_unit_order(units, ggr_config(), progress=cfg.progress)[0],
        "ggr paper": ggr_unit_order(units, ggr_config("paper"), progress=cfg.progress)[0],
    }
    tim["ggr"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    fixed_sorts: dict[tuple[int, ...], tuple] = {}  # all rows under fixed unit orders
    fixed = greedy_fixed_order(scorer, units, progress=cfg.progress, sorts=fixed_sorts)
    seeds_u["fixed order"] = np.broadcast_to(fixed, (n, u))
    tim["fixed_order"] = time.perf_counter() - t1
    info["fixed_order"] = [t.columns[c] for k in fixed for c in units.members[k]]

    t1 = time.perf_counter()
    # every candidate's field orders are sorted once: the seed's token-order
    # hits, its refinement's ranking and its plan's own-order rate all come from it
    plans: dict[str, ReorderPlan] = {"original": _original_plan(t, units)}
    sorts: dict[str, tuple[np.ndarray, tuple]] = {}
    for k, v in seeds_u.items():
        twin = next((s for s in sorts if np.array_equal(seeds_u[s], v)), None)
        if twin is not None:  # e.g. both ggr presets chose the same orders
            plans[k], sorts[k] = plans[twin], sorts[twin]
            continue
        plans[k] = _code_order_plan(t, units, v)
        same = fixed_sorts.get(tuple(int(x) for x in v[0])) if n and (v == v[:1]).all() else None
        if same is not None:  # the greedy fixed order sorted all rows under it already
            sorts[k] = (expand_perm(units, v), same)
        else:
            sorts[k] = _sort_all(scorer, units, v, plans[k].row_order)
    ident = np.broadcast_to(np.arange(u, dtype=np.int32), (n, u))
    sorts["trie"] = _sort_all(scorer, units, ident)
    plans["trie"] = _token_order_plan(t.columns, *sorts["trie"])
    cp_id = sorts["trie"][0]
    if np.array_equal(plans["original"].field_perm, cp_id[plans["original"].row_order]):
        sorts["original"] = sorts["trie"]
    seed_hits = {k: int(sorts[k][1][3].sum()) for k in seeds_u}
    tim["seed_plans"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    info["refinement"] = {}
    k_seeds = cfg.refine_seeds
    if k_seeds is None:
        k_seeds = 2 if n * t.n_cols <= 60_000 else 1
    info["knobs"]["refine_seeds"] = k_seeds
    for k in sorted(seed_hits, key=lambda s: -seed_hits[s])[:k_seeds]:
        res = refine(
            scorer, units, seeds_u[k], progress=cfg.progress, desc=f"blocks: refine {k}",
            seed_sort=sorts[k][1],
        )  # fmt: skip
        name = f"{k} + refine"
        sorts[name] = (expand_perm(units, np.ascontiguousarray(res.unit_perm)), res.sort)
        plans[name] = _token_order_plan(t.columns, *sorts[name])
        info["refinement"][k] = {
            "hits_before": seed_hits[k],
            "hits_after": res.hits,
            "levels": res.levels,
        }
    tim["refine"] = time.perf_counter() - t1

    t1 = time.perf_counter()
    best_name, best_rate = None, -1.0
    names = sorted(plans, key=lambda s: (" + refine" not in s, s))  # refined win ties
    if cfg.progress:
        from tqdm.auto import tqdm

        names = tqdm(names, desc="blocks: score candidates", unit="plan")
    for name in names:
        rate, hits, total = _rate(scorer, plans[name], sorts.get(name))
        info["candidates"][name] = {"block_hit_rate": rate, "hits": hits, "prompt_tokens": total}
        if rate > best_rate:
            best_name, best_rate = name, rate
    info["winner"] = best_name
    plan = plans[best_name]
    tim["select"] = time.perf_counter() - t1
    if cfg.kv_blocks is not None:
        plan = _finite(pieces, scorer, plan, cfg, info)
    return plan, info


def _check_pool(pieces: PromptPieces, t: Table, cfg: BlocksConfig) -> None:
    """Refuse a KV pool too small for the longest prompt before any search runs."""
    lens = pieces.lengths(ReorderPlan.identity(t))
    need = -(-(int(lens.max()) + cfg.output_len - 1) // cfg.block_size)
    if need > cfg.kv_blocks - 1:
        raise ValueError(
            f"kv_blocks={cfg.kv_blocks}: the longest prompt ({int(lens.max())} tokens + "
            f"{cfg.output_len} output) needs {need} blocks of {cfg.block_size} tokens, the pool "
            f"has {cfg.kv_blocks - 1} usable; vLLM would refuse it"
        )


def _finite(
    pieces: PromptPieces, scorer: BlockScorer, plan: ReorderPlan, cfg: BlocksConfig, info: dict
) -> ReorderPlan:
    from ggr_kv.reorder.cacheaware import order_for_cache

    t1 = time.perf_counter()
    choice = order_for_cache(
        pieces,
        plan,
        block_size=cfg.block_size,
        kv_blocks=int(cfg.kv_blocks),
        max_num_seqs=cfg.max_num_seqs,
        output_len=cfg.output_len,
        max_num_batched_tokens=cfg.max_num_batched_tokens,
        scorer=scorer,
        progress=True if cfg.progress else None,
    )
    info["finite_cache"] = {
        "engine": choice.engine,
        "chosen": choice.chosen,
        "candidates": choice.candidates,
    }
    info["timings"]["simulate"] = time.perf_counter() - t1
    return choice.plan
