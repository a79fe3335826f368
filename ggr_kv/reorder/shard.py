"""Split a run order over N engine replicas without breaking its prefix groups.

With vLLM data parallelism every replica has its own prefix cache, and vLLM balances
requests by load, not by prefix: an order split by count or round robin puts prompts of
one group on several replicas, and each of those replicas computes the group's shared
prefix again. `shard_order` keeps every prefix group on one replica and balances the
replicas by the prompt tokens each must compute (its uncached tokens), which is what a
prefill-bound job's time follows.

Prefix groups come from the exact prompts: consecutive prompts (in run order) that share
at least one full KV block beyond the prefix ALL prompts share (instruction and query)
form a group. A group too large for one replica's share is split at its deepest-shared
subgroup boundaries (costing one recomputation of the part they share per extra replica),
never in the middle of a subgroup when a coarser split balances.

Uncached tokens per prompt are those of the unbounded cache on the whole order (a group's
first prompt re-computes all but the common head, later prompts what they do not share
with earlier ones); the simulator (`ggr_kv.simulate`) judges a split under a finite cache.

Baselines: ``"round_robin"`` (slot i to replica i mod N), ``"contiguous"`` (equal-count
consecutive chunks), the splits a count-based balancer gives, and ``"ray_default"``: the
order cut into batches of ``batch_rows`` consecutive prompts dealt to the replicas in
turn, which is what Ray Data's actor pool (``map_batches``, ``ray.data.llm``; default
batch size 32 rows) does when every batch takes about as long: each batch goes to the
next idle actor, with no notion of which prefixes that actor has cached.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from ggr_kv.core.blocks import block_hashes, unbounded_prefix_hits

__all__ = ["SHARDINGS", "Shard", "Sharding", "make_shard", "prefix_depths", "shard_order"]

#: ways of splitting a run order over replicas
SHARDINGS: tuple[str, ...] = ("groups", "round_robin", "contiguous", "ray_default")
#: rows per batch of the ``"ray_default"`` split (``ray.data.llm``'s default batch_size)
RAY_BATCH_ROWS = 32


@dataclass(frozen=True)
class Shard:
    """The prompts one replica runs.

    Attributes
    ----------
    slots : run-order positions of its prompts, in run order (int64).
    prompt_tokens : tokens of its prompts.
    uncached_tokens : tokens it must compute with an unbounded cache of its own
        (its prompts replayed alone, in order).
    """

    slots: np.ndarray = field(repr=False)
    prompt_tokens: int
    uncached_tokens: int

    @property
    def n_prompts(self) -> int:
        return len(self.slots)


@dataclass(frozen=True)
class Sharding:
    """A split of a run order over replicas.

    Attributes
    ----------
    how : one of `SHARDINGS`.
    shards : one `Shard` per replica.
    groups : prefix groups the split respected (``"groups"`` only; 0 otherwise).
    split_groups : groups that had to be split to balance the replicas.
    """

    how: str
    shards: list[Shard]
    groups: int = 0
    split_groups: int = 0

    @property
    def uncached_tokens(self) -> int:
        """Tokens computed over all replicas (duplicates of split prefixes included)."""
        return sum(s.uncached_tokens for s in self.shards)

    @property
    def balance(self) -> float:
        """Slowest / mean replica by uncached tokens (1.0 = perfectly even)."""
        loads = np.array([s.uncached_tokens for s in self.shards], dtype=float)
        return float(loads.max() / loads.mean()) if loads.mean() > 0 else 1.0

    def replica_of(self, n_slots: int) -> np.ndarray:
        """``(n_slots,)`` replica index of every run-order slot."""
        out = np.full(n_slots, -1, dtype=np.int64)
        for k, s in enumerate(self.shards):
            out[s.slots] = k
        return out


def prefix_depths(tokens: np.ndarray, offsets: np.ndarray, block_size: int) -> np.ndarray:
    """Full KV blocks each prompt shares with the previous one in run order (0 for the first).

    Chained block hashes make equal blocks a prefix, so counting equal hashes at equal
    block positions gives the shared depth. Returns ``(n,)`` int64.
    """
    bh = block_hashes(tokens, offsets, block_size)
    nb = np.diff(bh.block_offsets)
    n = len(nb)
    depth = np.zeros(n, dtype=np.int64)
    if n < 2:
        return depth
    common = np.minimum(nb[1:], nb[:-1])  # blocks comparable between i-1 and i
    owner = np.repeat(np.arange(1, n), common)
    k = np.arange(int(common.sum())) - np.repeat(np.cumsum(common) - common, common)
    same = bh.hashes[bh.block_offsets[owner] + k] == bh.hashes[bh.block_offsets[owner - 1] + k]
    depth[1:] = np.bincount(owner - 1, weights=same, minlength=n - 1).astype(np.int64)
    return depth


def _uncached(tokens: np.ndarray, offsets: np.ndarray, block_size: int) -> np.ndarray:
    bh = block_hashes(tokens, offsets, block_size)
    return np.diff(offsets) - unbounded_prefix_hits(bh)


def _subset(tokens: np.ndarray, offsets: np.ndarray, slots: np.ndarray):
    lens = np.diff(offsets)[slots]
    new_off = np.zeros(len(slots) + 1, dtype=np.int64)
    np.cumsum(lens, out=new_off[1:])
    idx = np.repeat(offsets[slots] - new_off[:-1], lens) + np.arange(int(new_off[-1]))
    return tokens[idx], new_off


def make_shard(tokens: np.ndarray, offsets: np.ndarray, block_size: int, slots: np.ndarray,
               *, keep_order: bool = False) -> Shard:
    """The `Shard` of the prompts at ``slots`` (run order, unless ``keep_order``: then in
    the given order, as a router that reorders prompts sends them), with its tokens and
    its uncached tokens under an unbounded cache of its own."""
    slots = np.asarray(slots, dtype=np.int64)
    if not keep_order:
        slots = np.sort(slots)
    if not len(slots):
        return Shard(slots, 0, 0)
    t, o = _subset(tokens, offsets, slots)
    return Shard(slots, int(o[-1]), int(_uncached(t, o, block_size).sum()))


def _groups(depth: np.ndarray, level: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """Runs ``[a, b)`` of slots in ``[lo, hi)`` whose internal boundaries share > level blocks."""
    cut = np.flatnonzero(depth[lo + 1 : hi] <= level) + lo + 1
    edges = [lo, *cut.tolist(), hi]
    return list(itertools.pairwise(edges))


def _atoms(depth: np.ndarray, cost: np.ndarray, head: int, target: float):
    """Prefix groups as ``(start, end, cost)``; a group costlier than ``target`` is split at
    its shallowest internal boundaries (its subgroups), again until the parts fit."""
    todo = _groups(depth, head, 0, len(depth))
    csum = np.r_[0.0, np.cumsum(cost)]
    atoms, split = [], 0
    while todo:
        a, b = todo.pop()
        c = float(csum[b] - csum[a])
        if c <= target or b - a == 1:
            atoms.append((a, b, c))
            continue
        split += 1  # cut where the group's members share the fewest blocks
        todo.extend(_groups(depth, int(depth[a + 1 : b].min()), a, b))
    atoms.sort()
    return atoms, split


def _balance(atoms: list[tuple[int, int, float]], n_shards: int) -> list[list[int]]:
    """Longest-first greedy assignment of atoms to the least loaded replica."""
    loads = np.zeros(n_shards)
    members: list[list[int]] = [[] for _ in range(n_shards)]
    for i in sorted(range(len(atoms)), key=lambda i: -atoms[i][2]):
        k = int(np.argmin(loads))
        loads[k] += atoms[i][2]
        members[k].append(i)
    return members


def shard_order(
    tokens: np.ndarray,
    offsets: np.ndarray,
    n_shards: int,
    *,
    block_size: int,
    how: str = "groups",
    slack: float = 1.02,
    batch_rows: int = RAY_BATCH_ROWS,
) -> Sharding:
    """Split prompts in run order over ``n_shards`` replicas.

    Parameters
    ----------
    tokens, offsets : the prompts in run order, CSR token ids as vLLM sees them.
    n_shards : replicas (engines, one per GPU or host).
    block_size : KV block size, tokens (16 on GPU, 128 on the CPU backend).
    how : ``"groups"`` (prefix groups kept whole, balanced by uncached tokens),
        ``"round_robin"``, ``"contiguous"`` or ``"ray_default"`` (the count-based
        baselines).
    slack : a group may exceed the even share by this factor before it is split.
    batch_rows : prompts per batch of ``"ray_default"``.

    Returns
    -------
    `Sharding`; each shard keeps the run order of its prompts.
    """
    if how not in SHARDINGS:
        raise ValueError(f"unknown sharding {how!r}; choose one of {list(SHARDINGS)}")
    if not isinstance(n_shards, (int, np.integer)) or n_shards < 1:
        raise ValueError(f"n_shards must be a positive integer, got {n_shards!r}")
    offsets = np.asarray(offsets, dtype=np.int64)
    tokens = np.asarray(tokens)
    n = len(offsets) - 1
    slots = np.arange(n, dtype=np.int64)
    if how == "round_robin":
        parts = [slots[k::n_shards] for k in range(n_shards)]
        return Sharding(how, [make_shard(tokens, offsets, block_size, p) for p in parts])
    if how == "ray_default":
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be at least 1, got {batch_rows!r}")
        batch_of = (slots // batch_rows) % n_shards
        parts = [slots[batch_of == k] for k in range(n_shards)]
        return Sharding(how, [make_shard(tokens, offsets, block_size, p) for p in parts])
    if how == "contiguous":
        parts = np.array_split(slots, n_shards)
        return Sharding(how, [make_shard(tokens, offsets, block_size, p) for p in parts])
    depth = prefix_depths(tokens, offsets, block_size)
    head = int(depth[1:].min()) if n > 1 else 0  # blocks every prompt shares
    cost = _uncached(tokens, offsets, block_size).astype(float)
    target = slack * cost.sum() / n_shards
    atoms, split = _atoms(depth, cost, head, target)
    members = _balance(atoms, n_shards)
    shards = []
    for ids in members:
        sl = np.concatenate([slots[atoms[i][0] : atoms[i][1]] for i in ids]) if ids else slots[:0]
        shards.append(make_shard(tokens, offsets, block_size, sl))
    n_groups = len(_groups(depth, head, 0, n)) if n else 0
    return Sharding(how, shards, groups=n_groups, split_groups=split)
