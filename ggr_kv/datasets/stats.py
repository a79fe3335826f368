"""The statistics that say whether a table has the structure of the GGR paper's tables.

One function, `table_stats`, measures a real sample and a generated table the same way:

- **rows per key**: how many rows share a key (a movie, a product, a post), as the mean
  over keys and as the *row-weighted* mean ``sum(s_k^2) / n`` (the size of the group a
  random row sits in; this is what prefix caching can reuse);
- **keys among 100 random rows**: the one group statistic a 100-row random sample of a
  big table shows directly (the paper's ``*_sampled_labelled.csv`` files are such
  samples), so generated tables are compared with the real ones on it;
- **tokens** (real tokenizer, Llama-3 by default): per field, per row of cells, and per
  prompt as `ggr_kv.core.prompts` builds it (instruction + query + the row's JSON);
- **repeated-value share**: the fraction of cell tokens whose value occurs on another row
  (in any column), over the whole table and in 100-row samples.

For a table that is itself a random sample of ``full_rows`` rows (the labelled files),
the row-weighted group size at full scale is estimated from pairs of sample rows that share
a key: ``1 + pairs / C(m, 2) * (full_rows - 1)`` (unbiased for sampling without
replacement).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.prompts import DEFAULT_INSTRUCTION, build_prompts
from ggr_kv.core.table import Table
from ggr_kv.core.tokenizer import load_tokenizer

__all__ = ["SAMPLE_ROWS", "TableStats", "group_sizes", "keys_in_samples", "table_stats"]

#: rows of the paper's labelled samples, and of the samples drawn to compare with them
SAMPLE_ROWS = 100


@dataclass(frozen=True)
class TableStats:
    """What `table_stats` measured on one table.

    Attributes
    ----------
    name : table name.
    rows, fields : shape.
    key : the column whose value defines a group (``None``: no key, e.g. ``rag``).
    keys : distinct key values.
    rows_per_key : mean rows per key value.
    group_rows : row-weighted mean group size ``sum(s^2)/n``, rows; estimated at
        ``full_rows`` for a sample (see the module notes).
    keys_in_100 : distinct keys among `SAMPLE_ROWS` random rows (mean over draws; exact
        for a table of that many rows).
    keys_in_100_lo, keys_in_100_hi : 5th and 95th percentiles over the draws.
    cell_tokens : mean tokens of a row's cells (no field names, no special tokens).
    prompt_tokens : mean tokens of a prompt (instruction, query, JSON row, BOS).
    field_tokens : column -> mean tokens of its cells.
    repeated_share : 0-1, cell tokens whose value occurs on another row of the table.
    repeated_share_100 : the same within `SAMPLE_ROWS`-row random samples (mean).
    tokenizer : tokenizer name.
    full_rows : rows of the table this one samples, or ``None``.
    """

    name: str
    rows: int
    fields: int
    key: str | None
    keys: int | None
    rows_per_key: float | None
    group_rows: float | None
    keys_in_100: float | None
    keys_in_100_lo: float | None
    keys_in_100_hi: float | None
    cell_tokens: float
    prompt_tokens: float
    field_tokens: dict[str, float] = field(default_factory=dict)
    repeated_share: float = 0.0
    repeated_share_100: float = 0.0
    tokenizer: str = "llama3"
    full_rows: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, floats rounded to 3 decimals (stable in committed files)."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = round(v, 3)
        d["field_tokens"] = {c: round(v, 3) for c, v in self.field_tokens.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TableStats:
        return cls(**d)


def group_sizes(key: pd.Series) -> np.ndarray:
    """Rows per distinct value of ``key`` (missing values form one group), int64."""
    codes, _ = pd.factorize(key, use_na_sentinel=False)
    return np.bincount(codes).astype(np.int64)


def keys_in_samples(
    key: pd.Series, m: int = SAMPLE_ROWS, draws: int = 400, seed: int = 0
) -> np.ndarray:
    """Distinct keys among ``m`` rows drawn without replacement, once per draw (float64)."""
    codes, _ = pd.factorize(key, use_na_sentinel=False)
    if len(codes) <= m:
        return np.array([float(len(np.unique(codes)))])
    rng = np.random.default_rng(seed)
    picks = np.stack([rng.choice(len(codes), m, replace=False) for _ in range(draws)])
    vals = np.sort(codes[picks], axis=1)
    return (1 + (np.diff(vals, axis=1) != 0).sum(axis=1)).astype(np.float64)


def _estimated_group_rows(sizes: np.ndarray, full_rows: int) -> float:
    """Row-weighted group size of the full table, from a random sample's key counts."""
    m = int(sizes.sum())
    pairs = float((sizes * (sizes - 1) // 2).sum())
    return 1.0 + pairs / (m * (m - 1) / 2) * (full_rows - 1)


def _cell_tokens(frame: pd.DataFrame, tok: Any) -> tuple[np.ndarray, dict[str, float]]:
    """``(n, m)`` tokens per cell (each distinct value encoded once) and per-column means."""
    out = np.zeros(frame.shape, dtype=np.int64)
    for j, c in enumerate(frame.columns):
        codes, uniques = pd.factorize(frame[c].fillna("").astype(str))
        counts = tok.count(list(uniques), add_special_tokens=False)
        out[:, j] = counts[codes]
    return out, {str(c): float(out[:, j].mean()) for j, c in enumerate(frame.columns)}


def _repeated_mask(frame: pd.DataFrame) -> np.ndarray:
    """``(n, m)`` bool: the cell's value (any column) occurs on another row."""
    n, m = frame.shape
    values = frame.fillna("").astype(str).to_numpy().ravel()
    codes, _ = pd.factorize(values)
    rows = np.repeat(np.arange(n), m)
    pairs = np.unique(np.stack([codes, rows], axis=1), axis=0)  # a value once per row
    rows_with = np.bincount(pairs[:, 0], minlength=codes.max() + 1 if len(codes) else 0)
    return (rows_with[codes] > 1).reshape(n, m)


def _repeated_share_100(frame: pd.DataFrame, cells: np.ndarray, draws: int, seed: int) -> float:
    n = len(frame)
    if n <= SAMPLE_ROWS:
        rep = _repeated_mask(frame)
        return float((cells * rep).sum() / max(cells.sum(), 1))
    rng = np.random.default_rng(seed + 1)
    shares = []
    for _ in range(draws):
        idx = np.sort(rng.choice(n, SAMPLE_ROWS, replace=False))
        sub = frame.iloc[idx]
        c = cells[idx]
        shares.append((c * _repeated_mask(sub)).sum() / max(c.sum(), 1))
    return float(np.mean(shares))


def _prompt_tokens(frame: pd.DataFrame, tok: Any, query: str, rows: int, seed: int) -> float:
    """Mean prompt tokens over up to ``rows`` random rows, in their original field order."""
    n = len(frame)
    idx = np.arange(n) if n <= rows else np.sort(np.random.default_rng(seed).choice(n, rows, False))
    sub = Table.from_frame(frame.iloc[idx].fillna("").astype(str).reset_index(drop=True))
    texts = build_prompts(sub, ReorderPlan.identity(sub), query, DEFAULT_INSTRUCTION)
    return float(tok.count(texts).mean())


def table_stats(
    frame: pd.DataFrame,
    name: str,
    key: str | None,
    *,
    query: str = "",
    tokenizer: Any = "llama3",
    full_rows: int | None = None,
    draws: int = 200,
    prompt_rows: int = 1000,
    seed: int = 0,
) -> TableStats:
    """Measure ``frame`` (see the module notes; the frame is not modified).

    Parameters
    ----------
    key : the group column (one of an FD group), or ``None``.
    query : the query text inside each prompt (the dataset's filter query, say).
    tokenizer : a name for `ggr_kv.core.tokenizer.load_tokenizer` or a tokenizer object.
    full_rows : rows of the full table when ``frame`` is a random sample of it.
    draws : random 100-row samples drawn for the sample statistics.
    prompt_rows : prompts built and tokenized (a random subset of rows when larger).
    seed : seed of every random draw.
    """
    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    if key is not None and key not in frame.columns:
        raise ValueError(f"{name}: no key column {key!r}; columns: {list(frame.columns)}")
    cells, per_field = _cell_tokens(frame, tok)
    rep = _repeated_mask(frame)
    stats: dict[str, Any] = {
        k: None
        for k in (
            "keys",
            "rows_per_key",
            "group_rows",
            "keys_in_100",
            "keys_in_100_lo",
            "keys_in_100_hi",
        )
    }
    if key is not None:
        sizes = group_sizes(frame[key])
        n = int(sizes.sum())
        weighted = float((sizes.astype(np.float64) ** 2).sum() / n)
        k100 = keys_in_samples(frame[key], draws=draws, seed=seed)
        stats.update(
            keys=len(sizes),
            rows_per_key=float(n / len(sizes)),
            group_rows=_estimated_group_rows(sizes, full_rows) if full_rows else weighted,
            keys_in_100=float(k100.mean()),
            keys_in_100_lo=float(np.percentile(k100, 5)),
            keys_in_100_hi=float(np.percentile(k100, 95)),
        )
    return TableStats(
        name=name,
        rows=len(frame),
        fields=frame.shape[1],
        key=key,
        **stats,
        cell_tokens=float(cells.sum(axis=1).mean()),
        prompt_tokens=_prompt_tokens(frame, tok, query, prompt_rows, seed),
        field_tokens=per_field,
        repeated_share=float((cells * rep).sum() / max(cells.sum(), 1)),
        repeated_share_100=_repeated_share_100(frame, cells, min(draws, 100), seed),
        tokenizer=str(getattr(tok, "name", tokenizer)),
        full_rows=full_rows,
    )
