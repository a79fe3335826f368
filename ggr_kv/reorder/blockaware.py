"""``blocks``: field orders chosen for the prompt tokens vLLM's prefix cache really serves.

The objective
-------------
The number of prompt tokens that vLLM serves from its prefix cache, for the project's own
serialization (`ggr_kv.core.prompts`), the real tokenizer and the engine's block size:
whole blocks of chained hashes, the last token always recomputed, the shared
instruction + query head included (it sets where block boundaries fall in each row's
fields). `ggr_kv.reorder.blockscore.BlockScorer` computes it exactly (equal to
`ggr_kv.reorder.metrics.block_hit_rate`, which matched vLLM to the token) from
fragment tokens, in one sort, so the search below can afford to score many candidates.

What ``blocks`` does differently from GGR, and why
--------------------------------------------------
GGR (`ggr_kv.reorder.ggr`) ranks values by ``len(v)^2 * (count - 1)`` in CHARACTERS and
credits every shared character. vLLM credits neither: it counts tokens, and only in
whole blocks of 16 (GPU) or 128 (CPU) tokens; a shared prefix that ends 15 tokens into a
block gains nothing for those 15 tokens, and the head's length decides where the blocks
start. Short shared fields (``"topcritic": "False"``) are worth a whole block to some
rows and nothing to others; squaring character lengths over-values long fields whose
rows then diverge mid-block, and ignores the key text (``"genre": "``) that rows share
even when their values differ. So on a real 28k-row table GGR's PHC was 52% above
`sorted`'s while vLLM cached fewer tokens with it (issue 10).

``blocks`` keeps GGR's structure (a row order that groups equal prefixes, per-row field
orders decided group by group) but decides with the exact metric:

1. Seeds: ``original``, ``sorted``, ``ggr`` with our settings and with the paper's
   (``preset="paper"``; same FD groups), the ``trie`` order (fields as given, rows in
   token order), and a greedy fixed field order: position by position, the unit whose
   placement (rest in statistics order) gives the most block hits over the whole table.
2. Refinement (a local search that only accepts improvements), level by level, from the
   best seed(s): rows that share the same first ``j`` fields and values form a node (a
   prefix shared in tokens). For the units not yet placed that would share the most
   tokens at position ``j`` (GGR's value score in tokens, `token_scores`; the best
   `SHORTLIST`), two moves are scored exactly: put the unit at position ``j`` in ALL the
   node's rows, or only in the rows whose value of it is shared inside the node (GGR's
   group step). A node takes its best move only if it raises the node's block hits;
   hits of different nodes are independent (rows of two nodes diverge inside the shared
   prefix), so all nodes are scored in one pass per move. Each level therefore never
   lowers the total (checked exactly after each level). Most moves are scored without
   sorting the rows again (`ggr_kv.reorder.blockmoves`: a subgroup keeps its old token
   order), the rest by a sort of the nodes they touch; both give the same totals.
3. The result, in token order (the unbounded-cache optimum for its field orders), and
   every seed as given are scored exactly; the best one is returned. So ``blocks`` is
   never below ``original``, ``sorted`` or ``ggr`` under the same tokenizer, block size
   and prompt text, and ``info`` says which candidate won and every candidate's rate.

FD groups are units that travel together, as in the other methods.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ggr_kv.reorder.blockmoves import (
    STACK_ROWS,
    MoveBase,
    dense_keys,
    move_cols,
    move_totals_many,
)
from ggr_kv.reorder.blockscore import BlockScorer, served_tokens
from ggr_kv.reorder.units import Units, column_scores, expand_perm, fixed_order, one_order

__all__ = ["BlockSearch", "greedy_fixed_order", "refine"]


@dataclass
class BlockSearch:
    """Result of `refine`: unit orders and what the search did.

    Attributes
    ----------
    unit_perm : ``(n, u)`` unit order of each row (original row ids).
    hits : block hits (tokens) of ``unit_perm`` with rows in token order.
    sort : exact `BlockScorer.sorted_hits` of every row under ``unit_perm``'s columns.
    levels : per level: nodes examined, nodes changed, hits after the level, and the
        moves taken as ``{"unit:all"|"unit:shared": nodes}``.
    seconds : wall time (s).
    """

    unit_perm: np.ndarray
    hits: int
    sort: tuple
    levels: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _unit_value_ids(units: Units) -> np.ndarray:
    """``(n, u)`` int64 global id of each (unit, code)."""
    off = np.r_[0, np.cumsum(units.n_distinct)[:-1]].astype(np.int64)
    return units.codes.astype(np.int64) + off[None, :]


def _score_rows(
    scorer: BlockScorer,
    rows: np.ndarray,
    cols: np.ndarray,
    group: np.ndarray | None = None,
    start: int = 0,
    hint: np.ndarray | None = None,
) -> np.ndarray:
    """Block hits of ``rows`` with column orders ``cols``, in token order within ``group``
    (``hint``: a guess of that order, see `BlockScorer.sorted_hits`)."""
    order, _, _, hits = scorer.sorted_hits(rows, cols, group, start, exact_lcp=False, hint=hint)
    out = np.empty(len(rows), dtype=np.int64)
    out[order] = hits
    return out


@dataclass
class _NodeScores:
    """Block hits of one refinement level's nodes, for rescoring only what a move touches.

    Rows are sorted by node, then in token order, so a row's hits depend only on its own
    node and on the last row of the node before it. A move that changes the rows of
    nodes T therefore changes the totals of T and the first row of each node after one
    in T; `totals_with` rescores exactly those rows plus, for each node of T, the last
    row of the (unchanged) node before it, and gets the same totals as scoring every
    row (identical sort keys and ties, a subset in the same relative order).
    """

    nidx: np.ndarray  # (r,) dense node of each row, rows sorted by node first
    start: int  # first field position that may differ inside a node
    hits: np.ndarray  # (r,) block hits of each row as it is
    totals: np.ndarray  # (N,) float64 node totals (bincount weights: exact below 2**53)
    first: np.ndarray  # (N,) row (position in ``rows``) each node starts with, sorted
    last: np.ndarray  # (N,) row each node ends with
    moves: MoveBase  # what `move_totals` needs (exact prefixes of this order)

    @classmethod
    def of(cls, scorer, rows, cols, nidx, N, start, sort=None) -> _NodeScores:
        """``sort``: `BlockScorer.sorted_hits` of ``rows`` grouped by ``nidx`` (exact),
        e.g. from `_grouped_sort`; None = sort them here."""
        if sort is None:
            sort = scorer.sorted_hits(rows, cols, nidx, start)
        order, h = sort[0], sort[3]
        hits = np.empty(len(rows), dtype=np.int64)
        hits[order] = h
        sn = nidx[order]
        brk = np.flatnonzero(np.concatenate(([True], sn[1:] != sn[:-1])))
        ends = np.append(brk[1:] - 1, len(sn) - 1)
        first = np.zeros(N, dtype=np.int64)
        last = np.zeros(N, dtype=np.int64)
        first[sn[brk]] = order[brk]
        last[sn[ends]] = order[ends]
        tot = np.bincount(nidx, weights=hits, minlength=N)
        mb = MoveBase.of(scorer, rows, cols, nidx, N, sort)
        return cls(nidx, start, hits, tot, first, last, mb)

    def totals_with(self, scorer, lv, mask, k, uv) -> np.ndarray:
        """``(N,)`` node totals once the rows in ``mask`` move unit ``k`` to slot ``lv.j``.

        Nodes `ggr_kv.reorder.blockmoves.move_totals` can score without a sort are
        scored there; the others by sorting their rows again.
        """
        return self.totals_many(scorer, lv, [mask], [k], uv)[0]

    def totals_many(self, scorer, lv, masks, ks, uv) -> list[np.ndarray]:
        """`totals_with` of several moves (unit ``ks[i]`` in the rows of ``masks[i]``);
        the light ones scored in one pass (`move_totals_many`)."""
        out = []
        light = move_totals_many(scorer, lv, self.moves, masks, ks, uv)
        for (done, lt), mask, k in zip(light, masks, ks):
            rest = mask & ~done[self.nidx]
            tot = self.totals.copy() if not rest.any() else self._sorted_totals(scorer, lv, rest, k)
            if lt is not None:
                tot[done] = lt[done]
            out.append(tot)
        return out

    def _sorted_totals(self, scorer, lv, mask, k) -> np.ndarray:
        """`totals_with` by sorting the rows of the nodes ``mask`` touches (and the
        neighbours their first and last rows compare with)."""
        rows, cols = lv.rows, lv.cols
        at, src = lv.col_starts(k)
        w = int(lv.width[k])
        nidx, N = self.nidx, len(self.totals)
        touched = np.zeros(N, dtype=bool)
        touched[nidx[mask]] = True
        after = np.zeros(N, dtype=bool)  # unchanged nodes right after a changed one
        after[1:] = touched[:-1] & ~touched[1:]
        before = np.zeros(N, dtype=bool)  # unchanged nodes right before a changed one
        before[:-1] = touched[1:] & ~touched[:-1]
        take = touched[nidx]
        take[self.first[after]] = True
        take[self.last[before]] = True
        sub = np.flatnonzero(take)
        a = at[sub]  # rows that keep their order move their block onto itself
        trial = move_cols(cols.take(sub, axis=0), a, np.where(mask[sub], src[sub], a), w)
        h = _score_rows(scorer, rows[sub], trial, nidx[sub], self.start, self.moves.hint(sub))
        ns = nidx[sub]
        inside = touched[ns]
        tot = np.where(
            touched, np.bincount(ns[inside], weights=h[inside], minlength=N), self.totals
        )
        ids = np.flatnonzero(after)
        if len(ids):
            f = self.first[ids]
            tot[ids] += h[np.searchsorted(sub, f)] - self.hits[f]
        return tot


def _grouped_sort(scorer: BlockScorer, every: tuple, rows, cols, nidx) -> tuple:
    """`BlockScorer.sorted_hits` of ``rows`` grouped by node ``nidx``, from ``every``:
    the exact `BlockScorer.sorted_hits` of all rows of the table under the same orders
    (``rows``: ascending row ids, as `np.flatnonzero` gives them; ``cols``: their orders).

    A node's rows share their first fields and values, so they are contiguous in the
    token order of all rows (a row between two of them shares those pieces too) and keep
    their relative order and their prefix with the previous row there (ties stay in row
    order, as `np.lexsort` keeps them). Only each node's first row compares with another
    node (the one before it in ``nidx`` order): those pairs are compared here.
    """
    gorder, glcp, glen, _ = every
    where = np.full(len(gorder), -1, dtype=np.int64)
    where[rows] = np.arange(len(rows))
    at = where[gorder]
    keep = at >= 0
    loc = at[keep]  # level positions in token order
    o = np.argsort(nidx[loc], kind="stable")
    order = loc[o]
    lcp = glcp[keep][o]
    lengths = glen[keep][o]
    sn = nidx[order]
    brk = np.flatnonzero(sn[1:] != sn[:-1]) + 1  # first rows of the nodes after the first
    if len(order):
        lcp[0] = 0
    if len(brk):
        a, b = order[brk - 1], order[brk]
        lcp[brk] = scorer.pair_lcp(rows[a], cols.take(a, axis=0), rows[b], cols.take(b, axis=0))
    return order, lcp, lengths, served_tokens(lcp, lengths, scorer.block_size)


def _resort_nodes(scorer: BlockScorer, every: tuple, rows, cols_all, nidx, start: int) -> tuple:
    """`BlockScorer.sorted_hits` of all rows under ``cols_all`` (``(n, m)``), from
    ``every`` (the exact one before ``rows`` changed their orders past ``start``).

    ``rows``: ascending row ids of whole nodes (``nidx``: their node) whose rows share
    their first fields and values up to column ``start``. Those pieces decide where a
    node's rows sit among the others (pieces at one position are prefix-free), so each
    node keeps its run of positions in token order; only its rows are sorted again
    (ties in row order, as `np.lexsort` keeps them), and the prefixes at the runs'
    edges compared again.
    """
    gorder, glcp, glen, _ = every
    n = len(gorder)
    if not len(rows):
        return every
    if 2 * len(rows) >= n:  # most rows changed: one sort of all of them, from the old
        return scorer.sorted_hits(None, cols_all, hint=gorder)
    order, lcp, lengths, _ = scorer.sorted_hits(rows, cols_all.take(rows, axis=0), nidx, start)
    where = np.empty(n, dtype=np.int64)
    where[gorder] = np.arange(n)
    at = where[rows]  # positions of the nodes' rows, sorted by node then position
    slots = at[np.lexsort((at, nidx))]
    gorder, glcp, glen = gorder.copy(), glcp.copy(), glen.copy()
    gorder[slots] = rows[order]
    glen[slots] = lengths
    glcp[slots] = lcp
    sn = nidx[order]
    edge = np.r_[True, sn[1:] != sn[:-1]]  # first row of each node's run
    after = slots[np.r_[edge[1:], True]] + 1  # the position after each run
    fix = np.union1d(slots[edge], after[after < n])
    fix = fix[fix > 0]
    a, b = gorder[fix - 1], gorder[fix]
    glcp[fix] = scorer.pair_lcp(a, cols_all.take(a, axis=0), b, cols_all.take(b, axis=0))
    if len(slots) and slots.min() == 0:
        glcp[0] = 0
    return gorder, glcp, glen, served_tokens(glcp, glen, scorer.block_size)


#: units scored exactly per decision: the best by `token_scores` (the rest are skipped)
SHORTLIST = 8


def token_scores(
    scorer: BlockScorer,
    units: Units,
    rows: np.ndarray,
    group: np.ndarray,
    cand: list[int],
    hash_all: int = 1 << 20,
) -> np.ndarray:
    """Tokens each unit would share if placed next in every group: GGR's value score in
    tokens, ``sum over shared values of (count - 1) * tokens(key + value)``.

    Parameters
    ----------
    rows : original row ids; group : ``(len(rows),)`` dense group ids; cand : units.
    hash_all : up to this many (row, candidate) keys, one hash pass over all of them;
        above, one per candidate (smaller tables) or slots where few keys are possible.

    Returns
    -------
    ``(len(cand),)`` int64 tokens (0 for a unit with no value shared in any group).
    """
    out = np.zeros(len(cand), dtype=np.int64)
    g = np.asarray(group, dtype=np.int64)
    if len(g):  # a row alone in its group shares nothing: its keys are unique
        many = np.bincount(g)[g] >= 2
        if not many.all():
            rows, g = rows[many], g[many]
            dense = np.zeros(int(g.max()) + 1 if len(g) else 1, dtype=np.int64)
            dense[g] = 1
            g = np.cumsum(dense)[g] - 1
    if not len(cand) or not len(rows):
        return out
    klen = scorer.k_len[0]
    vl = scorer.v_len[0].take(rows, axis=0)
    # (r, c) tokens of each candidate unit's key + value pieces, and (group, value) keys
    if all(len(units.members[k]) == 1 for k in cand):  # one gather
        c = [units.members[k][0] for k in cand]
        tl = vl[:, c].astype(np.int64) + klen[c].astype(np.int64)
    else:
        tl = np.stack(
            [vl[:, list(units.members[k])].sum(axis=1) + int(klen[list(units.members[k])].sum())
             for k in cand], axis=1,
        ).astype(np.int64)  # fmt: skip
    nd = units.n_distinct[cand].astype(np.int64) + 1
    span = (int(g.max()) + 1) * nd  # keys of candidate i lie in [base[i], base[i] + span[i])
    base = np.r_[0, np.cumsum(span)[:-1]]
    key = g[:, None] * nd[None, :] + units.codes.take(rows, axis=0)[:, cand] + base[None, :]
    # equal (group, value) keys have equal tokens: every repeat after the first adds
    # them, i.e. all rows' tokens minus one row's per distinct key
    if int(span.sum()) <= 4 * key.size:  # few keys possible: one slot each, no hashing
        once = np.zeros(int(span.sum()), dtype=np.int64)
        once[key.ravel()] = tl.ravel()  # equal keys write equal tokens
        out[:] = tl.sum(axis=0) - np.add.reduceat(once, base)
        return out
    if key.size <= hash_all:  # small: one hash pass over every candidate's keys
        kid, uniq = pd.factorize(key.ravel())  # hashed, no sort
        once = np.zeros(len(uniq), dtype=np.int64)
        once[kid] = tl.ravel()
        owner = np.searchsorted(base, uniq, side="right") - 1  # candidate of each key
        drop = np.bincount(owner, weights=once, minlength=len(cand)).astype(np.int64)
        out[:] = tl.sum(axis=0) - drop
        return out
    for i in range(len(cand)):  # large: per candidate, slots where few keys are possible
        ki, ti = key[:, i] - base[i], tl[:, i]
        if int(span[i]) > 8 * len(ki):  # a value held by one row of the table shares
            code = units.codes[:, cand[i]]  # nothing (its tokens minus its own): dropped
            rep = np.bincount(code)[code.take(rows)] >= 2
            ki, ti = ki[rep], ti[rep]
        if int(span[i]) <= 8 * len(ki):
            once = np.zeros(int(span[i]), dtype=np.int64)
            once[ki] = ti
        else:
            kid, uniq = pd.factorize(ki)  # hashed: a table per candidate stays smaller
            once = np.zeros(len(uniq), dtype=np.int64)
            once[kid] = ti
        out[i] = int(ti.sum()) - int(once.sum())
    return out


def _shortlist(scores: np.ndarray, cand: list[int], k: int) -> list[int]:
    """The ``k`` candidates with the highest positive scores (ties: earlier first)."""
    order = np.argsort(-scores, kind="stable")
    return [cand[i] for i in order[:k] if scores[i] > 0]


@dataclass
class _FixedMoves:
    """`greedy_fixed_order`'s candidates at one position as moves (`move_totals`).

    Trying unit k at position ``j`` = moving it there from the current order (the
    chosen units, then the rest in statistics order) in every row of a prefix group
    of two or more; the groups are the nodes, in the order of their ids as the sort
    puts them.
    """

    lv: _Level
    base: _NodeScores
    total0: int  # block hits of the current order (k already at ``j``)

    @classmethod
    def of(cls, scorer, units, order, j, sub, group, every) -> _FixedMoves | None:
        """``every``: exact `BlockScorer.sorted_hits` of all rows under ``order``, or
        None (``sub`` is sorted here)."""
        if len(sub) < 2:
            return None
        cur = np.broadcast_to(np.asarray(order, dtype=np.int32), (len(sub), len(order)))
        c1 = expand_perm(units, np.ascontiguousarray(cur[:1]))
        cols = np.broadcast_to(c1, (len(sub), c1.shape[1]))
        nidx = np.unique(group[sub], return_inverse=True)[1].ravel().astype(np.int64)
        lv = _Level.of(units, sub, None, cur, cols, j, nidx)
        sort = None if every is None else _grouped_sort(scorer, every, sub, cols, nidx)
        base = _NodeScores.of(scorer, sub, cols, nidx, lv.n_nodes, lv.start, sort)
        return cls(lv, base, int(base.hits.sum()))

    def totals(self, scorer, ks: list[int], uv) -> list[int | None]:
        """Block hits with each ``k`` of ``ks`` at position ``j``; None where
        `move_totals` cannot (the moves scored in one pass, `move_totals_many`)."""
        masks = {k: self.lv.pos[:, k] > self.lv.j for k in ks}
        go = [k for k in ks if masks[k].any()]
        got = move_totals_many(scorer, self.lv, self.base.moves, [masks[k] for k in go], go, uv)
        out = dict.fromkeys(ks, self.total0)
        for k, (done, tot) in zip(go, got):
            out[k] = None if tot is None or not done.all() else int(round(float(tot.sum())))
        return [out[k] for k in ks]


def greedy_fixed_order(
    scorer: BlockScorer,
    units: Units,
    progress: bool = False,
    shortlist: int = SHORTLIST,
    sorts: dict[tuple[int, ...], tuple] | None = None,
) -> np.ndarray:
    """One field order for every row, built position by position under the block metric.

    At each position, the ``shortlist`` remaining units that would share the most tokens
    there (`token_scores` within the groups the chosen prefix forms) are tried, the
    others after them in statistics order; the one with the most block hits over the
    whole table (rows in token order within each prefix group; prompts of two groups
    share the same tokens whichever rows meet) is kept. Ties keep the statistics order. Once no
    remaining unit shares a value, the rest keep the statistics order.

    ``sorts``: a dict this fills with the exact `BlockScorer.sorted_hits` of all rows
    under each unit order it sorted (key: the order as a tuple; the first is the
    statistics order), for callers that score those orders too.

    Returns
    -------
    ``(u,)`` unit indices.
    """
    n, u = units.codes.shape
    rest = [int(k) for k in fixed_order(column_scores(units))]
    chosen: list[int] = []
    rows = np.arange(n, dtype=np.int64)
    group = np.zeros(n, dtype=np.int64)
    uv = _unit_value_ids(units)
    sorts = {} if sorts is None else sorts
    bar = _bar(progress, u, "blocks: fixed order")
    while len(rest) > 1:
        tries = _shortlist(token_scores(scorer, units, rows, group, rest), rest, shortlist)
        if not tries:
            break
        best, best_k = -1, tries[0]
        start = sum(len(units.members[c]) for c in chosen)  # equal within a prefix group
        # A row's prompt shares with a row of another group at most a prefix ending
        # inside the chosen fields, the same for every candidate: rows alone in their
        # group, and each group's first row, score the same whatever k is. Only rows of
        # groups of two or more are scored; the argmax (first on ties) is unchanged.
        sub = np.flatnonzero(np.bincount(group)[group] >= 2)
        # all rows are sorted (and kept) when the groups hold most of them; the order
        # is unchanged when the last pick was rest[0]
        cur = tuple(chosen + rest)
        if cur not in sorts and 2 * len(sub) >= n:
            c1 = expand_perm(units, np.asarray([cur], dtype=np.int32))
            prev = next(reversed(sorts.values()), None)  # the order before the last pick
            sorts[cur] = scorer.sorted_hits(
                None, np.broadcast_to(c1, (n, c1.shape[1])), hint=None if prev is None else prev[0]
            )
        light = _FixedMoves.of(scorer, units, list(cur), len(chosen), sub, group, sorts.get(cur))
        hs = [None] * len(tries) if light is None else light.totals(scorer, tries, uv)
        for k, h in zip(tries, hs):
            if h is None:  # k is the last field: sort again
                order = chosen + [k] + [x for x in rest if x != k]
                cols = expand_perm(units, np.asarray([order], dtype=np.int32))[0]
                cp = np.broadcast_to(cols, (len(sub), len(cols)))
                h = int(scorer.sorted_hits(sub, cp, group[sub], start, exact_lcp=False)[3].sum())
            if h > best:
                best, best_k = h, k
        chosen.append(best_k)
        rest.remove(best_k)
        nd = int(units.n_distinct[best_k]) + 1
        group = pd.factorize(group * nd + units.codes[:, best_k])[0].astype(np.int64)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return np.asarray(chosen + rest, dtype=np.int32)


def _move_to(perm: np.ndarray, unit: int, j: int) -> np.ndarray:
    """Each row of ``perm`` with ``unit`` moved to position ``j`` (others keep their order).

    Rows must hold ``unit`` at a position >= j.
    """
    u = perm.shape[1]
    p = np.argmax(perm == unit, axis=1)[:, None]
    k = np.arange(u)[None, :]
    src = np.where(k < j, k, np.where(k == j, p, np.where(k <= p, k - 1, k)))
    return np.take_along_axis(perm, src, 1)


def refine(
    scorer: BlockScorer,
    units: Units,
    seed: np.ndarray,
    progress: bool = False,
    desc: str = "blocks: refine",
    shortlist: int = SHORTLIST,
    seed_sort: tuple | None = None,
    bound: bool = True,
) -> BlockSearch:
    """Improve per-row unit orders node by node, accepting only moves that add block hits.

    Parameters
    ----------
    scorer : exact block scorer of the table's prompts.
    units : the table as units (FD groups merged).
    seed : ``(n, u)`` starting unit orders (original row ids).
    progress : show a tqdm bar over the levels.
    shortlist : units scored exactly per level: those that would share the most tokens
        at that position (`token_scores` over the level's nodes); units that share no
        value in any node are not tried.
    seed_sort : the exact `BlockScorer.sorted_hits` of every row under ``seed``'s
        columns when the caller has it (None: sorted here). Each level's nodes are
        scored from the sort of all rows (`_grouped_sort`), kept from the check after
        the level before.
    bound : skip "shared" moves in nodes where they cannot win (`_shared_bound`); the
        result is the same as without.

    Returns
    -------
    `BlockSearch`; its ``hits`` are >= the seed's (rows in token order).
    """
    t0 = time.perf_counter()
    n, u = units.codes.shape
    perm = np.ascontiguousarray(seed, dtype=np.int32).copy()
    cols = np.ascontiguousarray(expand_perm(units, seed))  # the same orders, in columns
    uv = _unit_value_ids(units)
    n_uv = int(uv.max()) + 1 if n else 1
    rows_all = np.arange(n, dtype=np.int64)
    levels: list[dict] = []
    node = np.zeros(n, dtype=np.int64)
    every = seed_sort if seed_sort is not None else scorer.sorted_hits(None, cols)
    total = int(every[3].sum())
    bar = _bar(progress, max(u - 1, 0), desc)
    for j in range(max(u - 1, 0)):
        if j:
            placed_uv = uv[rows_all, perm[:, j - 1]]
            node = pd.factorize(node * n_uv + placed_uv)[0].astype(np.int64)
        size = np.bincount(node)
        rows = np.flatnonzero(size[node] >= 2)
        if len(rows) == 0:
            break
        lv = _Level.of(units, rows, node[rows], perm.take(rows, axis=0), cols.take(rows, axis=0), j)
        sort = _grouped_sort(scorer, every, rows, lv.cols, lv.nidx)
        base = _NodeScores.of(scorer, rows, lv.cols, lv.nidx, lv.n_nodes, lv.start, sort)
        choice, cands = _level_moves(scorer, units, lv, base, shortlist, uv, bound)
        moved = choice >= 0
        taken: dict[str, int] = {}
        if moved.any():
            new, newc = lv.cur.copy(), lv.cols.copy()
            for ci in np.unique(choice[moved]):
                k, variant, mask = cands[ci]
                sel = (choice[lv.nidx] == ci) & mask
                new[sel] = _move_to(np.compress(sel, lv.cur, axis=0), k, j)
                at, src = lv.col_starts(k)
                moved_cols = np.compress(sel, lv.cols, axis=0)
                newc[sel] = move_cols(moved_cols, at[sel], src[sel], lv.width[k])
                taken[f"{k}:{variant}"] = int((choice == ci).sum())
            perm[rows], cols[rows] = new, newc
            ch = moved[lv.nidx]  # only the changed nodes' rows move in token order
            sort_after = _resort_nodes(scorer, every, rows[ch], cols, lv.nidx[ch], lv.start)
            after = int(sort_after[3].sum())
            if after < total:  # cannot happen up to the last-token cap of a node's
                perm[rows], cols[rows] = lv.cur, lv.cols  # first prompt; keep the
                taken = {"reverted": int(moved.sum())}  # promise "never lower"
            else:
                total, every = after, sort_after
        levels.append(
            {
                "level": j,
                "nodes": lv.n_nodes,
                "rows": len(rows),
                "nodes_changed": int(moved.sum()),
                "moves": taken,
                "hits": total,
            }
        )
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return BlockSearch(perm, total, every, levels, time.perf_counter() - t0)


@dataclass
class _Level:
    """The rows of one refinement level that share their first ``j`` units with another.

    ``cur``/``cols``: their unit and column orders; ``nidx``: dense node of each;
    ``pos[r, k]``: position of unit k in row r; ``cstart[r, p]``: first column position
    of the unit at position p; ``start``: columns equal inside every node.
    """

    j: int
    rows: np.ndarray
    nidx: np.ndarray
    n_nodes: int
    cur: np.ndarray
    cols: np.ndarray
    pos: np.ndarray
    cstart: np.ndarray
    width: np.ndarray
    start: int

    @classmethod
    def of(cls, units, rows, nd, cur, cols, j, nidx=None) -> _Level:
        if nidx is None:
            nidx = pd.factorize(nd)[0].astype(np.int64)
        width = np.array([len(mm) for mm in units.members], dtype=np.int64)
        one = one_order(cur)
        c = cur[:1] if one else cur
        wc = width[c]
        cstart = np.cumsum(wc, axis=1) - wc
        start = int(cstart[:, j].min()) if j else 0
        pos = np.argsort(c, axis=1)  # pos[r, k] = position of unit k in row r
        if one:
            cstart = np.broadcast_to(cstart, (len(cur), cstart.shape[1]))
            pos = np.broadcast_to(pos, (len(cur), pos.shape[1]))
        n_nodes = int(nidx.max()) + 1
        return cls(j, rows, nidx, n_nodes, cur, cols, pos, cstart, width, start)

    def col_starts(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Per row: column position of slot ``j`` and of unit ``k``'s first column."""
        ar = np.arange(len(self.rows))
        return self.cstart[:, self.j], self.cstart[ar, self.pos[:, k]]


def _shared_bound(scorer: BlockScorer, base: _NodeScores, alone, tot_all) -> np.ndarray:
    """``(N,)`` upper bound on each node's block hits after a "shared" move, from its
    exact total ``tot_all`` after the "all" move of the same unit (tokens).

    The two differ only in the rows ``alone`` (their value of the unit is theirs alone in
    the node): "shared" leaves them where they were. In a node's token order, taking a
    row out never raises the others' prefixes (its successor's becomes the smaller of
    two) and drops its own hits; putting a row x back in adds its own hits, at most
    ``B * ((len_x - 1) // B)``, and raises at most its successor's, to at most
    ``B * (len_x // B)`` (a prefix shared with x is no longer than x). So "shared" scores
    at most ``tot_all`` plus those two terms over the node's ``alone`` rows.
    """
    B = scorer.block_size
    ln = base.moves.lengths[alone]
    gain = B * (np.maximum(ln - 1, 0) // B) + B * (ln // B)
    return tot_all + np.bincount(base.nidx[alone], weights=gain, minlength=len(tot_all))


def _level_moves(
    scorer, units, lv: _Level, base: _NodeScores, shortlist: int, uv: np.ndarray, bound: bool = True
):
    """Score the level's moves (``base``: the level as it is); per node the best one that
    adds hits (-1: none). Small levels score all their moves in one pass; larger ones
    one at a time, where ``bound`` skips the nodes in which `_shared_bound` shows a
    "shared" move cannot beat the best so far (same choice; False scores them all).

    Returns
    -------
    choice : ``(N,)`` index into ``cands`` per node, -1 = keep.
    cands : ``(unit, variant, rows that move)`` of each scored move.
    """
    j, rows, nidx, N = lv.j, lv.rows, lv.nidx, lv.n_nodes
    best = base.totals.copy()
    choice = np.full(N, -1, dtype=np.int64)  # candidate index that won, -1 = keep
    cands: list[tuple[int, str, np.ndarray]] = []  # (unit, variant, rows that move)
    open_units = [k for k in range(units.n_units) if (lv.pos[:, k] > j).any()]
    tries = _shortlist(token_scores(scorer, units, rows, nidx, open_units), open_units, shortlist)
    movable, shared, alone = [], [], []
    for k in tries:
        mv = lv.pos[:, k] > j  # == j: already there, nothing to try
        key = nidx * (int(units.n_distinct[k]) + 1) + units.codes[rows, k]
        kid = dense_keys(key)
        sh = np.bincount(kid)[kid] >= 2
        # "shared" only differs from "all" in nodes with an unshared movable row;
        # elsewhere it scores what "all" scored, which it cannot beat (ties keep "all")
        differs = np.zeros(N, dtype=bool)
        differs[nidx[mv & ~sh]] = True
        movable.append(mv)
        shared.append(mv & sh & differs[nidx])
        alone.append(mv & ~sh)
    # small levels: every move in one pass (`move_totals_many`; the "shared" moves
    # unbounded: dropping nodes saves little there, and any node they add cannot win
    # over the bounded choice: same choice); else one at a time, "shared" moves
    # bounded against the running best
    ia = [i for i in range(len(tries)) if movable[i].any()]
    stack = 2 * len(rows) * len(ia) <= STACK_ROWS
    tot_all: dict[int, np.ndarray] = {}
    tot_sh: dict[int, np.ndarray] = {}
    if stack:
        ish = [i for i in ia if shared[i].any()]
        got = base.totals_many(scorer, lv, [movable[i] for i in ia] + [shared[i] for i in ish],
                               [tries[i] for i in ia + ish], uv)  # fmt: skip
        tot_all, tot_sh = dict(zip(ia, got)), dict(zip(ish, got[len(ia) :]))
    else:
        tot_all = dict(zip(ia, base.totals_many(scorer, lv, [movable[i] for i in ia],
                                                [tries[i] for i in ia], uv)))  # fmt: skip
    for i in ia:
        k = tries[i]
        for variant in ("all", "shared"):
            mask = movable[i] if variant == "all" else shared[i]
            if variant == "all":
                tot = tot_all[i]
            elif stack:
                if i not in tot_sh:
                    continue
                tot = tot_sh[i]
            else:
                if bound:
                    mask = mask & (_shared_bound(scorer, base, alone[i], tot_all[i]) > best)[nidx]
                if not mask.any():
                    continue
                tot = base.totals_with(scorer, lv, mask, k, uv)
            better = tot > best
            best = np.where(better, tot, best)
            choice = np.where(better, len(cands), choice)
            cands.append((k, variant, mask))
    return choice, cands


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step")
