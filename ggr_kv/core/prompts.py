"""The one prompt serializer, shared by the metrics, the simulator and the inference runner.

A prompt is the instruction, then the query, then the row as a JSON object whose keys
appear in the row's planned field order (never ``sort_keys``)::

    {instruction}

    Query: {query}

    Data: {"movietitle": "Up", "movieinfo": "...", "reviewcontent": "..."}

    Answer:

The instruction and query are the same for every row, so they form a shared prefix;
the planned field order decides how much of the JSON object is shared as well.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.table import Table
from ggr_kv.core.tokenizer import load_tokenizer

__all__ = [
    "DEFAULT_INSTRUCTION",
    "PROMPT_TEMPLATE",
    "build_prompt",
    "build_prompts",
    "encode_prompts",
    "prompt_head",
    "prompt_parts",
    "resolve_tokenizer",
    "serialize_row",
]

DEFAULT_INSTRUCTION = (
    "You are a data analyst. Use the provided JSON data to answer the user query. "
    "Answer briefly and only from the data."
)
PROMPT_TEMPLATE = "{instruction}\n\nQuery: {query}\n\nData: {{{row}}}\n\nAnswer:"
_TAIL = "}\n\nAnswer:"
_SEP = ", "


def _json_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def serialize_row(pairs: Iterable[tuple[str, str]]) -> str:
    """Serialize ordered (field, value) pairs as a JSON object, keeping their order."""
    return "{" + _SEP.join(f"{_json_str(k)}: {_json_str(v)}" for k, v in pairs) + "}"


def build_prompt(instruction: str, query: str, pairs: Iterable[tuple[str, str]]) -> str:
    """One prompt: instruction, query, then the row's JSON in the given field order."""
    return PROMPT_TEMPLATE.format(
        instruction=instruction, query=query, row=serialize_row(pairs)[1:-1]
    )


def prompt_head(instruction: str, query: str) -> str:
    """The text every prompt starts with, up to and including the row's opening brace."""
    return f"{instruction}\n\nQuery: {query}\n\nData: {{"


def prompt_parts(table: Table, plan: ReorderPlan) -> np.ndarray:
    """``(n, m)`` object array of ``"field": "value"`` fragments in run and field order.

    Each fragment is JSON-encoded once per distinct (column, value), then gathered with
    integer codes, so a 1M-row table costs one encode per distinct cell.
    """
    plan.check(table)
    n, m = table.n_rows, table.n_cols
    frags = np.empty((n, m), dtype=object)
    ordered_cols = plan.field_perm
    ordered_rows = plan.row_order
    for j, col in enumerate(table.columns):
        key = _json_str(col) + ": "
        enc = np.array([key + _json_str(u) for u in table.uniques[j]], dtype=object)
        frags[:, j] = enc[table.codes[ordered_rows, j]]
    return np.take_along_axis(frags, ordered_cols.astype(np.intp), axis=1)


def build_prompts(
    table: Table,
    plan: ReorderPlan,
    query: str,
    instruction: str = DEFAULT_INSTRUCTION,
) -> list[str]:
    """All prompts in run order (``plan.row_order``), built with the shared serializer."""
    parts = prompt_parts(table, plan)
    head = prompt_head(instruction, query)
    rows = parts[:, 0].copy()
    for j in range(1, parts.shape[1]):
        rows = rows + _SEP + parts[:, j]  # object-array add: one C loop per column
    return (head + rows + _TAIL).tolist()


def resolve_tokenizer(tokenizer: Any) -> Any:
    if isinstance(tokenizer, str):
        return load_tokenizer(tokenizer)
    if not hasattr(tokenizer, "encode_batch"):
        raise TypeError(
            f"tokenizer must be a name or have .encode_batch(texts), got {type(tokenizer)}"
        )
    return tokenizer


def encode_prompts(
    table: Table,
    plan: ReorderPlan,
    tokenizer: Any,
    query: str = "",
    instruction: str = DEFAULT_INSTRUCTION,
    *,
    texts: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Tokens of all prompts in run order, CSR ``(tokens, offsets)``.

    ``tokenizer`` is a name for `ggr_kv.core.tokenizer.load_tokenizer` or an object with
    ``.encode_batch(texts) -> (tokens, offsets)``; ``texts`` are the already built prompts.
    """
    tok = resolve_tokenizer(tokenizer)
    if texts is None:
        texts = build_prompts(table, plan, query, instruction)
    tokens, offsets = tok.encode_batch(texts)
    return np.asarray(tokens), np.asarray(offsets, dtype=np.int64)
