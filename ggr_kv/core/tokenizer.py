"""Real tokenizers, offline: quicktok's bundled vocabularies, a ``tokenizer.json``, or HF.

``load_tokenizer("llama3")`` uses the Llama-3 vocabulary that the ``quicktok-v1``
package ships (no download). A model folder (``ggr_kv.engine.models.make_model_dir``) holds a
``tokenizer.json`` built from the same ranks, which is what vLLM loads; the two give the
same ids (tested). Token counts are always real, never characters / 4.

`Tok.pattern` is the tokenizer's pre-tokenizer split pattern when it is one this project
knows (`LLAMA3_PATTERN`, `QWEN3_PATTERN`) and nothing else runs before it (no
normalizer). Byte-level BPE never merges across the chunks that pattern cuts, so text
pieces that start and end on chunk boundaries can be tokenized once and concatenated:
`ggr_kv.reorder.fragments` builds every prompt's token ids that way. ``None`` means
"unknown": callers then tokenize whole prompts.

Speed: quicktok's special-token scan costs ~14x its plain encoding, so texts without a
``<`` (every special token of the bundled vocabularies has one) skip it; the ids are the
same.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "KNOWN_PATTERNS",
    "LLAMA3_PATTERN",
    "QUICKTOK_ENCODINGS",
    "QWEN3_PATTERN",
    "Tok",
    "load_tokenizer",
    "pattern_of_tokenizer_json",
]

#: encodings bundled with quicktok-v1 -> (BOS token prepended by the model's HF tokenizer)
QUICKTOK_ENCODINGS: dict[str, str | None] = {
    "llama3": "<|begin_of_text|>",
    "qwen3": None,
}

#: Llama-3's pre-tokenizer split pattern (tiktoken cl100k-style)
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
#: Qwen2/2.5/3's pre-tokenizer split pattern (single digits instead of groups of three)
QWEN3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
#: split patterns whose chunk boundaries `ggr_kv.reorder.fragments` relies on
KNOWN_PATTERNS: tuple[str, ...] = (LLAMA3_PATTERN, QWEN3_PATTERN)
#: quicktok encoding -> its split pattern
_QUICKTOK_PATTERNS = {"llama3": LLAMA3_PATTERN, "qwen3": QWEN3_PATTERN}


@dataclass
class Tok:
    """A tokenizer with a batch API in CSR form.

    ``encode_batch(texts)`` returns ``(tokens, offsets)`` as int64 arrays, prompt i being
    ``tokens[offsets[i]:offsets[i + 1]]``; with ``add_special_tokens=True`` (default) the
    BOS token is prepended where the model's tokenizer does so, as vLLM does.

    ``pattern`` is the pre-tokenizer split pattern when it is one of `KNOWN_PATTERNS`
    and no normalizer runs before it, else None (see the module docstring).
    """

    name: str
    bos_id: int | None
    _encode_batch: Any = field(repr=False)
    _decode: Any = field(repr=False)
    pattern: str | None = None

    def encode_batch(
        self, texts: list[str], add_special_tokens: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        toks, offs = self._encode_batch(list(texts))
        toks = np.asarray(toks, dtype=np.int64)
        offs = np.asarray(offs, dtype=np.int64)
        if add_special_tokens and self.bos_id is not None and len(offs) > 1:
            n = len(offs) - 1
            out = np.empty(len(toks) + n, dtype=np.int64)
            new_offs = offs + np.arange(n + 1)
            out[new_offs[:-1]] = self.bos_id
            mask = np.ones(len(out), dtype=bool)
            mask[new_offs[:-1]] = False
            out[mask] = toks
            return out, new_offs
        return toks, offs

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        toks, _ = self.encode_batch([text], add_special_tokens)
        return toks.tolist()

    def count(self, texts: list[str], add_special_tokens: bool = True) -> np.ndarray:
        """Tokens per text (int64)."""
        return np.diff(self.encode_batch(texts, add_special_tokens)[1])

    def decode(self, ids: list[int]) -> str:
        return self._decode(list(ids))


def _quicktok(name: str) -> Tok:
    import quicktok

    enc = quicktok.get_encoding(name)
    bos = QUICKTOK_ENCODINGS[name]
    bos_id = enc.encode_single_token(bos) if bos else None

    def batch(texts: list[str]):
        # special-token text in a cell (e.g. "<|eot_id|>") becomes the special id, as in
        # the HF tokenizer.json that vLLM loads; only texts with a "<" can hold one, and
        # the special-token scan is slow, so the others skip it
        special = np.fromiter(
            map(operator.contains, texts, itertools.repeat("<")), dtype=bool, count=len(texts)
        )
        if not special.any():
            return enc.encode_batch(texts, 0, False)
        if special.all():
            return enc.encode_batch(texts, 0, True)
        idx_s, idx_p = np.flatnonzero(special), np.flatnonzero(~special)
        parts = [
            enc.encode_batch([texts[i] for i in idx_p], 0, False),
            enc.encode_batch([texts[i] for i in idx_s], 0, True),
        ]
        return _merge_csr(parts, [idx_p, idx_s], len(texts))

    return Tok(name, bos_id, batch, enc.decode, _QUICKTOK_PATTERNS.get(name))


def _merge_csr(
    parts: list[tuple[np.ndarray, np.ndarray]], where: list[np.ndarray], n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Interleave CSR batches back into one batch: part k holds texts ``where[k]``."""
    lens = np.zeros(n, dtype=np.int64)
    for (_, offs), idx in zip(parts, where):
        lens[idx] = np.diff(np.asarray(offs, dtype=np.int64))
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    tokens = np.empty(int(offsets[-1]), dtype=np.int64)
    for (toks, offs), idx in zip(parts, where):
        offs = np.asarray(offs, dtype=np.int64)
        k = np.diff(offs)
        dest = np.repeat(offsets[idx] - offs[:-1], k) + np.arange(int(offs[-1]))
        tokens[dest] = toks
    return tokens, offsets


def pattern_of_tokenizer_json(spec: dict) -> str | None:
    """The split pattern of a ``tokenizer.json`` (parsed) when fragments are safe with it.

    Returns one of `KNOWN_PATTERNS` when the tokenizer has no normalizer and its
    pre-tokenizer is exactly ``Split(pattern, Isolated)`` then ``ByteLevel`` without its
    own regex (the layout of Llama-3 and Qwen2/3 tokenizers), else None.
    """
    if spec.get("normalizer") is not None:
        return None
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    if not steps or len(steps) != 2:
        return None
    split, byte_level = steps
    if split.get("type") != "Split" or byte_level.get("type") != "ByteLevel":
        return None
    if byte_level.get("use_regex", True) or byte_level.get("add_prefix_space", False):
        return None
    if split.get("behavior") != "Isolated" or split.get("invert", False):
        return None
    pat = (split.get("pattern") or {}).get("Regex")
    return pat if pat in KNOWN_PATTERNS else None


def _tokenizers_json(path: Path) -> Tok:
    """The `Tok` of a ``tokenizer.json``, loaded once per file version (a load takes ~1-2 s
    for Llama-3's 9 MB file; a report loads it for every run)."""
    st = path.stat()
    tok = _tokenizers_json_of(str(path.resolve()), st.st_mtime_ns, st.st_size)
    return dataclasses.replace(tok, name=str(path))


@functools.lru_cache(maxsize=8)
def _tokenizers_json_of(path: str, _mtime_ns: int, _size: int) -> Tok:
    from tokenizers import Tokenizer

    tk = Tokenizer.from_file(str(path))
    try:
        pattern = pattern_of_tokenizer_json(json.loads(tk.to_str()))
    except (ValueError, AttributeError):  # pragma: no cover - unusual serializations
        pattern = None
    tk.no_padding()
    tk.no_truncation()
    bos_id = None
    probe = tk.encode("a", add_special_tokens=True).ids
    plain = tk.encode("a", add_special_tokens=False).ids
    if len(probe) == len(plain) + 1 and probe[1:] == plain:
        bos_id = probe[0]

    def batch(texts: list[str]):
        encs = tk.encode_batch_fast(texts, add_special_tokens=False)
        lens = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
        offs = np.zeros(len(encs) + 1, dtype=np.int64)
        np.cumsum(lens, out=offs[1:])
        toks = np.fromiter((i for e in encs for i in e.ids), dtype=np.int64, count=int(offs[-1]))
        return toks, offs

    return Tok(path, bos_id, batch, lambda ids: tk.decode(ids), pattern)


def load_tokenizer(name_or_path: str | Path) -> Tok:
    """Load a tokenizer by quicktok encoding name, model folder, tokenizer.json, or HF id.

    Parameters
    ----------
    name_or_path : ``"llama3"`` / ``"qwen3"`` (bundled with quicktok-v1), a folder holding
        ``tokenizer.json`` (e.g. one made by ``ggr_kv.engine.models``), a ``tokenizer.json``
        path, or a Hugging Face model id available in the local HF cache.
    """
    s = str(name_or_path)
    if s in QUICKTOK_ENCODINGS:
        return _quicktok(s)
    p = Path(s)
    if p.is_dir() and (p / "tokenizer.json").exists():
        return _tokenizers_json(p / "tokenizer.json")
    if p.is_file() and p.suffix == ".json":
        return _tokenizers_json(p)
    if p.exists():
        raise ValueError(f"{p}: no tokenizer.json there")
    try:  # a Hugging Face id, from the local cache only (no downloads at run time)
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(s, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - report what was tried
        raise ValueError(
            f"unknown tokenizer {s!r}: not one of {sorted(QUICKTOK_ENCODINGS)}, not a folder "
            f"with tokenizer.json, and not in the local Hugging Face cache ({e})"
        ) from None
    bos = hf.bos_token_id if getattr(hf, "add_bos_token", False) else None
    pattern = None
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is not None:
        try:
            pattern = pattern_of_tokenizer_json(json.loads(backend.to_str()))
        except (ValueError, AttributeError):  # pragma: no cover
            pattern = None

    def batch(texts: list[str]):
        ids = hf(texts, add_special_tokens=False)["input_ids"]
        lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        offs = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lens, out=offs[1:])
        return np.fromiter((i for x in ids for i in x), dtype=np.int64), offs

    return Tok(s, bos, batch, hf.decode, pattern)
