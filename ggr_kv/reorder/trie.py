"""``trie``: the prompts as given, run in a depth-first walk of their token trie (a baseline).

What BatchLLM's global prefix tree and SGLang's longest-prefix-match scheduling
approximate: the field order is left alone (the table's column order, FD groups kept
together) and only the ROW order changes, to the depth-first order of the token trie of
the rendered prompts, i.e. token-lexicographic order. Each prompt then shares with the
previous one the longest prefix any earlier prompt offers, so a cache that keeps the
recent prefixes loses nothing. With an unbounded cache the block hits of a fixed field
order barely depend on the row order (only through the last-token rule), so this is the
"reorder rows only" floor that per-row field orders (``ggr``, ``blocks``) improve on.

Tokens come from `ggr_kv.reorder.fragments.PromptPieces` (each distinct cell tokenized
once) and the order from `ggr_kv.reorder.blockscore.BlockScorer`; a tokenizer that does
not split at field boundaries falls back to tokenizing whole prompts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.prompts import DEFAULT_INSTRUCTION
from ggr_kv.core.table import Table
from ggr_kv.reorder.blockscore import BlockScorer
from ggr_kv.reorder.fragments import PromptPieces, as_tokenizer
from ggr_kv.reorder.units import Units, expand_perm

__all__ = ["TRIE_KNOBS", "trie_plan"]

#: knobs `ggr_kv.reorder.reorder` accepts for ``trie``
TRIE_KNOBS = ("tokenizer", "block_size", "query", "instruction")


def trie_plan(
    t: Table,
    units: Units,
    tokenizer: Any = "llama3",
    query: str = "",
    instruction: str = DEFAULT_INSTRUCTION,
    block_size: int | None = None,
) -> tuple[ReorderPlan, dict]:
    """Rows in token-trie DFS order, fields in table order (FD groups adjacent).

    ``block_size`` is accepted (the runner passes it) and unused: the order does not
    depend on it. Returns the plan and an info dict (``tokenizer``, ``exact_pieces``).
    """
    n, u = units.codes.shape
    colperm = expand_perm(units, np.broadcast_to(np.arange(u, dtype=np.int32), (n, u)).copy())
    tok = as_tokenizer(tokenizer)
    pieces = PromptPieces.build(t, tok, query, instruction)
    if pieces.exact:
        order = BlockScorer(pieces, block_size or 16).sorted_hits(None, colperm)[0]
    else:
        ident = ReorderPlan(t.columns, np.arange(n, dtype=np.int64), colperm)
        tokens, offsets = pieces.encode(ident)
        seqs = [tuple(tokens[offsets[i] : offsets[i + 1]].tolist()) for i in range(n)]
        order = np.array(sorted(range(n), key=seqs.__getitem__), dtype=np.int64)
    m = colperm.shape[1]
    dtype = np.int16 if m < np.iinfo(np.int16).max else np.int32
    plan = ReorderPlan(t.columns, np.asarray(order, np.int64), colperm[order].astype(dtype))
    info = {"tokenizer": str(getattr(tok, "name", tokenizer)), "exact_pieces": pieces.exact}
    return plan, info
