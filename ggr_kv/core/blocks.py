"""Vectorized chained block hashes of token sequences, as vLLM's prefix cache keys them.

vLLM hashes every FULL block of ``block_size`` tokens together with its parent block's
hash, so a block hash identifies the whole prefix up to that block. This module does the
same with a 64-bit hash computed by numpy over many prompts at once (no per-token Python
loop). The hash values differ from vLLM's SHA-256 ones; only equality matters here.

Token sequences travel in CSR form: ``tokens`` (all ids, concatenated) and ``offsets``
(``len == n_prompts + 1``), as ``quicktok``'s ``encode_batch`` returns them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BlockHashes", "block_hashes", "to_csr", "unbounded_prefix_hits"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_ROOT = np.uint64(0x9E3779B97F4A7C15)
_CHUNK_TOKENS = 1 << 22  # tokens hashed per numpy pass (bounds temporary memory)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, elementwise on uint64 (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def _position_weights(block_size: int) -> np.ndarray:
    rng = np.random.default_rng(0x6767524B56)  # fixed: hashes are stable across runs
    return rng.integers(1, 2**63, size=block_size, dtype=np.uint64) | np.uint64(1)


@dataclass(frozen=True)
class BlockHashes:
    """Chained hashes of each prompt's full blocks, in CSR form.

    Attributes
    ----------
    hashes : ``(total_full_blocks,)`` uint64; prompt i's blocks are
        ``hashes[block_offsets[i]:block_offsets[i + 1]]``.
    block_offsets : ``(n_prompts + 1,)`` int64.
    n_tokens : ``(n_prompts,)`` int64 prompt lengths in tokens.
    block_size : tokens per block.
    """

    hashes: np.ndarray
    block_offsets: np.ndarray
    n_tokens: np.ndarray
    block_size: int

    @property
    def n_prompts(self) -> int:
        return len(self.n_tokens)

    def of(self, i: int) -> np.ndarray:
        """Block hashes of prompt ``i``."""
        return self.hashes[self.block_offsets[i] : self.block_offsets[i + 1]]


def to_csr(seqs: Sequence[Sequence[int]] | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate token sequences into ``(tokens, offsets)``."""
    lens = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    tokens = (
        np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs])
        if len(seqs) and offsets[-1]
        else np.zeros(0, dtype=np.int64)
    )
    return tokens, offsets


def block_hashes(tokens: np.ndarray, offsets: np.ndarray, block_size: int) -> BlockHashes:
    """Chained hashes of every full block of every prompt.

    Parameters
    ----------
    tokens, offsets : prompts in CSR form (see `to_csr`).
    block_size : tokens per KV block (vLLM: 16 on GPU, 128 on the CPU backend).
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    tokens = np.asarray(tokens)
    offsets = np.asarray(offsets, dtype=np.int64)
    n_tokens = np.diff(offsets)
    n_full = n_tokens // block_size
    block_offsets = np.zeros(len(n_tokens) + 1, dtype=np.int64)
    np.cumsum(n_full, out=block_offsets[1:])
    total = int(block_offsets[-1])
    owner = np.repeat(np.arange(len(n_tokens)), n_full)
    k_in_prompt = np.arange(total) - block_offsets[owner]
    starts = offsets[owner] + k_in_prompt * block_size

    # content hash of each block: weighted sum of its tokens (wrapping uint64), mixed
    w = _position_weights(block_size)
    content = np.empty(total, dtype=np.uint64)
    step = max(1, _CHUNK_TOKENS // block_size)
    toks = tokens.astype(np.uint64, copy=False)
    for a in range(0, total, step):
        b = min(total, a + step)
        idx = starts[a:b, None] + np.arange(block_size)
        with np.errstate(over="ignore"):
            content[a:b] = _mix((toks[idx] * w).sum(axis=1, dtype=np.uint64))

    # chain: h_k = mix(h_{k-1} * M + content_k), one vectorized pass per block index
    hashes = np.empty(total, dtype=np.uint64)
    prev = np.full(len(n_tokens), _ROOT, dtype=np.uint64)
    max_blocks = int(n_full.max()) if len(n_full) else 0
    with np.errstate(over="ignore"):
        for k in range(max_blocks):
            live = np.flatnonzero(n_full > k)
            pos = block_offsets[live] + k
            h = _mix(prev[live] * _M1 + content[pos])
            hashes[pos] = h
            prev[live] = h
    return BlockHashes(hashes, block_offsets, n_tokens, block_size)


def unbounded_prefix_hits(bh: BlockHashes) -> np.ndarray:
    """Cached tokens per prompt when every earlier prompt's blocks stay cached forever.

    A block hits if an EARLIER prompt produced the same chained hash. As in vLLM, only
    whole blocks hit and a prompt's last token is always recomputed, so prompt i can
    hit at most ``(n_tokens[i] - 1) // block_size`` blocks. Returns tokens (int64).
    """
    B = bh.block_size
    total = len(bh.hashes)
    n = bh.n_prompts
    if total == 0:
        return np.zeros(n, dtype=np.int64)
    owner = np.repeat(np.arange(n), np.diff(bh.block_offsets))
    # first prompt that produced each hash
    order = np.argsort(bh.hashes, kind="stable")
    sh = bh.hashes[order]
    new_group = np.r_[True, sh[1:] != sh[:-1]]
    first_owner_sorted = np.maximum.accumulate(np.where(new_group, np.arange(total), 0))
    first_owner = np.empty(total, dtype=np.int64)
    first_owner[order] = owner[order][first_owner_sorted]
    cached = first_owner < owner
    k_in_prompt = np.arange(total) - bh.block_offsets[owner]
    cap = np.maximum(bh.n_tokens - 1, 0) // B
    usable = cached & (k_in_prompt < cap[owner])
    # chained hashes make cached blocks a prefix; counting them gives the hit length
    return np.bincount(owner, weights=usable, minlength=n).astype(np.int64) * B
