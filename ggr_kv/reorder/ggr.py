"""GGR (Greedy Group Recursion, Liu et al., MLSys 2025, Algorithm 1) on integer codes.

What the paper's algorithm does (as its authors implemented it, ``QuickGreedy``)
---------------------------------------------------------------------------------
In a sub-table, score every (column, value) pair as ``len(v)^2 * (count(v) - 1)``, take
the best value v, put the rows holding v first (group G) with v's field moved to the
front of each of them, recurse on G without that field ("column recursion") and on the
other rows ("row recursion"). FD groups travel together: a group is one unit whose value
scores the sum of its members' squared lengths. Near-unique columns
(``n_distinct > distinct_value_threshold * n``) skip the recursion and go last. The
recursion falls back to the statistics order (`ggr_kv.reorder.units.fixed_order` + a
lexicographic row sort) when the best score is below ``early_stop``, after ``row_stop``
groups along a chain of row recursions, or after ``col_stop`` nested column recursions.
The authors' code also solves chunks of <= 2000 rows separately and sorts the whole
result at the end.

How this implementation computes it
-----------------------------------
Everything works on integer codes with numpy; no Python loop runs per cell, row or group
(only per round and per column). The recursion becomes rounds over *nodes*: a node is a
set of rows that share a path of chosen values, so all its rows have the same remaining
fields. Each round, for all nodes at once:

1. count every (node, field, value) among the node's rows still waiting for a group
   (per field: ``bincount`` when the (node, value) range is small, else a hash
   ``factorize``);
2. rank the candidates of each node (see ``split`` below);
3. each row picks the best-ranked candidate among its cells (its "owner"). Taken in rank
   order, the i-th candidate gets exactly the rows it owns, and its score after the
   earlier ones took their rows is ``w * (owned - 1)``. With ``split="value"`` (the
   paper's greedy) a candidate is what the sequential greedy picks next as long as that
   score is still >= the (not yet reduced) score of the next candidate, which bounds
   every later score; each round accepts, per node, the longest prefix of candidates
   that passes, so the result is the sequential greedy's (up to ties) in a few
   vectorized rounds instead of one Python step per group. Rows of rejected candidates
   wait for the next round, which recounts.
4. accepted candidates become child nodes with the chosen unit placed next.

Afterwards every row's unplaced units get the statistics order of its final node, the
near-unique units follow, and `ggr_kv.reorder.units.sort_rows` orders the rows.

``split``: how a node picks its groups
--------------------------------------
- ``"value"`` (paper): best ``len(v)^2 * (count - 1)`` first. Myopic: a short value
  held by many rows (``reviewtype: Fresh``) beats a long value held by a few (a movie's
  info), and taking it splits every such movie group in two, losing one long cell per
  movie. On 1M-row tables the count of a low-cardinality value grows with n while
  movie groups do not, so this happens more and more.
- ``"column"``: multi-way split. The node's best field (largest summed score over its
  shared values) groups ALL its shared values at once; rows whose value in it is unique
  continue at the node without it. This is an adaptive version of the statistics
  order; it never splits the dominant field's groups, but cannot give a few rows a
  better private field.
- ``"hybrid"`` (ours, default): the value greedy, with each value's score reduced by the
  weight of the node's best-field values it would split (``score - sum w(u)`` over u in
  the best field whose rows it holds only partly). The best field's own values are never
  penalized. Rounds accept every candidate that owns all its rows, plus the exact-greedy
  prefix.

What differs from the paper, and why (numbers: benchmarks/RESULTS-reorder.md)
-----------------------------------------------------------------------------
- ``split="hybrid"`` instead of the plain value score (above).
- No depth caps by default (``row_stop=None``, ``col_stop=None``) and
  ``early_stop=0``: every group with a positive score is formed. The paper's caps
  existed to bound a pandas recursion; here the remaining-rows branch is an iterative
  loop, so there is no depth to cap and no group gets scattered.
- No 2000-row chunks (``chunk_rows=None``): a group is never cut at a chunk boundary.
- ``distinct_value_threshold=1.0``: only units whose values are ALL distinct skip the
  recursion (that is lossless: they cannot be shared). The paper's 0.7 also drops units
  that still share a few long values (the 100-row posts sample has 94 distinct Bodies).
- ``constant_first=True``: a unit with the same value in every row of a node is placed
  at once. This never lowers PHC (the shared cells move to the front of every row of the
  node; every other shared prefix stays intact) and saves rounds; FD columns that were
  not declared come together this way.
- Rows are always ordered at the end by their (column, code) sequences, the optimal row
  order for the chosen field orders (the paper's final ``sort_values`` on strings does
  the same).
- Ties: the paper's code keeps the first value of a ``Counter``; here the larger count,
  then the field with the higher statistics score, then the first-coded value.
- FD members score as the sum of their squared lengths (this project's PHC counts every
  member cell); the paper's merged column is one string whose squared length is larger.

``preset="paper"`` restores the paper's knobs (``split="value"``,
``early_stop=100000``, ``distinct_value_threshold=0.7``, ``row_stop=4``, ``col_stop=2``,
``chunk_rows=2000``, ``constant_first=False``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import pandas as pd

from ggr_kv.reorder.units import Units, column_scores, fixed_order, sort_rows

__all__ = ["KNOBS", "PRESETS", "SPLITS", "GGRConfig", "ggr_config", "ggr_unit_order"]

SPLITS = ("hybrid", "column", "value")


@dataclass(frozen=True)
class GGRConfig:
    """Knobs of `ggr_unit_order`.

    Attributes
    ----------
    split : how a node picks groups: ``"hybrid"`` (ours), ``"column"`` or ``"value"``
        (the paper's); see the module docstring.
    early_stop : a group needs score >= this (characters^2); rows with only lower ones
        fall back to the statistics order. Paper: 100000.
    distinct_value_threshold : units with more than this fraction (0-1) of distinct
        values skip the recursion and go last; units whose values are all distinct
        always do (they cannot be shared). Paper: 0.7; ours 1.0.
    row_stop : groups along one chain of row recursions before the rest falls back;
        None = unlimited. Paper: 4.
    col_stop : nested column recursions before falling back; None = unlimited. Paper: 2.
    chunk_rows : solve chunks of at most this many rows separately (after one global
        statistics sort, halving recursively, as the paper's code does); None = whole
        table. Paper's code: 2000.
    constant_first : place units that are constant within a node at once.
    """

    split: str = "hybrid"
    early_stop: float = 0.0
    distinct_value_threshold: float = 1.0
    row_stop: int | None = None
    col_stop: int | None = None
    chunk_rows: int | None = None
    constant_first: bool = True


PRESETS: dict[str, GGRConfig] = {
    "ours": GGRConfig(),
    "paper": GGRConfig(
        split="value",
        early_stop=100_000.0,
        distinct_value_threshold=0.7,
        row_stop=4,
        col_stop=2,
        chunk_rows=2000,
        constant_first=False,
    ),
}

KNOBS = tuple(f.name for f in fields(GGRConfig))


def ggr_config(preset: str = "ours", **knobs: object) -> GGRConfig:
    """Build a `GGRConfig` from a preset (``"ours"`` or ``"paper"``) plus overrides.

    Raises
    ------
    ValueError
        unknown preset or split, or a knob value out of range (named in the message).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown GGR preset {preset!r}; valid presets: {sorted(PRESETS)}")
    cfg = replace(PRESETS[preset], **knobs)
    if cfg.split not in SPLITS:
        raise ValueError(f"unknown split {cfg.split!r}; valid splits: {list(SPLITS)}")
    try:
        dvt, es = float(cfg.distinct_value_threshold), float(cfg.early_stop)
    except (TypeError, ValueError):
        raise ValueError(
            "distinct_value_threshold and early_stop must be numbers, got "
            f"{cfg.distinct_value_threshold!r} and {cfg.early_stop!r}"
        ) from None
    if not 0.0 <= dvt <= 1.0:
        raise ValueError(f"distinct_value_threshold must be a fraction in [0, 1], got {dvt!r}")
    if es < 0:
        raise ValueError(f"early_stop must be >= 0 (characters^2), got {es!r}")
    for name in ("row_stop", "col_stop", "chunk_rows"):
        v = getattr(cfg, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {v!r}")
    return cfg


def _chunk_bounds(n: int, base: int) -> list[int]:
    """Start offsets of the paper's chunks: halve at ``len // 2`` until <= ``base`` rows."""
    out: list[int] = []
    stack = [(0, n)]
    while stack:
        start, length = stack.pop()
        if length <= base:
            out.append(start)
        else:
            mid = length // 2
            stack.append((start + mid, length - mid))
            stack.append((start, mid))
    return out


def _dense_ids(key: np.ndarray, key_range: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense ids, distinct keys and counts of ``key`` (non-negative ints < key_range)."""
    if key_range <= 4 * len(key) + 1024:
        full = np.bincount(key, minlength=key_range)
        present = np.flatnonzero(full)
        lut = np.empty(key_range, dtype=np.int64)
        lut[present] = np.arange(len(present))
        return lut[key], present.astype(np.int64), full[present]
    kid, uniq = pd.factorize(key)
    return kid.astype(np.int64), np.asarray(uniq, dtype=np.int64), np.bincount(kid)


@dataclass
class _Keys:
    """The (node, field, value) keys of one round."""

    kid: np.ndarray  # (p, A) key of each cell, -1 = placed
    node: np.ndarray  # per key: dense node index
    col: np.ndarray  # per key: active field index
    code: np.ndarray  # per key: unit code
    cnt: np.ndarray  # per key: rows holding it in the node


def _count_keys(
    codes: np.ndarray, avail: np.ndarray, nidx: np.ndarray, N: int, nd: np.ndarray
) -> _Keys:
    p, A = codes.shape
    kid = np.full((p, A), -1, dtype=np.int64)
    parts_node, parts_col, parts_code, parts_cnt = [], [], [], []
    off = 0
    for a in range(A):
        av = avail[:, a]
        if not av.any():
            continue
        full = av.all()
        width = int(nd[a])
        key = (nidx * width + codes[:, a]) if full else (nidx[av] * width + codes[av, a])
        ids, uniq, cnt = _dense_ids(key, N * width)
        if full:
            kid[:, a] = ids + off
        else:
            kid[av, a] = ids + off
        parts_node.append(uniq // width)
        parts_code.append(uniq % width)
        parts_col.append(np.full(len(uniq), a, dtype=np.int64))
        parts_cnt.append(cnt)
        off += len(uniq)
    cat = lambda x: np.concatenate(x) if x else np.zeros(0, dtype=np.int64)
    return _Keys(kid, cat(parts_node), cat(parts_col), cat(parts_code), cat(parts_cnt))


def _split_penalty(
    kid: np.ndarray, top_of_row: np.ndarray, cand: np.ndarray, cnt: np.ndarray, kw: np.ndarray
) -> np.ndarray:
    """Per key: summed weight of the node's top-field values whose rows it splits.

    A candidate v splits a shared top-field value u when some, but not all, of u's rows
    hold v. Only candidate pairs count (other cells share nothing).
    """
    p, A = kid.shape
    nkeys = len(cnt)
    pen = np.zeros(nkeys, dtype=np.int64)
    if A < 2 or p == 0:
        return pen
    u = kid[np.arange(p), top_of_row]
    rows = u >= 0
    rows[rows] = cand[u[rows]]
    if not rows.any():
        return pen
    u = u[rows]
    top = top_of_row[rows]
    sub = kid[rows]
    for a in range(A):
        v = sub[:, a]
        sel = (v >= 0) & (top != a)
        if not sel.any():
            continue
        sel[sel] = cand[v[sel]]
        if not sel.any():
            continue
        vv, uu = v[sel], u[sel]
        pid, puniq = pd.factorize(vv * nkeys + uu)
        n_vu = np.bincount(pid)
        pk = np.asarray(puniq, dtype=np.int64)
        pv, pu = pk // nkeys, pk % nkeys
        split = n_vu < cnt[pu]
        if split.any():
            pen += np.bincount(pv[split], weights=kw[pu[split]], minlength=nkeys).astype(np.int64)
    return pen


@dataclass
class _Ctx:
    """What one `ggr_unit_order` call keeps fixed: knobs and the active units' data."""

    cfg: GGRConfig
    active: np.ndarray  # unit ids that take part in the recursion, statistics order
    codes: np.ndarray  # (n, A) their codes
    nd: np.ndarray  # (A,) distinct codes
    wts: list  # per active unit: weight of each code
    gscore: np.ndarray  # (A,) statistics score
    early: float  # smallest score a group needs (>= 1)


@dataclass
class _State:
    """What the rounds change: per-row orders so far, node and recursion depths."""

    perm: np.ndarray  # (n, u) unit order, -1 = not yet placed
    npl: np.ndarray  # (n,) units placed so far in each row
    placed: np.ndarray  # (n, A) active unit placed
    node: np.ndarray  # (n,) node of each row
    rd: np.ndarray  # (n,) row-recursion depth of the row's node
    cd: np.ndarray  # (n,) column-recursion depth of the row's node
    ng: np.ndarray  # (n,) groups already taken at the row's node
    next_node: int
    info: dict


@dataclass
class _Round:
    """One round's keys, weights and candidates (pending rows ``P`` only)."""

    P: np.ndarray
    nidx: np.ndarray  # dense node of each pending row
    N: int
    keys: _Keys
    kid: np.ndarray
    kw: np.ndarray  # per key: weight of its value
    is_const: np.ndarray
    cidx: np.ndarray = None  # candidate keys in rank order
    ccol: np.ndarray = None
    cnode: np.ndarray = None
    pen: np.ndarray | None = None
    rank_score: np.ndarray = None
    top: np.ndarray | None = None


def _setup(units: Units, cfg: GGRConfig) -> tuple[_Ctx, _State, np.ndarray]:
    """Split units into active and near-unique ones; empty state; the dropped units."""
    n, u = units.codes.shape
    glob_scores = column_scores(units)
    glob_order = fixed_order(glob_scores)
    discard = (units.n_distinct >= n) | (units.n_distinct > float(cfg.distinct_value_threshold) * n)
    active = np.array([k for k in glob_order if not discard[k]], dtype=np.int64)
    dropped = np.array([k for k in glob_order if discard[k]], dtype=np.int64)
    info: dict = {
        "rounds": 0,
        "groups": 0,
        "constant_placements": 0,
        "fallback_rows": {"early_stop": 0, "row_stop": 0, "col_stop": 0},
        "discarded_units": [int(k) for k in dropped],
    }
    ctx = _Ctx(
        cfg,
        active,
        units.codes[:, active],
        units.n_distinct[active],
        [units.weights[k] for k in active],
        glob_scores[active],
        max(float(cfg.early_stop), 1.0),  # a group must gain something
    )
    z = lambda: np.zeros(n, dtype=np.int64)  # noqa: E731
    st = _State(
        np.full((n, u), -1, dtype=np.int32),
        z(),
        np.zeros((n, len(active)), dtype=bool),
        z(),
        z(),
        z(),
        z(),
        1,
        info,
    )
    return ctx, st, dropped


def _chunk_nodes(ctx: _Ctx, st: _State) -> None:
    """The paper's chunks: one node per chunk of the statistics-sorted rows."""
    n, A = ctx.codes.shape
    cr = ctx.cfg.chunk_rows
    if cr is None or n <= cr:
        return
    order = sort_rows(ctx.codes, np.broadcast_to(np.arange(A), (n, A)))
    starts = _chunk_bounds(n, int(cr))
    mark = np.zeros(n, dtype=np.int64)
    mark[np.asarray(starts[1:], dtype=np.int64)] = 1
    st.node[order] = np.cumsum(mark)
    st.next_node = len(starts)


def _round_keys(ctx: _Ctx, st: _State, P: np.ndarray) -> _Round:
    """Count the (node, field, value) keys of the pending rows and weigh them."""
    nidx, nuniq = pd.factorize(st.node[P])
    nidx = nidx.astype(np.int64)
    N = len(nuniq)
    keys = _count_keys(ctx.codes[P], ~st.placed[P], nidx, N, ctx.nd)
    kw = np.zeros(len(keys.cnt), dtype=np.int64)
    for a in range(len(ctx.active)):
        sel = keys.col == a
        kw[sel] = ctx.wts[a][keys.code[sel]]
    return _Round(P, nidx, N, keys, keys.kid, kw, np.zeros(len(keys.cnt), dtype=bool))


def _place_constants(ctx: _Ctx, st: _State, rd: _Round) -> None:
    """``constant_first``: place every unit constant within a node at once."""
    cnt, P, n = rd.keys.cnt, rd.P, st.perm.shape[0]
    ns = np.bincount(rd.nidx, minlength=rd.N)
    is_const = (cnt == ns[rd.keys.node]) & (cnt >= 2)
    if not is_const.any():
        return
    const_cell = np.r_[is_const, False][rd.kid]  # kid -1 picks the False
    rows_c, cols_c = np.nonzero(const_cell)  # row-major: statistics order
    r = P[rows_c]
    first = np.r_[True, rows_c[1:] != rows_c[:-1]]
    idx = np.arange(len(rows_c))
    start = np.maximum.accumulate(np.where(first, idx, 0))
    st.perm[r, st.npl[r] + (idx - start)] = ctx.active[cols_c]
    st.npl += np.bincount(r, minlength=n)
    st.placed[r, cols_c] = True
    rd.kid = np.where(const_cell, -1, rd.kid)
    rd.is_const = is_const
    st.info["constant_placements"] += int(is_const.sum())


def _rank(ctx: _Ctx, rd: _Round) -> None:
    """Candidates of each node in rank order (``split`` decides the ranking)."""
    keys, cnt, kw, A = rd.keys, rd.keys.cnt, rd.kw, len(ctx.active)
    score = kw * (cnt - 1)
    cand = (~rd.is_const) & (cnt >= 2) & (kw > 0) & (score >= ctx.early)
    cidx = np.flatnonzero(cand)
    ccol, cnode = keys.col[cidx], keys.node[cidx]
    split = ctx.cfg.split
    rd.rank_score = score
    if split in ("column", "hybrid") and len(cidx):
        gsum = np.bincount(
            cnode * A + ccol, weights=score[cidx].astype(float), minlength=rd.N * A
        ).reshape(rd.N, A)
        rd.top = gsum.argmax(axis=1)  # ties: the field earlier in the statistics order
    tie = (keys.code[cidx], -ctx.gscore[ccol], -cnt[cidx], -score[cidx])
    if split == "column":
        rank_key = ccol != rd.top[cnode] if len(cidx) else np.zeros(0, bool)
        o = np.lexsort((keys.code[cidx], -cnt[cidx], -score[cidx], rank_key, cnode))
    elif split == "hybrid" and len(cidx):
        rd.pen = _split_penalty(rd.kid, rd.top[rd.nidx], cand, cnt, kw)
        rd.rank_score = score - rd.pen
        o = np.lexsort((*tie, -rd.rank_score[cidx], cnode))
    else:
        o = np.lexsort((*tie, cnode))
    rd.cidx, rd.ccol, rd.cnode = cidx[o], ccol[o], cnode[o]


def _owners(rd: _Round) -> np.ndarray:
    """Per pending row: rank of the best candidate among its cells (int64 max = none)."""
    big = np.iinfo(np.int64).max
    crank = np.full(len(rd.keys.cnt) + 1, big, dtype=np.int64)
    crank[rd.cidx] = np.arange(len(rd.cidx))
    return crank[np.where(rd.kid >= 0, rd.kid, len(rd.keys.cnt))].min(axis=1)


def _accepted(ctx: _Ctx, st: _State, rd: _Round, owner: np.ndarray, has: np.ndarray):
    """Which ranked candidates become groups this round, and their rank in their node."""
    cfg, cidx, cnode, nc = ctx.cfg, rd.cidx, rd.cnode, len(rd.cidx)
    ownc = np.bincount(owner[has], minlength=nc)
    gain = rd.kw[cidx] * (ownc - 1)
    upd = gain - (rd.pen[cidx] if rd.pen is not None else 0)
    c_rs = rd.rank_score[cidx]
    same_next = np.r_[cnode[1:] == cnode[:-1], False]
    s_next = np.where(same_next, np.r_[c_rs[1:], 0], np.iinfo(np.int64).min)
    valid = (ownc >= 2) & (gain >= ctx.early)
    good = valid & (upd >= s_next)
    seg_first = np.r_[True, cnode[1:] != cnode[:-1]]
    at = np.arange(nc)
    stt = np.maximum.accumulate(np.where(seg_first, at, 0))
    pos = at - stt  # rank within the node
    bad_cum = np.cumsum(~good)
    bad_before = np.where(stt > 0, bad_cum[np.maximum(stt - 1, 0)], 0)
    accepted = (bad_cum - bad_before) == 0  # the exact-greedy prefix
    if cfg.split == "column":
        accepted = valid & (rd.ccol == rd.top[cnode])
    elif cfg.split == "hybrid":
        accepted |= valid & (ownc == rd.keys.cnt[cidx])  # owns all its rows
    if cfg.row_stop is not None:
        depth = np.zeros(rd.N, dtype=np.int64)
        depth[rd.nidx] = st.rd[rd.P] + st.ng[rd.P]
        accepted &= pos < (cfg.row_stop - depth)[cnode]
    return accepted, pos


def _apply(ctx, st, rd, owner, has, done, accepted, pos) -> list[np.ndarray]:
    """Move grouped rows into child nodes; the rest wait. Returns the next pending rows."""
    cfg, P, nidx, N = ctx.cfg, rd.P, rd.nidx, rd.N
    fb, out = st.info["fallback_rows"], []
    n_acc = int(accepted.sum())
    new_id = np.full(len(rd.cidx), -1, dtype=np.int64)
    new_id[accepted] = st.next_node + np.arange(n_acc)
    st.next_node += n_acc
    st.info["groups"] += n_acc
    rd_n, cd_n, ng_n = (np.zeros(N, dtype=np.int64) for _ in range(3))
    rd_n[nidx], cd_n[nidx], ng_n[nidx] = st.rd[P], st.cd[P], st.ng[P]
    grouped = has & accepted[np.where(has, owner, 0)]
    gi = np.flatnonzero(grouped)
    if len(gi):
        oc, r = owner[gi], P[gi]
        col = rd.ccol[oc]
        st.perm[r, st.npl[r]] = ctx.active[col]
        st.npl[r] += 1
        st.placed[r, col] = True
        pn = nidx[gi]
        st.rd[r] = rd_n[pn] + ng_n[pn] + pos[oc]
        st.cd[r] = cd_n[pn] + 1
        st.ng[r] = 0
        st.node[r] = new_id[oc]
        if cfg.col_stop is not None:
            stop = st.cd[r] >= cfg.col_stop
            fb["col_stop"] += int(stop.sum())
            r = r[~stop]
        out.append(r)
    rest = np.flatnonzero(~grouped & ~done)
    if len(rest):
        r = P[rest]
        st.ng[r] += np.bincount(rd.cnode[accepted], minlength=N)[nidx[rest]]
        if cfg.row_stop is not None:
            capped = (st.rd[r] + st.ng[r]) >= cfg.row_stop
            fb["row_stop"] += int(capped.sum())
            r = r[~capped]
        out.append(r)
    return out


def _one_round(ctx: _Ctx, st: _State, P: np.ndarray) -> np.ndarray:
    """Form this round's groups for the pending rows ``P``; return the rows still pending."""
    st.info["rounds"] += 1
    rd = _round_keys(ctx, st, P)
    if ctx.cfg.constant_first:
        _place_constants(ctx, st, rd)
    _rank(ctx, rd)
    owner = _owners(rd)
    has = owner < np.iinfo(np.int64).max
    done = ~has  # nothing left to share in the row's node (or only below early_stop)
    if float(ctx.cfg.early_stop) > 1.0 and done.any():
        shareable = (rd.keys.cnt >= 2) & (rd.kw > 0) & ~rd.is_const
        sh = np.r_[shareable, False][rd.kid]
        st.info["fallback_rows"]["early_stop"] += int((done & sh.any(axis=1)).sum())
    if not len(rd.cidx):
        return P[:0]
    accepted, pos = _accepted(ctx, st, rd, owner, has)
    out = _apply(ctx, st, rd, owner, has, done, accepted, pos)
    return np.concatenate(out) if out else P[:0]


def ggr_unit_order(units: Units, cfg: GGRConfig, progress: bool = False) -> tuple[np.ndarray, dict]:
    """Per-row unit orders chosen by GGR.

    Parameters
    ----------
    units : the table as reorder units (`ggr_kv.reorder.units.build_units`).
    cfg : knobs (`ggr_config`).
    progress : show a tqdm bar (rows settled) over the rounds.

    Returns
    -------
    ``(n, u)`` int32 unit order of each row (original row order), and an info dict:
    ``rounds``, ``groups`` (groups formed), ``constant_placements`` (unit placements by
    ``constant_first``), ``fallback_rows`` (rows that went to the statistics order while
    sharing was still possible, per reason: ``early_stop``, ``row_stop``, ``col_stop``)
    and ``discarded_units`` (near-unique units placed last).

    Steps: `_setup` (active and near-unique units), `_chunk_nodes` (the paper's chunks),
    then rounds of `_one_round` (`_round_keys`, `_place_constants`, `_rank`, `_owners`,
    `_accepted`, `_apply`) until no row waits, then `_finish` (statistics order for the
    rest).
    """
    n = units.codes.shape[0]
    ctx, st, dropped = _setup(units, cfg)
    if len(ctx.active) == 0 or n == 0:
        return _finish(units, st.perm, st.npl, st.placed, ctx.active, dropped, st.node), st.info
    _chunk_nodes(ctx, st)
    pending = np.arange(n, dtype=np.int64)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="ggr", unit="row")
    while len(pending):
        pending = _one_round(ctx, st, pending)
        if bar is not None:
            bar.n = n - len(pending)
            bar.refresh()
    if bar is not None:
        bar.close()
    return _finish(units, st.perm, st.npl, st.placed, ctx.active, dropped, st.node), st.info


def _finish(
    units: Units,
    perm: np.ndarray,
    npl: np.ndarray,
    placed: np.ndarray,
    active: np.ndarray,
    dropped: np.ndarray,
    node: np.ndarray,
) -> np.ndarray:
    """Append each row's unplaced active units in its node's statistics order, then the
    near-unique units in the global statistics order."""
    n = perm.shape[0]
    A = len(active)
    left = ~placed
    if n and A and left.any():
        rows = np.flatnonzero(left.any(axis=1))
        nidx, nuniq = pd.factorize(node[rows])
        nidx = nidx.astype(np.int64)
        N = len(nuniq)
        size = np.bincount(nidx, minlength=N).astype(float)
        sc = np.zeros((N, A), dtype=float)
        for a in range(A):
            k = active[a]
            width = int(units.n_distinct[k])
            key = nidx * width + units.codes[rows, k]
            uniq = _dense_ids(key, N * width)[1]
            nun = np.bincount(uniq // width, minlength=N).astype(float)
            avg = np.bincount(nidx, weights=units.row_chars[rows, k], minlength=N) / size
            s = avg**2 * (size / np.maximum(nun, 1.0) - 1.0)
            sc[:, a] = np.where(nun >= size, 0.0, s)
        rs = sc[nidx]  # (rows, A); active is in global order, the stable sort keeps it
        lr = left[rows]
        rs[~lr] = -np.inf  # placed units sort last and are cut off
        o = np.argsort(-rs, axis=1, kind="stable")
        n_left = lr.sum(axis=1)
        posn = np.arange(A)[None, :]
        take = posn < n_left[:, None]
        rr = np.broadcast_to(rows[:, None], o.shape)[take]
        dest = (npl[rows][:, None] + posn)[take]
        perm[rr, dest] = active[o[take]]
        npl[rows] += n_left
    if len(dropped):
        perm[:, perm.shape[1] - len(dropped) :] = dropped[None, :]
    return perm
