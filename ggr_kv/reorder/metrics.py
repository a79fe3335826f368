"""How much prefix a plan shares: PHC and character, token and block prefix hit rates.

- `phc`: the GGR paper's prefix hit count (Eq. 1-2). Each row scores the sum of squared
  lengths (characters) of its leading cells that equal the previous row's leading cells;
  a cell matches only if the same position holds the same column with the same value.
- `char_hit_rate`: characters of each serialized prompt shared as a prefix with the
  PREVIOUS prompt, over all prompt characters.
- `token_hit_rate`: tokens of each prompt shared as a prefix with ANY earlier prompt (an
  unbounded cache that keeps every token), over all prompt tokens. Identical prompts
  count in full here.
- `block_hit_rate`: what vLLM's prefix cache could skip with unlimited memory: only whole
  blocks of ``block_size`` tokens hit, and a prompt's last token is always recomputed.

Prompts always come from `ggr_kv.core.prompts.build_prompts`, the one serializer. All rates are
0-1 fractions.

Speed: with a tokenizer whose split pattern is known (llama3, qwen3, model folders with
their tokenizer.json), the token and block rates come from fragment tokens
(`ggr_kv.reorder.fragments`: each distinct cell tokenized once) and the piece scorer
(`ggr_kv.reorder.blockscore`), without building or tokenizing a prompt; they equal the
whole-prompt computation (tested). Other tokenizers tokenize whole prompts.

With an unbounded cache the token rate does not depend on the ROW order (each distinct
prefix is computed once, whichever prompt brings it first), and the block rate only
through the last-token rule; both reward the per-row field orders. Row order matters for
`phc`, `char_hit_rate` and for a real, bounded cache (see ``ggr_kv.simulate``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ggr_kv.core import prompts as _prompts
from ggr_kv.core.blocks import block_hashes, unbounded_prefix_hits
from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.prompts import (
    DEFAULT_INSTRUCTION,
    build_prompts,
    encode_prompts,
    prompt_head,
    prompt_parts,
)
from ggr_kv.core.table import Table, load_table
from ggr_kv.reorder.blockscore import BlockScorer, PlanHits, _nearest_earlier_lcp
from ggr_kv.reorder.fragments import PromptPieces, as_tokenizer

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "Score",
    "block_hit_rate",
    "char_hit_rate",
    "char_prefix_hits",
    "paper_char_hit_rate",
    "trie_char_hits",
    "phc",
    "phc_per_row",
    "plan_hits",
    "score",
    "token_hit_rate",
    "token_prefix_hits",
]

#: vLLM's default KV block size on GPU (tokens); the CPU backend uses 128
DEFAULT_BLOCK_SIZE = 16


# -- PHC ----------------------------------------------------------------------------------
def _leading_matches(table: Table, plan: ReorderPlan) -> np.ndarray:
    """``(n, m)`` bool: cell f of run slot i and all cells before it equal slot i-1's."""
    codes = plan.ordered_codes(table)
    cols = plan.ordered_columns()
    eq = np.zeros(codes.shape, dtype=bool)
    if len(codes) > 1:
        eq[1:] = (codes[1:] == codes[:-1]) & (cols[1:] == cols[:-1])
    return np.logical_and.accumulate(eq, axis=1) if eq.size else eq


def phc_per_row(table: Table, plan: ReorderPlan) -> np.ndarray:
    """Prefix hit count of each run slot (paper Eq. 2), in run order.

    Returns
    -------
    ``(n,)`` int64: sum of squared cell lengths (characters^2) of the leading cells equal
    to the previous slot's; slot 0 scores 0.
    """
    lead = _leading_matches(table, plan)
    lens = plan.ordered_lengths(table)
    return np.where(lead, lens * lens, 0).sum(axis=1, dtype=np.int64)


def phc(table: Table, plan: ReorderPlan) -> int:
    """The paper's prefix hit count (Eq. 1): `phc_per_row` summed (characters^2)."""
    return int(phc_per_row(table, plan).sum())


# -- characters ---------------------------------------------------------------------------
def _lcp(a: str | bytes, b: str | bytes, start: int = 0) -> int:
    """Length of the common prefix of ``a`` and ``b``, given that ``a[:start] == b[:start]``.

    Gallops over slice comparisons (C speed), then bisects: O(log length) Python steps.
    """
    n = min(len(a), len(b))
    lo, step = min(start, n), 32
    while lo < n:
        hi = min(n, lo + step)
        if a[lo:hi] != b[lo:hi]:
            break
        lo, step = hi, step * 2
    else:
        return n
    # invariant: a[:lo] == b[:lo] and a[lo:hi] != b[lo:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def char_prefix_hits(
    table: Table,
    plan: ReorderPlan,
    query: str = "",
    instruction: str = DEFAULT_INSTRUCTION,
    *,
    texts: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Characters each prompt shares as a prefix with the previous prompt, in run order.

    Parameters
    ----------
    texts : the prompts ``build_prompts(table, plan, query, instruction)`` if already
        built (saves building them again).

    Returns
    -------
    hits, lengths : ``(n,)`` int64 characters; ``hits[0] == 0``.

    Notes
    -----
    The equal leading cells (from the integer codes) give a lower bound on each common
    prefix; it is verified with one string comparison and extended by bisection, so the
    result is exact whatever the serializer's layout.
    """
    if texts is None:
        texts = build_prompts(table, plan, query, instruction)
    n = len(texts)
    if n != table.n_rows:
        raise ValueError(f"got {n} prompts for a table of {table.n_rows} rows")
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=n)
    hits = np.zeros(n, dtype=np.int64)
    if n < 2:
        return hits, lengths
    # lower bound: the shared head plus the equal leading fragments and their separators
    parts = prompt_parts(table, plan)
    m = parts.shape[1]
    frag = np.fromiter(map(len, parts.ravel()), dtype=np.int64, count=parts.size).reshape(n, m)
    sep = len(getattr(_prompts, "_SEP", ""))
    k = _leading_matches(table, plan).sum(axis=1)
    cum = np.zeros((n, m + 1), dtype=np.int64)
    np.cumsum(frag + sep, axis=1, out=cum[:, 1:])
    bound = len(prompt_head(instruction, query)) + cum[np.arange(n), k]
    bound = np.minimum(bound, lengths)
    bound[1:] = np.minimum(bound[1:], lengths[:-1])
    bl = bound.tolist()
    for i in range(1, n):  # O(log length) C-speed slice comparisons per prompt
        a, b, s = texts[i], texts[i - 1], bl[i]
        hits[i] = _lcp(a, b, s if a[:s] == b[:s] else 0)
    return hits, lengths


def char_hit_rate(
    table: Table,
    plan: ReorderPlan,
    query: str = "",
    instruction: str = DEFAULT_INSTRUCTION,
) -> float:
    """Character-level prefix hit rate (0-1) of the serialized prompts in run order.

    Sum over prompts of the characters shared as a prefix with the previous prompt,
    divided by the total characters of all prompts.
    """
    hits, lengths = char_prefix_hits(table, plan, query, instruction)
    total = int(lengths.sum())
    return float(hits.sum() / total) if total else 0.0


def paper_char_hit_rate(table: Table, plan: ReorderPlan) -> float:
    """The GGR paper's character metric (its artifact's ``evaluate_df_prefix_hit_cnt``), 0-1.

    Each row's cell values are joined without separators (no keys, no head) in the plan's
    field order; a row scores the characters it shares as a prefix with ANY earlier row
    (a trie over the earlier rows), over all characters of all rows. Deterministic (the
    artifact's own scorer walks rows in threads).
    """
    plan.check(table)
    n = table.n_rows
    if n == 0:
        return 0.0
    cells = table.cells[plan.row_order[:, None], plan.ordered_columns()]
    texts = ["".join(r) for r in cells.tolist()]
    total = sum(map(len, texts))
    return trie_char_hits(texts) / total if total else 0.0


def trie_char_hits(texts: list[str]) -> int:
    """Characters the texts share, each with the earlier text sharing the most (a trie).

    Sum over i of the longest common prefix of ``texts[i]`` with any ``texts[j]``, j < i.
    """
    n = len(texts)
    if n < 2:
        return 0
    order = np.array(sorted(range(n), key=texts.__getitem__), dtype=np.int64)
    ol = order.tolist()
    adj = np.array([0] + [_lcp(texts[a], texts[b]) for a, b in zip(ol[:-1], ol[1:])])
    left = _nearest_earlier_lcp(order, adj)
    right = _nearest_earlier_lcp(order[::-1], np.r_[0, adj[:0:-1]])[::-1]
    return int(np.maximum(left, right).sum())


# -- tokens and blocks --------------------------------------------------------------------
def token_prefix_hits(tokens: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Tokens each prompt shares as a prefix with ANY earlier prompt (no cap, no blocks).

    Parameters
    ----------
    tokens, offsets : prompts in CSR form, in run order.

    Returns
    -------
    ``(n,)`` int64 tokens. Exact: prompts are sorted as token sequences, and the longest
    prefix shared with an earlier prompt is shared with the nearest earlier prompt on one
    side of it in that order.
    """
    tokens = np.asarray(tokens)
    offsets = np.asarray(offsets, dtype=np.int64)
    n = len(offsets) - 1
    if n < 2:
        return np.zeros(max(n, 0), dtype=np.int64)
    if len(tokens) and (int(tokens.min()) < 0 or int(tokens.max()) >= 2**32):
        raise ValueError("token ids must be in 0 .. 2**32-1")
    # big-endian bytes compare like the token sequences; prefix-shorter sorts first
    raw = tokens.astype(">u4").tobytes()
    off = (offsets * 4).tolist()
    keys = [raw[off[i] : off[i + 1]] for i in range(n)]
    order = sorted(range(n), key=keys.__getitem__)
    skeys = [keys[i] for i in order]
    adj = [0] + [_lcp(skeys[p - 1], skeys[p]) // 4 for p in range(1, n)]
    left = _nearest_earlier_lcp(order, adj)
    right = _nearest_earlier_lcp(order[::-1], [0] + adj[:0:-1])[::-1]
    best = np.maximum(left, right)
    hits = np.empty(n, dtype=np.int64)
    hits[np.asarray(order)] = best
    return hits


def plan_hits(
    table: Table,
    plan: ReorderPlan,
    tokenizer: Any,
    block_size: int = DEFAULT_BLOCK_SIZE,
    query: str = "",
    instruction: str = DEFAULT_INSTRUCTION,
    *,
    texts: list[str] | None = None,
) -> PlanHits:
    """Per-prompt token and block prefix hits of ``plan`` (run order), unbounded cache.

    Parameters
    ----------
    tokenizer : a name for `ggr_kv.core.tokenizer.load_tokenizer` or a tokenizer object.
    block_size : tokens per KV block.
    texts : the built prompts, used only when the tokenizer needs whole prompts.

    Returns
    -------
    `ggr_kv.reorder.blockscore.PlanHits`: lengths, token hits (prefix shared with any
    earlier prompt) and block hits (whole blocks, last token recomputed), in tokens.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    tok = as_tokenizer(tokenizer)
    plan.check(table)
    pieces = PromptPieces.build(table, tok, query, instruction)
    if pieces.exact:
        return BlockScorer(pieces, block_size).plan_hits(plan)
    tokens, offsets = encode_prompts(table, plan, tok, query, instruction, texts=texts)
    return PlanHits(
        np.diff(offsets),
        token_prefix_hits(tokens, offsets),
        unbounded_prefix_hits(block_hashes(tokens, offsets, block_size)),
        int(block_size),
    )


def token_hit_rate(
    table: Table,
    plan: ReorderPlan,
    tokenizer: Any,
    query: str = "",
    instruction: str = DEFAULT_INSTRUCTION,
) -> float:
    """Token-level prefix hit rate (0-1): `token_prefix_hits` summed over all prompt tokens."""
    return plan_hits(table, plan, tokenizer, 1, query, instruction).token_hit_rate


def block_hit_rate(
    table: Table,
    plan: ReorderPlan,
    tokenizer: Any,
    block_size: int = DEFAULT_BLOCK_SIZE,
    query: str = "",
    instruction: str = DEFAULT_INSTRUCTION,
) -> float:
    """Block-level prefix hit rate (0-1) with an unbounded cache, as vLLM counts hits.

    Cached tokens (whole blocks of ``block_size`` tokens whose chained hash an earlier
    prompt produced, at most ``(n_tokens - 1) // block_size`` blocks per prompt) over all
    prompt tokens.
    """
    return plan_hits(table, plan, tokenizer, block_size, query, instruction).block_hit_rate


# -- all together -------------------------------------------------------------------------
@dataclass(frozen=True)
class Score:
    """Prefix-sharing metrics of one plan.

    Attributes
    ----------
    rows, columns : table shape.
    phc : paper's prefix hit count (characters^2).
    char_hit_rate : 0-1, prefix shared with the previous prompt, in characters.
    total_chars : characters of all prompts.
    tokenizer : tokenizer name, or None when no tokenizer was given.
    prompt_tokens : tokens of all prompts (with the tokenizer's special tokens), or None.
    token_hit_rate : 0-1, prefix shared with any earlier prompt, in tokens, or None.
    block_size : tokens per KV block used for ``block_hit_rate``, or None.
    block_hit_rate : 0-1, whole-block hits with an unbounded cache (vLLM's rule), or None.
    """

    rows: int
    columns: int
    phc: int
    char_hit_rate: float
    total_chars: int
    tokenizer: str | None = None
    prompt_tokens: int | None = None
    token_hit_rate: float | None = None
    block_size: int | None = None
    block_hit_rate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of the fields."""
        return asdict(self)


def score(
    table: Table | pd.DataFrame | str | Path,
    plan: ReorderPlan,
    *,
    query: str = "",
    instruction: str = DEFAULT_INSTRUCTION,
    tokenizer: Any = None,
    block_size: int | None = None,
) -> Score:
    """All metrics of ``plan`` on ``table``.

    Parameters
    ----------
    query, instruction : the shared prompt text (see `ggr_kv.core.prompts`).
    tokenizer : a name for `ggr_kv.core.tokenizer.load_tokenizer`, a tokenizer object, or None
        to skip the token and block rates.
    block_size : tokens per KV block for the block rate (default `DEFAULT_BLOCK_SIZE`);
        used only with a tokenizer.

    ``table`` may also be a DataFrame or a CSV/Parquet path (see `load_table`).
    """
    table = load_table(table)
    plan.check(table)
    if tokenizer is not None:  # bad options fail before the slow work
        tok = as_tokenizer(tokenizer)
        bs = DEFAULT_BLOCK_SIZE if block_size is None else int(block_size)
        if bs < 1:
            raise ValueError(f"block_size must be >= 1, got {bs}")
    texts = build_prompts(table, plan, query, instruction)
    hits, lengths = char_prefix_hits(table, plan, query, instruction, texts=texts)
    total_chars = int(lengths.sum())
    out: dict[str, Any] = {
        "rows": table.n_rows,
        "columns": table.n_cols,
        "phc": phc(table, plan),
        "char_hit_rate": float(hits.sum() / total_chars) if total_chars else 0.0,
        "total_chars": total_chars,
    }
    if tokenizer is not None:
        ph = plan_hits(table, plan, tok, bs, query, instruction, texts=texts)
        out.update(
            tokenizer=str(getattr(tok, "name", type(tok).__name__)),
            prompt_tokens=int(ph.lengths.sum()),
            token_hit_rate=ph.token_hit_rate,
            block_size=bs,
            block_hit_rate=ph.block_hit_rate,
        )
    return Score(**out)
