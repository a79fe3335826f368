"""Prompt token ids assembled from fragments: each distinct cell is tokenized once.

Prompts (`ggr_kv.core.prompts`, the one serializer) look like::

    {instruction}\\n\\nQuery: {query}\\n\\nData: {"k0": "v0", "k1": "v1"}\\n\\nAnswer:

Here they are cut into *pieces* (tokenized separately, then concatenated)::

    [BOS] | HEAD = '{instruction}\\n\\nQuery: {query}\\n\\nData:'
          | KEY  = ' {"k0":'   (first field; ' "k1":' for the others)
          | VAL  = ' "v0",'    (every field but the last; ' "v1"}\\n\\nAnswer:' for the last)

Why this is exact
-----------------
Byte-level BPE (Llama-3, Qwen2/3) first cuts text into chunks with a split regex
(`ggr_kv.core.tokenizer.LLAMA3_PATTERN`, ``QWEN3_PATTERN``) and never merges across
chunks, so a piece that starts and ends on a chunk boundary tokenizes alone exactly as in
the whole prompt. Every cut above sits between a punctuation run (``:`` or ``,``) and a
space: the only alternative of those patterns that matches punctuation,
`` ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*``, cannot run into the space, and the chunk after it
starts at the space. JSON strings hold no raw newline or unescaped quote, so a value
cannot move these cuts, and no special-token text can span a cut. (The naive cut at the
``", "`` separator is NOT a boundary: it splits as ``",`` | `` "``; the head's ``{"``
also merges with a key that starts with punctuation.)

A value whose text ends in a letter or digit is tokenized once as its *stem*
`` "v`` (the chunk before the closing quote ends there), and its two pieces are
``stem + T('",')`` and ``stem + T('"}\\n\\nAnswer:')``; other values are tokenized in
both forms. Values are deduplicated across columns (a value piece does not depend on its
field). ``tests/test_blocks_fragments.py`` checks equality with whole-prompt tokenization
over generated tables (hypothesis) for llama3 and qwen3.

Tokenizers whose pattern is not known (`ggr_kv.core.tokenizer.Tok.pattern` is None), or
a serializer whose layout no longer matches, fall back to whole-prompt tokenization
(`PromptPieces.exact` is False and `encode` calls `ggr_kv.core.prompts.encode_prompts`).
"""

from __future__ import annotations

import json
import operator
import os
import re
from dataclasses import dataclass
from functools import cached_property
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.prompts import (
    DEFAULT_INSTRUCTION,
    build_prompt,
    encode_prompts,
    prompt_head,
    resolve_tokenizer,
)
from ggr_kv.core.table import Table
from ggr_kv.core.tokenizer import KNOWN_PATTERNS, load_tokenizer

__all__ = ["PieceSet", "PromptPieces", "as_tokenizer"]

_ROWS_PER_CHUNK = 65536  # prompts materialized per numpy pass in `encode`
_json_str = json.encoder.encode_basestring  # json.dumps(str, ensure_ascii=False), in C


def as_tokenizer(tokenizer: Any) -> Any:
    """A tokenizer object from a name, a path (str or `os.PathLike`) or an object."""
    if isinstance(tokenizer, os.PathLike):
        return load_tokenizer(tokenizer)
    return resolve_tokenizer(tokenizer)


@dataclass(frozen=True)
class PieceSet:
    """Token sequences in CSR form: piece i is ``tokens[offsets[i]:offsets[i + 1]]``.

    Attributes
    ----------
    tokens : ``(total,)`` int32 token ids.
    offsets : ``(k + 1,)`` int64.
    """

    tokens: np.ndarray
    offsets: np.ndarray

    @cached_property
    def lengths(self) -> np.ndarray:
        """``(k,)`` int64 tokens per piece (computed once; read-only)."""
        out = np.diff(self.offsets)
        out.flags.writeable = False
        return out

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def of(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]


#: ``s[-1:]``. A text ends in a letter or a number (``\p{L}`` or ``\p{N}``) when
#: ``str.isalnum`` of it is True: ``isalpha`` = categories L*, and the numeric
#: characters (``isdecimal``/``isdigit``/``isnumeric``) are the N* ones.
_LAST_CHAR = operator.itemgetter(slice(-1, None))


def _layout(instruction: str, query: str) -> tuple[str, str] | None:
    """(HEAD text, tail text) when the serializer has the layout this module cuts, else None."""
    head = prompt_head(instruction, query)
    one = build_prompt(instruction, query, [("k", "v")])
    two = build_prompt(instruction, query, [("k", "v"), ("k2", "w")])
    body = '"k": "v"'
    if not (head.endswith("Data: {") and one.startswith(head + body)):
        return None
    tail = one[len(head) + len(body) :]
    if two != head + body + ', "k2": "w"' + tail or not tail.startswith("}"):
        return None
    return head[: -len(" {")], tail


class PromptPieces:
    """A table's prompts as token pieces, for one tokenizer, query and instruction.

    Build once (`PromptPieces.build`), then get exact token ids of any plan (`encode`),
    prompt lengths (`lengths`) or the pieces themselves (for `ggr_kv.reorder.blockscore`)
    without tokenizing a prompt again.

    Attributes
    ----------
    exact : True when prompts are assembled from pieces; False = the tokenizer is not
        known to split at the cuts, so `encode` tokenizes whole prompts.
    prefix : ``(h,)`` int32 BOS (when the tokenizer adds one) + HEAD tokens.
    keys : `PieceSet` of ``2 m`` key pieces: ``c`` = column c as the first field,
        ``m + c`` = column c after another field.
    values : `PieceSet` of ``2 V`` value pieces over the table's ``V`` distinct cell
        texts (all columns together): ``g`` = followed by another field, ``V + g`` =
        the last field (with the prompt's tail).
    value_id : per column, ``(n_distinct,)`` int64 global value id of each code.
    tokenizer_name : for metadata.
    seconds : wall time of tokenizing the pieces (s).
    """

    def __init__(
        self,
        table: Table,
        tokenizer: Any,
        query: str,
        instruction: str,
        *,
        exact: bool,
        prefix: np.ndarray,
        keys: PieceSet | None,
        values: PieceSet | None,
        value_id: tuple[np.ndarray, ...],
        seconds: float,
    ) -> None:
        self.table = table
        self.tokenizer = tokenizer
        self.query = query
        self.instruction = instruction
        self.exact = exact
        self.prefix = prefix
        self.keys = keys
        self.values = values
        self.value_id = value_id
        self.seconds = seconds
        self.tokenizer_name = str(getattr(tokenizer, "name", type(tokenizer).__name__))

    # -- construction ---------------------------------------------------------------
    @classmethod
    def build(
        cls,
        table: Table,
        tokenizer: Any,
        query: str = "",
        instruction: str = DEFAULT_INSTRUCTION,
        progress: bool = False,
    ) -> PromptPieces:
        """Tokenize the head, every column's key and every distinct cell once.

        Parameters
        ----------
        table : the table.
        tokenizer : a name for `ggr_kv.core.tokenizer.load_tokenizer` or a `Tok`.
        query, instruction : the shared prompt text.
        progress : show a tqdm bar over the tokenization batches.
        """
        import time

        t0 = time.perf_counter()
        tok = as_tokenizer(tokenizer)
        layout = _layout(instruction, query)
        if getattr(tok, "pattern", None) not in KNOWN_PATTERNS or layout is None:
            return cls(
                table,
                tok,
                query,
                instruction,
                exact=False,
                prefix=np.zeros(0, np.int32),
                keys=None,
                values=None,
                value_id=(),
                seconds=time.perf_counter() - t0,
            )
        head, tail = layout
        bos = getattr(tok, "bos_id", None)
        head_toks = tok.encode_batch([head], add_special_tokens=False)[0]
        prefix = np.r_[[bos] if bos is not None else [], head_toks].astype(np.int32)

        keys_json = [json.dumps(c, ensure_ascii=False) for c in table.columns]
        key_texts = [" {" + k + ":" for k in keys_json] + [" " + k + ":" for k in keys_json]
        kt, ko = tok.encode_batch(key_texts, add_special_tokens=False)
        keys = PieceSet(kt.astype(np.int32), ko)

        allv = np.concatenate([np.asarray(u, dtype=object) for u in table.uniques])
        gid, uniq = pd.factorize(allv)
        starts = np.cumsum([0] + [len(u) for u in table.uniques])
        value_id = tuple(
            gid[starts[j] : starts[j + 1]].astype(np.int64) for j in range(table.n_cols)
        )
        values = _tokenize_values(list(uniq), tok, tail, progress)
        return cls(
            table,
            tok,
            query,
            instruction,
            exact=True,
            prefix=prefix,
            keys=keys,
            values=values,
            value_id=value_id,
            seconds=time.perf_counter() - t0,
        )

    # -- per-row views ----------------------------------------------------------------
    @property
    def n_values(self) -> int:
        """V, the number of distinct cell texts."""
        return len(self.values) // 2 if self.values is not None else 0

    def row_pieces(self, rows: np.ndarray, colperm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Key and value piece ids of ``rows`` (original row ids) under ``colperm``.

        Returns
        -------
        kid, vid : ``(len(rows), m)`` int64 ids into `keys` and `values`.
        """
        m = self.table.n_cols
        colperm = np.asarray(colperm, dtype=np.intp)
        kid = colperm.astype(np.int64) + m
        kid[:, 0] -= m
        codes = np.take_along_axis(self.table.codes[rows], colperm, 1)
        vid = np.empty(codes.shape, dtype=np.int64)
        for c in range(m):
            sel = colperm == c
            if sel.any():
                vid[sel] = self.value_id[c][codes[sel]]
        vid[:, m - 1] += self.n_values
        return kid, vid

    def piece_lengths(self, kid: np.ndarray, vid: np.ndarray) -> np.ndarray:
        """``(r, 2m)`` int64 tokens of each row's pieces: key 0, value 0, key 1, ..."""
        out = np.empty((kid.shape[0], 2 * kid.shape[1]), dtype=np.int64)
        out[:, 0::2] = self.keys.lengths[kid]
        out[:, 1::2] = self.values.lengths[vid]
        return out

    def lengths(self, plan: ReorderPlan) -> np.ndarray:
        """``(n,)`` int64 prompt lengths in tokens (BOS included), in run order."""
        if not self.exact:
            return np.diff(self.encode(plan)[1])
        kid, vid = self.row_pieces(plan.row_order, plan.field_perm)
        return len(self.prefix) + self.piece_lengths(kid, vid).sum(axis=1)

    # -- token ids -------------------------------------------------------------------
    def encode(self, plan: ReorderPlan, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Exact token ids of every prompt of ``plan`` in run order, CSR ``(tokens, offsets)``.

        Equal to `ggr_kv.core.prompts.encode_prompts` (tested), in int64.
        """
        plan.check(self.table)
        if not self.exact:
            return encode_prompts(self.table, plan, self.tokenizer, self.query, self.instruction)
        n, m = plan.n_rows, self.table.n_cols
        kid, vid = self.row_pieces(plan.row_order, plan.field_perm)
        lens = self.piece_lengths(kid, vid)
        p = len(self.prefix)
        plen = p + lens.sum(axis=1)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(plen, out=offsets[1:])
        out = np.empty(int(offsets[-1]), dtype=np.int64)
        # one pool: prefix, then keys, then values; piece starts index into it
        pool = np.concatenate([self.prefix, self.keys.tokens, self.values.tokens])
        k0, v0 = p, p + len(self.keys.tokens)
        bar = _bar(progress, n, "assemble prompts")
        for a in range(0, n, _ROWS_PER_CHUNK):
            b = min(n, a + _ROWS_PER_CHUNK)
            r = b - a
            starts = np.empty((r, 2 * m + 1), dtype=np.int64)
            ln = np.empty((r, 2 * m + 1), dtype=np.int64)
            starts[:, 0], ln[:, 0] = 0, p
            starts[:, 1::2] = k0 + self.keys.offsets[kid[a:b]]
            starts[:, 2::2] = v0 + self.values.offsets[vid[a:b]]
            ln[:, 1:] = lens[a:b]
            ln, starts = ln.ravel(), starts.ravel()
            dst0 = offsets[a]
            cum = np.zeros(len(ln), dtype=np.int64)
            np.cumsum(ln[:-1], out=cum[1:])
            src = np.repeat(starts - cum, ln) + np.arange(int(cum[-1] + ln[-1]))
            out[dst0 : offsets[b]] = pool[src]
            if bar is not None:
                bar.update(r)
        if bar is not None:
            bar.close()
        return out, offsets


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="row")


#: the characters ``json.dumps(str, ensure_ascii=False)`` escapes; a text without any is
#: written as ``'"' + text + '"'`` (checked over every code point in the tests). In UTF-8
#: these are single bytes that no other character's bytes contain.
_JSON_ESCAPED = re.compile(r'[\x00-\x1f"\\]')
_JSON_ESCAPED_BYTES = bytes(range(0x20)) + b'"\\'
_OPEN_CHUNK = 1 << 16  # texts joined per scan


def _opened(uniq: list[str]) -> list[str]:
    """``' ' + json.dumps(v, ensure_ascii=False)[:-1]`` of every text (its JSON string without
    the closing quote, after a space): ``' "' + v`` where nothing needs escaping, the JSON
    encoder for the others. Each chunk of texts is joined and scanned once in C
    (`bytes.translate`); only a chunk holding an escaped character is searched for it."""
    out = list(map(operator.add, repeat(' "'), uniq))
    for a in range(0, len(uniq), _OPEN_CHUNK):
        part = uniq[a : a + _OPEN_CHUNK]
        joined = "".join(part)
        raw = joined.encode("utf-8", "surrogatepass")
        if len(raw.translate(None, _JSON_ESCAPED_BYTES)) == len(raw):
            continue
        hits = [mt.start() for mt in _JSON_ESCAPED.finditer(joined)]
        ends = np.cumsum(np.fromiter(map(len, part), dtype=np.int64, count=len(part)))
        for i in np.unique(np.searchsorted(ends, hits, side="right")).tolist():
            out[a + i] = " " + _json_str(part[i])[:-1]
    return out


def _scatter(dst: np.ndarray, starts: np.ndarray, src: tuple[np.ndarray, np.ndarray]) -> None:
    """Write CSR pieces ``src`` into ``dst`` at ``starts`` (bounded temporaries)."""
    toks, offs = src
    step = 1 << 18
    for a in range(0, len(starts), step):
        b = min(len(starts), a + step)
        lo, hi = int(offs[a]), int(offs[b])
        lens = np.diff(offs[a : b + 1])
        dst[np.repeat(starts[a:b] - offs[a:b], lens) + np.arange(lo, hi)] = toks[lo:hi]


def _tokenize_values(uniq: list[str], tok: Any, tail: str, progress: bool) -> PieceSet:
    """Value pieces: ``g`` = ``' "v",'``, ``V + g`` = ``' "v"' + tail``, for every text."""
    V = len(uniq)
    # does each text end in a letter or number: mapped in C, no Python frame per text
    stem_ok = np.fromiter(map(str.isalnum, map(_LAST_CHAR, uniq)), dtype=bool, count=V)
    # ' ' + what json.dumps(v, ensure_ascii=False) returns, without its closing quote
    opened = _opened(uniq)
    comma = tok.encode_batch(['",'], add_special_tokens=False)[0].astype(np.int32)
    close = tok.encode_batch(['"' + tail], add_special_tokens=False)[0].astype(np.int32)
    idx_s, idx_f = np.flatnonzero(stem_ok), np.flatnonzero(~stem_ok)
    # the texts, built by C-level maps (no Python frame per text)
    stems = _encode_many(list(map(opened.__getitem__, idx_s.tolist())), tok, progress,
                         "tokenize cells")  # fmt: skip
    full = list(map(opened.__getitem__, idx_f.tolist()))
    del opened
    full_mid = _encode_many(list(map(operator.add, full, repeat('",'))), tok, False, "")
    full_last = _encode_many(list(map(operator.add, full, repeat('"' + tail))), tok, False, "")
    del full
    stem_len = np.diff(stems[1])
    lens = np.empty(2 * V, dtype=np.int64)
    lens[idx_s] = stem_len + len(comma)
    lens[V + idx_s] = stem_len + len(close)
    lens[idx_f] = np.diff(full_mid[1])
    lens[V + idx_f] = np.diff(full_last[1])
    offsets = np.zeros(2 * V + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    pool = np.empty(int(offsets[-1]), dtype=np.int32)
    for starts, suffix in ((offsets[idx_s], comma), (offsets[V + idx_s], close)):
        _scatter(pool, starts, stems)
        for i, t in enumerate(suffix):
            pool[starts + stem_len + i] = t
    _scatter(pool, offsets[idx_f], full_mid)
    _scatter(pool, offsets[V + idx_f], full_last)
    return PieceSet(pool, offsets)


def _encode_many(
    texts: list[str], tok: Any, progress: bool, desc: str
) -> tuple[np.ndarray, np.ndarray]:
    """``tok.encode_batch`` without special tokens, in batches with an optional bar."""
    if not texts:
        return np.zeros(0, dtype=np.int32), np.zeros(1, dtype=np.int64)
    step = 200_000
    if len(texts) <= step:
        t, o = tok.encode_batch(texts, add_special_tokens=False)
        return t.astype(np.int32), o
    bar = _bar(progress, len(texts), desc)
    parts = []
    for a in range(0, len(texts), step):
        t, o = tok.encode_batch(texts[a : a + step], add_special_tokens=False)
        parts.append((t.astype(np.int32), o))
        if bar is not None:
            bar.update(min(step, len(texts) - a))
    if bar is not None:
        bar.close()
    toks = np.concatenate([p[0] for p in parts])
    lens = np.concatenate([np.diff(p[1]) for p in parts])
    offs = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offs[1:])
    return toks, offs
