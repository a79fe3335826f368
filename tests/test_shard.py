"""Group-aware sharding of a run order over replicas (``ggr_kv.reorder.shard``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ggr_kv.core.blocks import block_hashes, to_csr, unbounded_prefix_hits
from ggr_kv.reorder.shard import prefix_depths, shard_order

B = 4
HEAD = list(range(1000, 1008))  # two blocks every prompt shares (instruction + query)


def grouped_prompts(group_sizes: list[int], shared_blocks: int = 3, own: int = 5, seed=0):
    """Prompts in run order: the head, then a group's shared blocks, then own tokens."""
    rng = np.random.default_rng(seed)
    seqs = []
    for g, size in enumerate(group_sizes):
        shared = (10_000 * (g + 1) + np.arange(shared_blocks * B)).tolist()
        for _ in range(size):
            seqs.append(HEAD + shared + rng.integers(1, 999, own).tolist())
    return to_csr(seqs)


def test_prefix_depths_count_shared_full_blocks():
    tok, off = to_csr([[1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 5, 6, 7, 0, 9],
                       [1, 2, 3, 4, 5, 6, 7, 0, 9, 9], [5, 5, 5, 5]])
    assert prefix_depths(tok, off, B).tolist() == [0, 1, 2, 0]


def check_partition(s, n):
    slots = np.concatenate([sh.slots for sh in s.shards])
    assert sorted(slots.tolist()) == list(range(n))  # every prompt on exactly one replica
    for sh in s.shards:
        assert (np.diff(sh.slots) > 0).all()  # each replica keeps the run order


def test_groups_stay_whole_and_replicas_balance():
    tok, off = grouped_prompts([3, 2, 4, 3, 2, 4, 3, 3])
    s = shard_order(tok, off, 2, block_size=B)
    check_partition(s, len(off) - 1)
    group_of = np.repeat(np.arange(8), [3, 2, 4, 3, 2, 4, 3, 3])
    replica = s.replica_of(len(off) - 1)
    for g in range(8):
        assert len(set(replica[group_of == g])) == 1, f"group {g} split"
    assert s.groups == 8 and s.split_groups == 0
    assert s.balance < 1.2


def test_group_aware_computes_fewer_tokens_than_count_based_splits():
    tok, off = grouped_prompts([3, 2, 4, 3, 2, 4, 3, 3], shared_blocks=6)
    by = {h: shard_order(tok, off, 3, block_size=B, how=h) for h in
          ("groups", "round_robin", "contiguous")}
    assert by["groups"].uncached_tokens < by["round_robin"].uncached_tokens
    assert by["groups"].uncached_tokens <= by["contiguous"].uncached_tokens
    one = int((np.diff(off) - unbounded_prefix_hits(block_hashes(tok, off, B))).sum())
    # group-aware adds only the common head per extra replica to one engine's work
    assert by["groups"].uncached_tokens <= one + 2 * len(HEAD)


def test_a_group_larger_than_a_share_is_split_at_subgroup_boundaries():
    rng = np.random.default_rng(1)
    seqs = []
    for sub in range(4):  # one big group (shared block 77..) with 4 subgroups
        sub_tokens = (50_000 + 100 * sub + np.arange(2 * B)).tolist()
        for _ in range(5):
            seqs.append(HEAD + list(range(77, 77 + B)) + sub_tokens + rng.integers(1, 9, 3).tolist())
    for _ in range(2):  # a small second group
        seqs.append(HEAD + list(range(88, 88 + 3 * B)) + rng.integers(1, 9, 3).tolist())
    tok, off = to_csr(seqs)
    s = shard_order(tok, off, 2, block_size=B)
    check_partition(s, 22)
    assert s.groups == 2 and s.split_groups == 1 and s.balance < 1.3
    replica = s.replica_of(22)
    for sub in range(4):  # subgroups stay whole
        assert len(set(replica[sub * 5 : (sub + 1) * 5])) == 1


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=20), st.integers(1, 4),
       st.sampled_from(["groups", "round_robin", "contiguous"]))
def test_every_split_is_a_partition_that_keeps_run_order(sizes, n_shards, how):
    tok, off = grouped_prompts(sizes)
    s = shard_order(tok, off, n_shards, block_size=B, how=how)
    assert len(s.shards) == n_shards
    check_partition(s, len(off) - 1)
    assert sum(sh.prompt_tokens for sh in s.shards) == int(off[-1])


def test_bad_arguments_name_the_value():
    tok, off = grouped_prompts([2])
    with pytest.raises(ValueError, match="round-robin|'rr'"):
        shard_order(tok, off, 2, block_size=B, how="rr")
    with pytest.raises(ValueError, match="n_shards"):
        shard_order(tok, off, 0, block_size=B)


def test_ray_default_deals_batches_of_consecutive_prompts_in_turn():
    tok, off = grouped_prompts([3, 2, 4, 3, 2, 4, 3, 3])
    n = len(off) - 1
    s = shard_order(tok, off, 3, block_size=B, how="ray_default", batch_rows=4)
    check_partition(s, n)
    replica = s.replica_of(n)
    assert replica.tolist() == [(i // 4) % 3 for i in range(n)]
    with pytest.raises(ValueError, match="batch_rows"):
        shard_order(tok, off, 3, block_size=B, how="ray_default", batch_rows=0)
