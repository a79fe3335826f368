"""Exact block hits of a refinement move without sorting the rows again.

`ggr_kv.reorder.blockaware.refine` scores moves "unit k to slot j" in nodes (rows that
share their first ``j`` units and values). After a move, a node's rows sort by the unit
value now at slot ``j`` (a *subgroup*: same node, same unit and value there), then by
what follows. Inside one subgroup, if every row moved its block (the unit's columns)
from the SAME column position ``src``, comparing two rows after the move is comparing
them before it (their blocks are equal and sat at the same place), so the subgroup
keeps the rows' token order from before the move; the common prefix of two of its rows
is the one before the move (a range minimum of the neighbours' prefixes in the old
order), plus the block's tokens when the rows diverged before ``src`` (the block now
comes first). Between two subgroups the prefix ends inside the slot-``j`` block; the
first row of a node shares with the node before it what it shared before (the nodes
differ in the first ``j`` units). This holds while no piece changes its form: ``j > 0``
(the first field keeps its key) and the block was not the last field (the last field's
value carries the prompt's tail). Nodes that break a condition are left to the full
sort; the others are scored here with one narrow sort per move (`move_totals`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ggr_kv.reorder.blockscore import (
    BlockScorer,
    _col_bits,
    _lexsort_rows,
    _pack,
    _pair_lcp,
    served_tokens,
)

__all__ = ["MoveBase", "RangeMin", "dense_keys", "move_cols", "move_totals", "move_totals_many"]

#: `move_totals_many` stacks moves into one pass up to this many rows in all
STACK_ROWS = 1 << 15


class RangeMin:
    """Minimum of ``a[lo..hi]`` (inclusive) for many ranges at once (sparse table).

    Level ``l`` holds the minima of the ``2**l`` values from each position; a level is
    built when a query first needs it (ranges inside small nodes never build the top
    levels), in the narrowest integer type that holds ``a``."""

    def __init__(self, a: np.ndarray) -> None:
        a = np.asarray(a)
        n = len(a)
        levels = max(1, int(n).bit_length())
        dt = np.int64
        if n == 0 or (int(a.min()) >= -(2**15) and int(a.max()) < 2**15):
            dt = np.int16
        elif int(a.min()) >= -(2**31) and int(a.max()) < 2**31:
            dt = np.int32
        self.table = np.empty((levels, n), dtype=dt)  # rows filled on demand
        self.table[0] = a
        self._built = 1

    def _build(self, top: int) -> None:
        """Fill levels up to ``top``."""
        t, n = self.table, self.table.shape[1]
        for lev in range(self._built, top + 1):
            k = 1 << (lev - 1)
            np.minimum(t[lev - 1, : n - k], t[lev - 1, k:], out=t[lev, : n - k])
            t[lev, n - k :] = t[lev - 1, n - k :]
        self._built = max(self._built, top + 1)

    def query(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """``(q,)`` minima over ``[lo, hi]`` (``lo <= hi``)."""
        lev = np.frexp((hi - lo + 1).astype(np.float64))[1].astype(np.int64) - 1
        if len(lev):
            self._build(int(lev.max()))
        got = np.minimum(self.table[lev, lo], self.table[lev, hi - (1 << lev) + 1])
        return got.astype(np.int64)


@dataclass
class MoveBase:
    """One level's rows before any move: their token order and prefixes (exact).

    Attributes
    ----------
    bpos : ``(r,)`` position of each row (index into the level's rows) in token order
        within its node.
    rmq : range minima over the exact prefixes shared with the previous row, in order.
    lengths : ``(r,)`` prompt tokens of each row.
    cum : ``(r, m + 1)`` int32 tokens before each column (after the head).
    node_lcp : ``(N,)`` tokens each node's first row shares with the node before it.
    """

    bpos: np.ndarray
    rmq: RangeMin
    lengths: np.ndarray
    cum: np.ndarray
    node_lcp: np.ndarray

    @classmethod
    def of(cls, scorer: BlockScorer, rows, cols, nidx, n_nodes: int, sort: tuple) -> MoveBase:
        """From ``sort``: `BlockScorer.sorted_hits` of ``rows`` grouped by ``nidx``, exact."""
        order, lcp, lengths, _ = sort
        r = len(rows)
        bpos = np.empty(r, dtype=np.int64)
        bpos[order] = np.arange(r)
        ln = np.empty(r, dtype=np.int64)
        ln[order] = lengths
        sn = nidx[order]
        brk = np.flatnonzero(np.concatenate(([True], sn[1:] != sn[:-1])))
        node_lcp = np.zeros(n_nodes, dtype=np.int64)
        node_lcp[sn[brk]] = lcp[brk]
        return cls(bpos, RangeMin(lcp), ln, scorer.field_starts(rows, cols), node_lcp)

    def hint(self, sub: np.ndarray) -> np.ndarray:
        """Positions into ``sub`` (ascending level rows) in the level's token order: a
        guess of their order after a move (`BlockScorer.sorted_hits`'s ``hint``)."""
        r = len(self.bpos)
        at = np.full(r, -1, dtype=np.int64)
        at[sub] = np.arange(len(sub))
        inv = np.empty(r, dtype=np.int64)
        inv[self.bpos] = np.arange(r)
        got = at[inv]
        return got[got >= 0]


def move_totals(scorer: BlockScorer, lv, mb: MoveBase, mask, k: int, uv: np.ndarray):
    """Node totals of moving unit ``k`` to slot ``lv.j`` in the rows of ``mask``.

    Parameters
    ----------
    lv : the level (`ggr_kv.reorder.blockaware._Level`).
    mb : the level's `MoveBase`.
    mask : ``(r,)`` rows that move.
    k : the unit, or ``(r,)`` one per row (`move_totals_many`'s stacked moves).
    uv : ``(n, u)`` global (unit, value) id of every cell of the table.

    Returns
    -------
    done : ``(N,)`` nodes scored here (touched by the move and meeting the conditions).
    totals : ``(N,)`` float64 block hits of each node after the move (valid where done).
    """
    N, j, m = lv.n_nodes, lv.j, lv.cols.shape[1]
    done = np.zeros(N, dtype=bool)
    nidx, r = lv.nidx, len(lv.rows)
    ar = np.arange(r)
    at = lv.cstart[:, j]
    unit_j = np.where(mask, k, lv.cur[:, j])
    pk = lv.pos[:, k] if np.ndim(k) == 0 else lv.pos[ar, k]
    src = np.where(mask, lv.cstart[ar, pk], at)
    w = lv.width[unit_j]
    done[nidx[mask]] = True
    done[nidx[src + w >= m]] = False  # the last field moves: its value changes form
    sel = np.flatnonzero(done[nidx])
    if not len(sel):
        return done, None
    dlen, how = _first_field(scorer, lv, mask, src)
    sg = np.full(r, -1, dtype=np.int64)
    sg[sel] = dense_keys(nidx[sel] * (int(uv.max()) + 1) + uv[lv.rows[sel], unit_j[sel]])
    p = len(scorer.pieces.prefix)
    mixed = np.zeros(r, dtype=bool)  # rows of subgroups whose order may change: sorted
    if j == 0:  # keys change form: only rows from the same place keep their order
        lo = np.full(sg.max() + 1, np.iinfo(np.int64).max, dtype=np.int64)
        hi = np.full(sg.max() + 1, -1, dtype=np.int64)
        np.minimum.at(lo, sg[sel], how[sel])
        np.maximum.at(hi, sg[sel], how[sel])
        mixed[sel] = lo[sg[sel]] != hi[sg[sel]]
        # a node whose rows mostly came from different places costs a sort of those
        # rows here and a second one by block: left to the one sort of its rows
        ns = nidx[sel]
        heavy = 2 * np.bincount(ns, weights=mixed[sel], minlength=N) >= np.bincount(ns, minlength=N)
        if heavy[ns].any():
            done &= ~heavy
            drop = sel[heavy[ns]]
            sg[drop], mixed[drop] = -1, False
            sel = np.flatnonzero(done[nidx])
            if not len(sel):
                return done, None
    within = mb.bpos.copy()  # rank inside the subgroup
    inner = np.zeros(r, dtype=np.int64)  # exact-enough prefix with the previous row there
    if mixed.any():
        _sort_mixed(scorer, lv, mb, np.flatnonzero(mixed), mask, sg, src, w, within, inner)
    o, keys = _new_order(scorer, lv, sel, src, w, within)
    s = sel[o]
    if j:
        mixed = _reordered(mb, s, sg, src, p)
        if mixed.any():
            _sort_mixed(scorer, lv, mb, np.flatnonzero(mixed), mask, sg, src, w, within, inner)
            o = _reorder_runs(o, s, sg, mixed, within)
            s = sel[o]
    lcp = np.empty(len(s), dtype=np.int64)
    ns = nidx[s]
    first = np.concatenate(([True], ns[1:] != ns[:-1]))  # np.r_ costs ~0.1 ms a call
    lcp[first] = mb.node_lcp[ns[first]]
    a, b = s[:-1], s[1:]
    same = ~first[1:] & (sg[a] == sg[b])
    uni = np.flatnonzero(same & ~mixed[b])
    lcp[np.flatnonzero(same & mixed[b]) + 1] = inner[b[same & mixed[b]]]
    other = np.flatnonzero(~first[1:] & ~same)
    if len(uni):
        a1, b1 = a[uni], b[uni]
        old = mb.rmq.query(mb.bpos[a1] + 1, mb.bpos[b1])
        cb = mb.cum.take(b1, axis=0)
        i1 = np.arange(len(b1))
        before = p + cb[i1, src[b1]]
        block = cb[i1, src[b1] + w[b1]] - cb[i1, src[b1]]
        lcp[uni + 1] = old + np.where(old < before, block, 0) + dlen[b1]
    if len(other):
        a2, b2 = a[other], b[other]
        head = p + mb.cum[b2, at[b2]]
        blocks = keys[:, 1:-1].take(o[np.concatenate((other, other + 1))], axis=0)  # pairs' sort keys
        lcp[other + 1] = head + _block_lcp(scorer, blocks[: len(other)], blocks[len(other) :])
    hits = served_tokens(lcp, mb.lengths[s] + dlen[s], scorer.block_size)
    return done, np.bincount(ns, weights=hits, minlength=N)


def move_totals_many(scorer: BlockScorer, lv, mb: MoveBase, masks, ks, uv) -> list[tuple]:
    """`move_totals` of several moves (unit ``ks[i]`` in the rows of ``masks[i]``), one
    ``(done, totals)`` per move, scored in one pass where their rows fit `STACK_ROWS`.

    The pass scores a level of ``len(ks)`` copies of ``lv``'s rows, copy ``i`` making
    move ``i``: copy ``i``'s nodes are ``i * N + node`` and its rows follow copy
    ``i - 1``'s in token order, so nodes of different copies never meet (a node's
    totals depend on its own rows and its first row's ``node_lcp`` only): the same
    totals as one call per move, with the per-call cost paid once (small tables).
    """
    K, r, N = len(ks), len(lv.rows), lv.n_nodes
    if K < 2 or K * r > STACK_ROWS:
        return [move_totals(scorer, lv, mb, mk, k, uv) for mk, k in zip(masks, ks)]
    cp = np.arange(K, dtype=np.int64)[:, None]
    slv = replace(
        lv, rows=np.tile(lv.rows, K), nidx=(cp * N + lv.nidx).ravel(), n_nodes=K * N,
        cur=_tile(lv.cur, K), cols=_tile(lv.cols, K), pos=_tile(lv.pos, K),
        cstart=_tile(lv.cstart, K),
    )  # fmt: skip
    smb = MoveBase(
        (cp * r + mb.bpos).ravel(), RangeMin(np.tile(mb.rmq.table[0], K)),
        np.tile(mb.lengths, K), np.tile(mb.cum, (K, 1)), np.tile(mb.node_lcp, K),
    )  # fmt: skip
    kr = np.repeat(np.asarray(ks, dtype=np.int64), r)
    done, tot = move_totals(scorer, slv, smb, np.concatenate(masks), kr, uv)
    done = done.reshape(K, N)
    if tot is None:
        return [(d, None) for d in done]
    return [(d, t if d.any() else None) for d, t in zip(done, tot.reshape(K, N))]


def _tile(a: np.ndarray, K: int) -> np.ndarray:
    """``a`` (2-D) stacked ``K`` times by rows (one row broadcast to all stays so)."""
    if a.strides[0] == 0:
        return np.broadcast_to(a[:1], (K * a.shape[0], a.shape[1]))
    return np.tile(a, (K, 1))


def _reorder_runs(o: np.ndarray, s: np.ndarray, sg, mixed, within) -> np.ndarray:
    """`_new_order`'s ``o`` once the rows of ``mixed`` subgroups have new ranks ``within``.

    Rows sort by node, slot-``j`` block, rank; a subgroup (node and the block's unit and
    value) is one run of equal (node, block) in ``o`` whatever the ranks, so only the
    mixed subgroups' runs change: each is ordered by its rows' new ranks (distinct)."""
    at = np.flatnonzero(mixed[s])  # positions in ``o`` of the mixed subgroups' rows
    rs = s[at]
    run = np.cumsum(np.concatenate(([True], sg[rs[1:]] != sg[rs[:-1]])))
    out = o.copy()
    out[at] = o[at[np.lexsort((within[rs], run))]]
    return out


def _reordered(mb: MoveBase, s, sg, src, p: int) -> np.ndarray:
    """``(r,)`` rows of subgroups that may not keep their old order (``s``: old order
    inside each subgroup). Two rows keep theirs if their blocks came from the same
    place, or if they diverged before either block (both now start with it)."""
    a, b = s[:-1], s[1:]
    pair = np.flatnonzero(sg[a] == sg[b])
    out = np.zeros(len(sg), dtype=bool)
    if not len(pair):
        return out
    a, b = a[pair], b[pair]
    diff = np.flatnonzero(src[a] != src[b])
    if not len(diff):
        return out
    a, b = a[diff], b[diff]
    old = mb.rmq.query(mb.bpos[a] + 1, mb.bpos[b])
    early = old < p + mb.cum[a, np.minimum(src[a], src[b])]
    bad = np.zeros(sg.max() + 1, dtype=bool)
    bad[sg[b[~early]]] = True
    return bad[sg] & (sg >= 0)


def _first_field(scorer: BlockScorer, lv, mask, src) -> tuple[np.ndarray, np.ndarray]:
    """What a move to the first slot changes: per row, the tokens it adds (its key
    and the old first field's key swap forms) and the key rows must share to keep
    their order (where the block came from, and at slot 0 the old first column)."""
    r, m = len(lv.rows), lv.cols.shape[1]
    if lv.j:
        return np.zeros(r, dtype=np.int64), src
    ar = np.arange(r)
    c0 = lv.cols[:, 0].astype(np.int64)
    ck = lv.cols[ar, src].astype(np.int64)
    k0, k1 = scorer.k_len[0], scorer.k_len[1]
    dlen = np.where(mask, k1[ck] - k0[ck] + k0[c0] - k1[c0], 0).astype(np.int64)
    return dlen, src * m + c0


def _sort_mixed(scorer, lv, mb, rows_m, mask, sg, src, w, within, inner) -> None:
    """Rows of subgroups whose blocks came from different places: sort them after the
    move (grouped by subgroup); write their rank and prefix into ``within``/``inner``.
    A subgroup's rows are equal up to the end of the block: the sort starts there."""
    at = lv.cstart[rows_m, lv.j]  # rows that keep their order: their block onto itself
    moved = np.where(mask[rows_m], src[rows_m], at)
    trial = move_cols(lv.cols.take(rows_m, axis=0), at, moved, w[rows_m])
    start = int((at + w[rows_m]).min())
    order, lcp, _, _ = scorer.sorted_hits(
        lv.rows[rows_m], trial, sg[rows_m], start, exact_lcp=False, hint=mb.hint(rows_m)
    )
    within[rows_m[order]] = np.arange(len(order))
    inner[rows_m[order]] = lcp


def move_cols(cols: np.ndarray, at: np.ndarray, src: np.ndarray, w) -> np.ndarray:
    """Each row of ``cols`` with its ``w`` columns from position ``src`` moved to ``at``.

    ``at <= src`` per row (``w``: one width or one per row); the columns between keep
    their order (`ggr_kv.reorder.blockaware._move_to` on the unit order, in columns).
    Rows share few ``(at, src, w)``: each distinct one's column map is built once.
    """
    r, m = cols.shape
    span = m * m * (m + 1)  # possible (at, src, w) keys
    if span > 4 * r + 1024:  # wide tables: the map of every row
        return np.take_along_axis(cols, _move_map(np.arange(m), at, src, w), 1)
    wv = np.broadcast_to(np.asarray(w, dtype=np.int64), (r,))
    key = (np.asarray(at, dtype=np.int64) * m + src) * (m + 1) + wv
    seen = np.zeros(span, dtype=np.int64)
    seen[key] = 1
    a, rest = np.divmod(np.flatnonzero(seen), m * (m + 1))
    p, ww = np.divmod(rest, m + 1)
    maps = _move_map(np.arange(m), a, p, ww)
    return np.take_along_axis(cols, maps.take((np.cumsum(seen) - 1).take(key), axis=0), 1)


def _move_map(q: np.ndarray, at, src, w) -> np.ndarray:
    """``(len(at), m)`` source column of each target column ``q`` when ``w`` columns move
    from ``src`` to ``at`` (per row)."""
    a, p = np.asarray(at)[:, None], np.asarray(src)[:, None]
    w = np.asarray(w)[:, None] if np.ndim(w) else w
    q = q[None, :]
    return np.where(q < a, q, np.where(q < a + w, p + (q - a), np.where(q < p + w, q - w, q)))


def dense_keys(key: np.ndarray) -> np.ndarray:
    """Dense ids of ``key`` (equal keys, equal ids; callers use nothing else): sorted when
    few, by a table over the keys' range where it is small, else hashed."""
    if len(key) < 2048:  # small: a sort costs less than a hash table's setup
        return np.unique(key, return_inverse=True)[1].ravel().astype(np.int64)
    if int(key.max()) - int(key.min()) < 4 * len(key):
        k = key - key.min()
        seen = np.zeros(int(k.max()) + 1, dtype=np.int64)
        seen[k] = 1
        return (np.cumsum(seen) - 1).take(k)
    return pd.factorize(key)[0].astype(np.int64)


def _cells(a: np.ndarray, rows: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """``a[rows, pos]`` of a 2-D array (one row broadcast to all: read from that row;
    C-ordered: one flat `take`)."""
    if a.strides[0] == 0:
        return a[0].take(pos)
    if a.flags.c_contiguous:
        return a.ravel().take(rows * a.shape[1] + pos)
    return a[rows, pos]


def _new_order(scorer, lv, sel, src, w, within) -> tuple[np.ndarray, np.ndarray]:
    """Order of rows ``sel`` after the move: node, slot-``j`` block, rank inside; and
    the sort keys (per row of ``sel``: node, the block's cell keys (0 past its width),
    rank)."""
    m = lv.cols.shape[1]
    rows = lv.rows[sel]
    wmax = int(w[sel].max())
    keys = np.zeros((len(sel), wmax + 2), dtype=np.int64)
    keys[:, 0] = lv.nidx[sel]
    ws, ss = w[sel], src[sel]
    for i in range(wmax):
        ok = slice(None) if i == 0 else np.flatnonzero(ws > i)  # every width is >= 1
        c = _cells(lv.cols, sel[ok], ss[ok] + i)
        keys[ok, 1 + i] = scorer._c_mid.take(rows[ok] * m + c)
        if lv.j == 0 and i == 0:  # the first field's key
            keys[:, 1] += scorer._c_first_d[c]
    keys[:, -1] = within[sel]
    lo, bits = _col_bits(keys[:, :-1])
    if sum(bits) > 63:
        return _lexsort_rows(keys), keys
    # sort by ``within`` first, then stably by node and block (one int64): the
    # lexicographic order of all three, ties in row order (as `np.lexsort`)
    wk = keys[:, -1]
    if len(wk) and np.bincount(wk).max() == 1:  # distinct ranks: invert them
        inv = np.full(int(wk.max()) + 1, -1, dtype=np.int64)
        inv[wk] = np.arange(len(wk))
        start = inv[inv >= 0]
    else:
        start = np.argsort(wk, kind="stable")
    packed = _pack(keys, lo, bits, range(keys.shape[1] - 1))
    return start[np.argsort(packed.take(start), kind="stable")], keys


def _block_lcp(scorer: BlockScorer, ka: np.ndarray, kb: np.ndarray) -> np.ndarray:
    """Tokens two rows of different subgroups share inside the slot-``j`` block, from
    the block's cell sort keys of each (``ka[i]``, ``kb[i]``: key rank * width + value
    rank, the first field's key form included): blocks of different units differ in
    their first key; blocks of one unit have one width and differ in some value."""
    keys, byr, w = scorer.pieces.keys, scorer._v_by_rank, scorer.width
    out = np.zeros(len(ka), dtype=np.int64)
    acc = np.zeros(len(ka), dtype=np.int64)
    act = np.arange(len(ka))
    for i in range(ka.shape[1]):
        ra, va = np.divmod(ka[act, i], w)
        rb, vb = np.divmod(kb[act, i], w)
        pa, pb = scorer._k_by_rank[ra], scorer._k_by_rank[rb]  # key piece ids
        kd = pa != pb
        vd = ~kd & (va != vb)
        out[act[kd]] = acc[act[kd]] + scorer.klcp[pa[kd], pb[kd]]
        iv = act[vd]
        out[iv] = acc[iv] + keys.lengths[pb[vd]] + _pair_lcp(byr, va[vd], vb[vd])
        rest = ~(kd | vd)
        acc[act[rest]] += keys.lengths[pa[rest]] + byr.lengths[va[rest]]
        act = act[rest]
        if not len(act):
            break
    return out
