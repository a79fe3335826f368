"""Exact prefix-cache hits of a plan from its token pieces, without building a prompt.

vLLM with an unbounded prefix cache serves prompt p ``B * min(L_p // B, (len_p - 1) // B)``
tokens, where ``L_p`` is the longest token prefix p shares with ANY earlier prompt, ``B``
the block size, and ``(len_p - 1) // B`` the last-token rule (whole blocks only, the last
token is always recomputed). Chained block hashes make "block k hits" equivalent to "an
earlier prompt has the same first ``(k + 1) B`` tokens", hence this formula
(``tests/test_blocks_score.py`` checks it against `ggr_kv.core.blocks`).

``L_p`` comes from the pieces of `ggr_kv.reorder.fragments.PromptPieces`: pieces at one
position of two prompts are *prefix-free* (a key piece ends in ``":``, a value piece in
``",`` or the prompt's tail, and JSON quoting keeps those out of the text), so

- prompts sort in token order when sorted by the token-order ranks of their pieces;
- the common prefix of two prompts is the length of their equal leading pieces plus the
  common prefix of the first two pieces that differ (looked up for keys, compared token
  by token for values).

In token order the longest prefix shared with any earlier prompt is the one shared with
the previous prompt, so a plan whose rows run in token order (what ``blocks`` outputs)
is scored in one sort; any other row order goes through the nearest-earlier scan of
`ggr_kv.reorder.metrics`. Everything is numpy over rows; nothing loops per row or
token in Python except that O(n) scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.reorder.fragments import PieceSet, PromptPieces

__all__ = ["BlockScorer", "PlanHits", "lex_order", "served_tokens"]


def _nearest_earlier_lcp(idx: list[int] | np.ndarray, adj: list[int] | np.ndarray) -> np.ndarray:
    """For each sorted position p: LCP with the nearest q < p whose prompt index is smaller.

    ``adj[p]`` is the LCP of sorted neighbours p-1 and p; the LCP of q and p is the minimum
    of ``adj[q+1..p]``. Vectorized pointer jumping: every position keeps a candidate q
    (all positions strictly between q and p hold larger indices) and the minimum ``adj``
    over ``(q, p]``; while the candidate's index is larger, it jumps to the candidate's own
    candidate. Returns ``(n,)`` int64 (0 where no such q exists).
    """
    idx = np.asarray(idx, dtype=np.int64)
    adj = np.asarray(adj, dtype=np.int64)
    n = len(idx)
    out = np.zeros(n, dtype=np.int64)
    if n < 2:
        return out
    cand = np.arange(-1, n - 1, dtype=np.int64)  # q = p - 1
    low = adj.copy()  # min adj over (q, p]
    act = np.arange(1, n, dtype=np.int64)
    while len(act):
        c = cand[act]
        ok = c < 0
        ok[~ok] = idx[c[~ok]] < idx[act[~ok]]
        done, act = act[ok], act[~ok]
        out[done] = np.where(cand[done] >= 0, low[done], 0)
        c = cand[act]
        low[act] = np.minimum(low[act], low[c])
        cand[act] = cand[c]
    return out


def served_tokens(lcp: np.ndarray, lengths: np.ndarray, block_size: int) -> np.ndarray:
    """Tokens vLLM's prefix cache serves a prompt of ``lengths`` tokens sharing its first
    ``lcp`` tokens with a cached one: ``B * min(lcp // B, (len - 1) // B)`` (whole blocks,
    and never the prompt's last token)."""
    B = int(block_size)
    top = np.minimum(lcp, np.maximum(lengths - 1, 0))  # floor is monotone: one division
    if B & (B - 1) == 0:  # a power of two: shifts
        sh = B.bit_length() - 1
        return (top >> sh) << sh
    return B * (top // B)


def lex_order(ps: PieceSet, bar=None, adjacent: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Token-lexicographic order of the pieces of ``ps`` (a shorter prefix sorts first).

    Most-significant-digit radix refinement: each pass sorts the still-tied pieces by
    their tie group and next few tokens packed into one int64 (token + 1, 0 once a
    piece has ended).

    ``bar``: an optional tqdm bar, advanced by the pieces whose rank is settled.
    ``adjacent``: False skips ``adj_lcp`` (returned as zeros), a token-by-token pass over
    every neighbouring pair.

    Returns
    -------
    order : ``(k,)`` piece indices in token order.
    adj_lcp : ``(k,)`` tokens shared by ``order[i]`` and ``order[i - 1]`` (0 at i = 0).
    """
    k = len(ps)
    order = np.arange(k, dtype=np.int64)
    if k < 2:
        if bar is not None:
            bar.update(k)
        return order, np.zeros(k, dtype=np.int64)
    lens = ps.lengths
    offs = ps.offsets[:-1]
    # tokens by their rank among the ids present (same order, fewer bits: more tokens
    # per pass)
    end = len(ps.tokens)  # ``tok1[end]`` = 0: what a piece reads once it has ended
    tok1 = _token_ranks1(ps.tokens)
    top = int(tok1.max()) + 1
    bits = top.bit_length()
    pos = np.arange(k, dtype=np.int64)  # positions still tied with a neighbour
    seg = np.zeros(k, dtype=np.int64)  # their tie group (contiguous, increasing)
    t = 0
    while len(pos):
        # one int64 per piece: its tie group, then as many tokens as fit (one stable
        # argsort per pass; the groups shrink, so later passes take more tokens)
        sbits = int(seg[-1]).bit_length()
        per = (63 - sbits) // bits
        items = order[pos]
        ln, st = lens[items], offs[items]
        key = np.zeros(len(items), dtype=np.int64)
        idx = st + t
        for i in range(t, t + max(1, per)):
            np.copyto(idx, end, where=ln <= i)  # ended: token 0
            key <<= bits
            key |= tok1.take(idx)
            idx += 1
        if per >= 1:
            o = np.argsort(key | (seg << (per * bits)), kind="stable")
        else:  # pragma: no cover - over 2**45 tie groups
            o = np.lexsort((key, seg))
        per = max(1, per)
        items, key, s = items[o], key[o], seg[o]
        order[pos] = items
        start = np.concatenate(([True], (s[1:] != s[:-1]) | (key[1:] != key[:-1])))
        nseg = np.cumsum(start) - 1
        size = np.bincount(nseg)
        keep = (size[nseg] >= 2) & (lens[items] > t + per)  # ended together = equal
        if bar is not None:
            bar.update(len(pos) - int(keep.sum()))
        pos, seg = pos[keep], nseg[keep]
        t += per
    adj = np.zeros(k, dtype=np.int64)
    if adjacent:
        adj[1:] = _pair_lcp(ps, order[:-1], order[1:])
    return order, adj


#: tokens per chunk of `_token_ranks1` (its int32 -> intp index copies stay in cache)
_RANK_CHUNK = 1 << 20


def _token_ranks1(toks: np.ndarray) -> np.ndarray:
    """``(len(toks) + 1,)`` int32: each token's rank among the distinct ids present, + 1,
    and a 0 at the end (what a piece reads once it has ended).

    In chunks: `np.bincount` and `np.take` of a whole int32 array first copy it into an
    intp array (8 bytes a token, ~100M tokens at 1M rows); per chunk that copy stays in
    cache (~10x faster, same result).
    """
    end = len(toks)
    tok1 = np.zeros(end + 1, dtype=np.int32)
    if not end:
        return tok1
    count = np.zeros(int(toks.max()) + 1, dtype=np.int64)
    for a in range(0, end, _RANK_CHUNK):
        count += np.bincount(toks[a : a + _RANK_CHUNK], minlength=len(count))
    rank1 = np.cumsum(count > 0).astype(np.int32)
    for a in range(0, end, _RANK_CHUNK):
        b = min(end, a + _RANK_CHUNK)
        np.take(rank1, toks[a:b], out=tok1[a:b])
    return tok1


def _pair_lcp(
    ps: PieceSet | _ByRank, a: np.ndarray, b: np.ndarray, window: int = 2, lim=None
) -> np.ndarray:
    """Tokens shared at the start of pieces ``a[i]`` and ``b[i]`` (vectorized compare,
    ``window`` tokens in the first pass, twice as many in each next one up to 16: most
    pairs differ within their first few tokens). ``lim``: the shorter piece's tokens of
    each pair, when the caller has them."""
    if lim is None:
        lens = ps.lengths
        lim = np.minimum(lens[a], lens[b])
    lim = lim.astype(np.int64, copy=False)
    out = np.zeros(len(a), dtype=np.int64)
    act = np.flatnonzero(lim > 0)
    oa = ps.offsets.take(a).astype(np.int64, copy=False)
    ob = ps.offsets.take(b).astype(np.int64, copy=False)
    t = 0
    while len(act):
        ar = np.arange(window, dtype=np.int64)
        ta = np.take(ps.tokens, oa[act, None] + (t + ar), mode="clip")
        tb = np.take(ps.tokens, ob[act, None] + (t + ar), mode="clip")
        ne = ta != tb
        if window <= 4:  # first differing token: a few column passes beat argmax
            first = np.full(len(act), window, dtype=np.int64)
            for c in range(window - 1, -1, -1):
                first[ne[:, c]] = c
        else:
            first = np.where(ne.any(axis=1), ne.argmax(axis=1), window)
        out[act] = t + np.minimum(first, lim[act] - t)  # tokens past ``lim`` never count
        act = act[(first == window) & (lim[act] > t + window)]
        t += window
        window = min(2 * window, 16)
    return out


@dataclass(frozen=True)
class _ByRank:
    """Value pieces indexed by their token-order rank (what a sort key holds): start
    ``offsets`` into ``tokens`` and ``lengths`` (tokens), for `_pair_lcp`."""

    tokens: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray


@dataclass(frozen=True)
class PlanHits:
    """Per-prompt prefix sharing of a plan, in run order.

    Attributes
    ----------
    lengths : ``(n,)`` prompt tokens (BOS included).
    token_hits : ``(n,)`` tokens shared as a prefix with any earlier prompt.
    block_hits : ``(n,)`` tokens vLLM serves from an unbounded prefix cache.
    block_size : tokens per KV block.
    """

    lengths: np.ndarray
    token_hits: np.ndarray
    block_hits: np.ndarray
    block_size: int

    @property
    def block_hit_rate(self) -> float:
        """0-1: block hits over all prompt tokens."""
        total = int(self.lengths.sum())
        return float(self.block_hits.sum() / total) if total else 0.0

    @property
    def token_hit_rate(self) -> float:
        """0-1: token prefix hits over all prompt tokens."""
        total = int(self.lengths.sum())
        return float(self.token_hits.sum() / total) if total else 0.0


class BlockScorer:
    """Exact unbounded-cache hits of field orders, from `PromptPieces` (must be exact).

    Per cell it keeps the token-order rank and the length of the cell's value piece in
    both forms (followed by another field, or last), so scoring a set of field orders is
    a few gathers over ``(rows, m)`` int32 arrays, one sort and one comparison pass.

    Parameters
    ----------
    pieces : the table's prompt pieces (`PromptPieces.build`).
    block_size : tokens per KV block (16 on GPU, 128 on the CPU backend).
    progress : show a tqdm bar while the pieces are ranked in token order.
    """

    def __init__(self, pieces: PromptPieces, block_size: int, progress: bool = False) -> None:
        if not pieces.exact:
            raise ValueError(
                f"tokenizer {pieces.tokenizer_name!r} is not known to split at the piece "
                "boundaries; BlockScorer needs exact pieces"
            )
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1 token, got {block_size}")
        self.pieces = pieces
        self.block_size = int(block_size)
        table = pieces.table
        m, V = table.n_cols, pieces.n_values
        korder, _ = lex_order(pieces.keys)
        krank = np.empty(len(korder), dtype=np.int64)
        krank[korder] = np.arange(len(korder))
        klen = pieces.keys.lengths
        self.k_rank = (krank[m:], krank[:m])  # (after another field, first field)
        self.k_len = (klen[m:], klen[:m])
        ka, kb = np.divmod(np.arange(4 * m * m), 2 * m)
        self.klcp = _pair_lcp(pieces.keys, ka, kb).reshape(2 * m, 2 * m)
        self._k_by_rank = korder  # key piece id of each key rank
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(pieces.values), desc="blocks: rank pieces", unit="piece")
        vorder, _ = lex_order(pieces.values, bar, adjacent=False)
        if bar is not None:
            bar.close()
        vrank = np.empty(len(vorder), dtype=np.int64)
        vrank[vorder] = np.arange(len(vorder))
        vlen = pieces.values.lengths
        g = np.empty(table.codes.shape, dtype=np.int64)
        for c in range(m):
            g[:, c] = pieces.value_id[c][table.codes[:, c]]
        self.v_rank = (vrank[g].astype(np.int32), vrank[g + V].astype(np.int32))  # (mid, last)
        self.v_len = (vlen[g].astype(np.int32), vlen[g + V].astype(np.int32))
        self.width = max(1, len(vorder))
        vals = pieces.values
        self._v_by_rank = _ByRank(vals.tokens, vals.offsets[:-1][vorder], vlen[vorder])
        self.n_values = V
        self._cells(m)

    def _cells(self, m: int) -> None:
        """Per-cell sort key and tokens in the middle form, and the end-form corrections.

        A cell (row, column c) at a position that is neither first nor last sorts by
        ``k_rank[0][c] * width + v_rank[0]`` and spans ``k_len[0][c] + v_len[0]`` tokens;
        the first position changes only the key part (per column), the last only the
        value part (per cell). Flat ``(n * m,)`` arrays: one gather per scored position.
        """
        w = self.width
        dt = np.int32 if w * 2 * m < 2**31 else np.int64
        kr0, kr1 = self.k_rank[0].astype(np.int64), self.k_rank[1].astype(np.int64)
        self._c_mid = (kr0[None, :] * w + self.v_rank[0]).astype(dt).ravel()
        self._c_last = (kr0[None, :] * w + self.v_rank[1]).astype(dt).ravel()
        self._c_first_d = ((kr1 - kr0) * w).astype(dt)  # (m,) first-position correction
        self._l_mid = (self.k_len[0][None, :] + self.v_len[0]).astype(np.int32).ravel()
        self._l_last = (self.k_len[0][None, :] + self.v_len[1]).astype(np.int32).ravel()
        self._l_first_d = (self.k_len[1] - self.k_len[0]).astype(np.int32)

    def _row_arrays(
        self, rows: np.ndarray | None, cp: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sort keys ``(r, m)`` and cell tokens ``(r, m)`` of the rows' cells."""
        r, m = cp.shape
        base = (
            np.arange(r, dtype=np.intp) if rows is None else np.asarray(rows, dtype=np.intp)
        ) * m
        flat = cp + base[:, None]  # index of each (row, field) cell in the (n, m) arrays
        comb = self._c_mid.take(flat)  # take: faster than fancy indexing, same result
        clen = self._l_mid.take(flat)
        last = flat[:, m - 1]
        comb[:, m - 1] = self._c_last[last]
        clen[:, m - 1] = self._l_last[last]
        comb[:, 0] += self._c_first_d[cp[:, 0]]
        clen[:, 0] += self._l_first_d[cp[:, 0]]
        return comb, clen

    def field_starts(self, rows: np.ndarray | None, colperm: np.ndarray) -> np.ndarray:
        """``(r, m + 1)`` int32 tokens before each field of each prompt (after the head)."""
        cp = np.ascontiguousarray(colperm, dtype=np.intp)  # C order: row gathers
        _, clen = self._row_arrays(rows, cp)
        cum = np.zeros((cp.shape[0], cp.shape[1] + 1), dtype=np.int32)
        np.cumsum(clen, axis=1, out=cum[:, 1:])
        return cum

    # -- rows in token order ----------------------------------------------------------
    def sorted_hits(
        self,
        rows: np.ndarray | None,
        colperm: np.ndarray,
        group: np.ndarray | None = None,
        start: int = 0,
        exact_lcp: bool = True,
        hint: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Sort prompts in token order and count their hits.

        Parameters
        ----------
        rows : original row ids of the prompts, or None for every row in table order.
        colperm : ``(r, m)`` field order of each of them.
        group : optional ``(r,)`` non-negative group ids sorted on first (rows of one
            group must share their first ``start`` fields and values); prompts are then
            in token order within each group.
        start : with ``group``, the first field position that may differ in a group.
        exact_lcp : False: ``lcp`` is exact in whole blocks only (``lcp // block_size``
            is exact; two value pieces are compared token by token only when their
            common prefix could reach another block), which is all ``hits`` and the
            block hits of `plan_hits` need (minima of such prefixes keep the property).
        hint : optional guess of ``order`` (a permutation of positions into ``rows``,
            e.g. the order before a few fields moved): same result, sorted from it.

        Returns
        -------
        order : ``(r,)`` positions into ``rows`` in sorted order.
        lcp : ``(r,)`` tokens each sorted prompt shares with the previous one (0 first).
        lengths : ``(r,)`` prompt tokens, in sorted order.
        hits : ``(r,)`` block hits (tokens) in sorted order: what vLLM serves each
            prompt from an unbounded cache when they run in this order.
        """
        pp = self.pieces
        cp = np.ascontiguousarray(colperm, dtype=np.intp)  # C order: row gathers
        r, m = cp.shape
        comb, clen = self._row_arrays(rows, cp)
        if group is None:
            order = _lexsort_rows(comb, hint)
        else:
            keys = np.concatenate([np.asarray(group, dtype=np.int64)[:, None], comb[:, start:]], 1)
            order = _lexsort_rows(keys, hint)
        p = len(pp.prefix)
        cum = np.zeros((r, m + 1), dtype=np.int32)  # tokens before each field, after the head
        np.cumsum(clen, axis=1, out=cum[:, 1:])
        lengths = (p + cum[:, -1].astype(np.int64))[order]
        lcp = np.zeros(r, dtype=np.int64)
        if r > 1:
            lcp[1:] = self._adjacent_lcp(comb, cum, order, lengths, exact_lcp)
        return order, lcp, lengths, served_tokens(lcp, lengths, self.block_size)

    def _adjacent_lcp(self, comb, cum, order, lengths, exact: bool) -> np.ndarray:
        """``(r - 1,)`` tokens shared by each sorted prompt and the one before it.

        The first field where two neighbours differ, and the pieces there, are read from
        their sort keys (``comb``: key rank * width + value rank), so only the field's
        start (``cum``) and the pieces' tokens are looked up by row.
        """
        pp, m = self.pieces, comb.shape[1]
        p = len(pp.prefix)
        cs = comb.take(order, axis=0)
        eq = cs[1:] == cs[:-1]
        row = cs.view(np.dtype((np.void, cs.itemsize * m))).ravel()  # whole rows
        same = row[1:] == row[:-1]
        out = np.where(same, lengths[1:], 0)
        diff = np.flatnonzero(~same)
        dd = np.argmin(eq.take(diff, axis=0), axis=1)
        ob = order[diff + 1]  # the later row of each pair, in ``rows`` positions
        at = p + cum.ravel()[ob * (m + 1) + dd].astype(np.int64)  # where the field starts
        flat = diff * m + dd  # the differing cell of the earlier row in ``cs``
        w = self.width
        ka, va = np.divmod(cs.ravel().take(flat).astype(np.int64), w)
        kb, vb = np.divmod(cs.ravel().take(flat + m).astype(np.int64), w)
        ka, kb = self._k_by_rank[ka], self._k_by_rank[kb]  # key piece ids (form included)
        kdiff = ka != kb  # different fields there: the key pieces differ
        ik, iv = np.flatnonzero(kdiff), np.flatnonzero(~kdiff)
        out[diff[ik]] = at[ik] + self.klcp[ka[ik], kb[ik]]
        vat = at[iv] + pp.keys.lengths[kb[iv]]  # where the value piece starts
        va, vb = va[iv], vb[iv]  # value ranks (form included)
        byr = self._v_by_rank
        lim = np.minimum(byr.lengths[va], byr.lengths[vb])
        if exact:
            out[diff[iv]] = vat + _pair_lcp(byr, va, vb, lim=lim)
            return out
        # the pieces differ (prefix-free), so they share fewer tokens than the shorter
        # one has: compare them only if that could reach the next block boundary
        B = self.block_size
        need = (vat + lim - 1) // B > vat // B
        res = vat.copy()
        sel = np.flatnonzero(need)
        res[sel] += _pair_lcp(byr, va[sel], vb[sel], lim=lim[sel])
        out[diff[iv]] = res
        return out

    def pair_lcp(
        self, rows_a: np.ndarray, cp_a: np.ndarray, rows_b: np.ndarray, cp_b: np.ndarray
    ) -> np.ndarray:
        """``(q,)`` exact tokens shared by the prompts of rows ``rows_a[i]`` (field order
        ``cp_a[i]``) and ``rows_b[i]`` (``cp_b[i]``), the head included."""
        q, m = len(rows_a), self.pieces.table.n_cols
        if not q:
            return np.zeros(0, dtype=np.int64)
        rows = np.empty(2 * q, dtype=np.intp)
        rows[0::2], rows[1::2] = rows_a, rows_b
        cp = np.empty((2 * q, m), dtype=np.intp)
        cp[0::2], cp[1::2] = cp_a, cp_b
        comb, clen = self._row_arrays(rows, cp)
        cum = np.zeros((2 * q, m + 1), dtype=np.int32)
        np.cumsum(clen, axis=1, out=cum[:, 1:])
        lengths = len(self.pieces.prefix) + cum[:, -1].astype(np.int64)
        order = np.arange(2 * q, dtype=np.int64)  # pairs (0, 1), (2, 3), ...
        return self._adjacent_lcp(comb, cum, order, lengths, True)[0::2]

    def total_hits(self, rows: np.ndarray | None, colperm: np.ndarray) -> int:
        """Block hits (tokens) of ``rows`` (None = all) run in token order."""
        return int(self.sorted_hits(rows, colperm, exact_lcp=False)[3].sum())

    # -- any plan ---------------------------------------------------------------------
    def plan_hits(self, plan: ReorderPlan, sorted_all: tuple | None = None) -> PlanHits:
        """Exact per-prompt hits of ``plan`` in ITS row order (unbounded cache).

        ``sorted_all``: optional `sorted_hits` of every row in table order (``rows`` None)
        under the field orders ``colperm`` with ``colperm[plan.row_order] ==
        plan.field_perm``; it is reused instead of sorting again (any row order of the
        same field orders is scored from one sort). Sorted with ``exact_lcp=False``,
        the block hits are still exact; the token hits are then lower bounds.
        """
        plan.check(self.pieces.table)
        n = plan.n_rows
        if sorted_all is None:
            order, lcp, lengths, _ = self.sorted_hits(plan.row_order, plan.field_perm)
        else:
            by_row, lcp, lengths, _ = sorted_all
            slot = np.empty(n, dtype=np.int64)
            slot[plan.row_order] = np.arange(n)
            order = slot[by_row]
        # order[p] = run slot of the p-th prompt in token order
        if np.array_equal(order, np.arange(n)):  # already in token order: the previous
            best = lcp  # prompt shares the longest prefix of all earlier ones
        else:
            left = _nearest_earlier_lcp(order, lcp)
            right = _nearest_earlier_lcp(order[::-1], np.r_[0, lcp[:0:-1]])[::-1]
            best = np.maximum(left, right)
        token_hits = np.empty(n, dtype=np.int64)
        token_hits[order] = best
        run_len = np.empty(n, dtype=np.int64)
        run_len[order] = lengths
        B = self.block_size
        return PlanHits(run_len, token_hits, served_tokens(token_hits, run_len, B), B)


def _col_bits(keys: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Per column of ``keys``: its minimum (int64) and the bits its range needs (0: constant,
    no effect on the order)."""
    lo = keys.min(axis=0).astype(np.int64)
    hi = keys.max(axis=0).astype(np.int64)
    return lo, [int(x).bit_length() for x in (hi - lo)]


def _pack(keys: np.ndarray, lo: np.ndarray, bits: list[int], cols, rows=None) -> np.ndarray:
    """One int64 per row of ``keys`` (``rows`` of it, default all): columns ``cols``, each
    less its minimum ``lo`` in its ``bits`` (`_col_bits`), the first most significant."""
    if rows is not None and isinstance(cols, range) and cols.step == 1 and len(cols) > 1:
        # the rows' cells of those columns in one gather (C order: a row's are adjacent)
        keys, rows = keys[:, cols[0] : cols[-1] + 1].take(rows, axis=0), None
        lo, bits = lo[cols[0] :], bits[cols[0] :]
        cols = range(len(cols))

    def col(c: int) -> np.ndarray:
        return keys[:, c] if rows is None else keys[rows, c]

    a = col(cols[0]).astype(np.int64) - lo[cols[0]]
    for c in cols[1:]:
        a <<= bits[c]
        a |= col(c) - lo[c]
    return a


def _lexsort_rows(keys: np.ndarray, hint: np.ndarray | None = None) -> np.ndarray:
    """Row order sorting ``keys`` (``(r, m)`` ints) lexicographically (equal rows in row
    order, as `np.lexsort`).

    Each column is packed less its minimum, in the bits its range needs, as many columns
    per int64 as fit (one stable argsort when all fit). ``hint``: a guess of that order (a
    permutation of ``range(r)``, e.g. the order before a few fields moved); the rows are
    then sorted from it, most significant keys first (`_msd_rows`), which costs little
    where the guess is right.
    """
    r, m = keys.shape
    if r <= 1:
        return np.arange(r, dtype=np.int64)
    lo, bits = _col_bits(keys)
    if hint is not None:
        return _msd_rows(keys, lo, bits, np.asarray(hint, dtype=np.int64))
    chunks: list[list[int]] = []
    used = 63
    for c in range(m):
        if not bits[c]:
            continue
        if used + bits[c] > 63:
            chunks.append([])
            used = 0
        chunks[-1].append(c)
        used += bits[c]
    if not chunks:  # every row equal
        return np.arange(r, dtype=np.int64)
    packed = [_pack(keys, lo, bits, ch) for ch in chunks]
    if len(packed) == 1:
        return np.argsort(packed[0], kind="stable").astype(np.int64)
    return np.lexsort(packed[::-1]).astype(np.int64)


def _msd_rows(keys: np.ndarray, lo: np.ndarray, bits: list[int], start: np.ndarray) -> np.ndarray:
    """`_lexsort_rows` from the row order ``start`` (``lo``, ``bits``: `_col_bits`): each
    pass stably sorts the rows still tied with a neighbour by their tie group and the next
    keys packed into one int64 (timsort: runs the start order already has cost one
    scan); rows equal in every key end in row order."""
    r, m = keys.shape
    order = start.copy()
    pos = np.arange(r, dtype=np.int64)  # positions still tied with a neighbour
    seg = np.zeros(r, dtype=np.int64)  # their tie group (contiguous, increasing)
    c = 0
    while len(pos) and c < m:
        items = order[pos]
        room = 63 - int(seg[-1]).bit_length()
        e, used = c, 0  # columns c..e-1 this pass: at least one, as many as fit
        while e < m and (e == c or used + bits[e] <= room):
            used += bits[e]
            e += 1
        key = _pack(keys, lo, bits, range(c, e), items)
        if used > room:  # pragma: no cover - one column and the tie groups overflow
            o = np.lexsort((key, seg))
        else:
            o = np.argsort(key | (seg << used), kind="stable")
        items, key, s = items[o], key[o], seg[o]
        order[pos] = items
        new = np.concatenate(([True], (s[1:] != s[:-1]) | (key[1:] != key[:-1])))
        nseg = np.cumsum(new) - 1
        keep = np.bincount(nseg)[nseg] >= 2
        pos, seg = pos[keep], nseg[keep]
        c = e
    if len(pos):  # equal in every key: row order
        items = order[pos]
        order[pos] = items[np.lexsort((items, seg))]
    return order
