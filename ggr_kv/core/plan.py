"""Reorder plans: a new row order plus one field order per row.

JSON form::

    {"row_order": [int, ...], "field_orders": [[column, ...], ...]}

``row_order[i]`` is the ORIGINAL position of the row that runs i-th, and
``field_orders[i]`` is that row's field order (it belongs to the i-th row of the NEW
order). Internally field orders are an ``(n_rows, n_cols)`` array of column indices.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ggr_kv.core.table import Table

__all__ = ["PlanError", "ReorderPlan"]


class PlanError(ValueError):
    """A plan that is malformed or does not match its table."""


@dataclass(frozen=True, eq=False)
class ReorderPlan:
    """Row order (original positions) and per-row field orders (column indices).

    Attributes
    ----------
    columns : the table's columns, in the table's own order.
    row_order : ``(n,)`` int64, original row position of each run slot.
    field_perm : ``(n, m)`` int16/int32, column indices of each run slot's field order.
    """

    columns: tuple[str, ...]
    row_order: np.ndarray
    field_perm: np.ndarray

    def __post_init__(self) -> None:
        ro = np.asarray(self.row_order, dtype=np.int64)
        fp = np.asarray(self.field_perm)
        object.__setattr__(self, "row_order", ro)
        object.__setattr__(self, "field_perm", fp)
        n, m = len(ro), len(self.columns)
        if fp.shape != (n, m):
            raise PlanError(f"field orders have shape {fp.shape}, expected ({n}, {m})")
        if n and not np.array_equal(np.sort(ro), np.arange(n)):
            raise PlanError(f"row_order is not a permutation of 0..{n - 1}")
        if n and m:
            srt = np.sort(fp, axis=1)
            bad = np.flatnonzero((srt != np.arange(m)).any(axis=1))
            if len(bad):
                raise PlanError(
                    f"field order of run slot {int(bad[0])} is not a permutation of the columns"
                )

    # -- construction -------------------------------------------------------------
    @classmethod
    def identity(cls, table: Table) -> ReorderPlan:
        """The input order with columns as given (the ``original`` method)."""
        n, m = table.n_rows, table.n_cols
        perm = np.broadcast_to(np.arange(m, dtype=np.int16), (n, m)).copy()
        return cls(table.columns, np.arange(n, dtype=np.int64), perm)

    @property
    def n_rows(self) -> int:
        return len(self.row_order)

    # -- use ------------------------------------------------------------------------
    def check(self, table: Table) -> None:
        """Raise `PlanError` naming the mismatch if this plan does not fit ``table``."""
        if tuple(self.columns) != tuple(table.columns):
            missing = sorted(set(self.columns) - set(table.columns))
            extra = sorted(set(table.columns) - set(self.columns))
            raise PlanError(
                f"plan does not match {table.source}: plan columns missing from the table "
                f"{missing}, table columns missing from the plan {extra}"
                if (missing or extra)
                else f"plan does not match {table.source}: same columns in another order"
            )
        if self.n_rows != table.n_rows:
            raise PlanError(
                f"plan does not match {table.source}: plan has {self.n_rows} rows, "
                f"table has {table.n_rows}"
            )

    def ordered_codes(self, table: Table) -> np.ndarray:
        """``(n, m)`` cell codes in run order, each row in its field order."""
        self.check(table)
        return np.take_along_axis(table.codes[self.row_order], self.field_perm.astype(np.intp), 1)

    def ordered_lengths(self, table: Table) -> np.ndarray:
        """``(n, m)`` cell lengths (characters) in run order and field order."""
        self.check(table)
        return np.take_along_axis(
            table.lengths[self.row_order], self.field_perm.astype(np.intp), 1
        )

    def ordered_columns(self) -> np.ndarray:
        """``(n, m)`` column indices in run order (the field order of each slot)."""
        return self.field_perm

    def apply(self, table: Table) -> Iterator[list[tuple[str, str]]]:
        """Yield each row in run order as its ordered list of (field, value) pairs."""
        self.check(table)
        cols = self.columns
        for slot, r in enumerate(self.row_order):
            row = table.cells[r]
            yield [(cols[j], row[j]) for j in self.field_perm[slot]]

    def invert(self, results_in_run_order: Sequence[Any] | np.ndarray) -> list[Any]:
        """Map per-slot results (in run order) back to the ORIGINAL row order."""
        if len(results_in_run_order) != self.n_rows:
            raise PlanError(
                f"got {len(results_in_run_order)} results for a plan of {self.n_rows} rows"
            )
        out: list[Any] = [None] * self.n_rows
        for r, value in zip(self.row_order.tolist(), results_in_run_order):
            out[r] = value
        return out

    def inverse_order(self) -> np.ndarray:
        """``inv`` with ``inv[original_row] = run slot`` (vectorized inverse)."""
        inv = np.empty_like(self.row_order)
        inv[self.row_order] = np.arange(self.n_rows)
        return inv

    # -- JSON -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        cols = np.array(self.columns, dtype=object)
        return {
            "row_order": self.row_order.tolist(),
            "field_orders": cols[self.field_perm].tolist() if self.n_rows else [],
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialize to JSON text; also write it to ``path`` when given."""
        text = json.dumps(self.to_dict())
        if path is not None:
            from ggr_kv.core.atomic import write_atomic

            write_atomic(path, text)
        return text

    @classmethod
    def from_dict(cls, data: dict, table: Table | None = None) -> ReorderPlan:
        """Rebuild a plan; column names come from ``table`` (or the first field order)."""
        if not isinstance(data, dict) or "row_order" not in data or "field_orders" not in data:
            raise PlanError("plan JSON needs the keys 'row_order' and 'field_orders'")
        ro = np.asarray(data["row_order"])
        fo = data["field_orders"]
        if ro.ndim != 1 or (ro.size and ro.dtype.kind not in "iu"):
            raise PlanError(
                "plan row_order must be a list of integer row positions, got "
                f"{_preview(data['row_order'])}"
            )
        if not isinstance(fo, (list, tuple)) or not all(isinstance(r, (list, tuple)) for r in fo):
            raise PlanError(
                f"plan field_orders must be a list of lists of column names, got {_preview(fo)}"
            )
        if len(ro) != len(fo):
            raise PlanError(f"plan has {len(ro)} row_order entries but {len(fo)} field_orders")
        columns = tuple(table.columns) if table is not None else tuple(fo[0] if fo else ())
        where = table.source if table is not None else "the plan's first field order"
        index = {c: i for i, c in enumerate(columns)}
        try:
            perm = np.array([[index[c] for c in row] for row in fo], dtype=np.int32)
            ok = perm.shape == (len(fo), len(columns)) or not fo
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            _raise_field_order_error(fo, columns, where)
        if perm.size == 0:
            perm = perm.reshape(len(ro), len(columns))
        plan = cls(columns, ro.astype(np.int64), perm)
        if table is not None:
            plan.check(table)
        return plan

    @classmethod
    def from_json(cls, text_or_path: str | Path, table: Table | None = None) -> ReorderPlan:
        """Read a plan from JSON text or a ``.json`` file path."""
        is_text = not isinstance(text_or_path, Path) and str(text_or_path).lstrip()[:1] in "{["
        p = None if is_text else Path(text_or_path)
        if p is not None:
            if not p.exists():
                raise PlanError(f"{p}: plan file not found")
            if not p.is_file():
                raise PlanError(f"{p}: is not a file, expected a plan .json file")
            try:
                text = p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise PlanError(f"{p}: cannot read the plan: {e}") from None
        else:
            text = str(text_or_path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise PlanError(f"{p or 'plan'}: not valid JSON: {e}") from None
        try:
            return cls.from_dict(data, table)
        except PlanError as e:
            raise PlanError(f"{p}: {e}" if p is not None else str(e)) from None


def _preview(x: Any, limit: int = 60) -> str:
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _raise_field_order_error(fo: Sequence[Any], columns: tuple[str, ...], where: str) -> None:
    """Name the first run slot whose field order is not a permutation of ``columns``."""
    expected = set(columns)
    for slot, row in enumerate(fo):
        try:
            names = set(row)
        except TypeError:
            raise PlanError(
                f"field order of run slot {slot} holds unhashable names: {_preview(row)}"
            ) from None
        unknown = sorted(map(str, names - expected))
        missing = sorted(expected - names)
        if unknown or missing or len(row) != len(columns):
            problems = []
            if unknown:
                problems.append(f"names columns not in {where}: {unknown}")
            if missing:
                problems.append(f"lacks columns {missing}")
            if not unknown and not missing:
                problems.append("repeats a column")
            raise PlanError(f"field order of run slot {slot} " + "; ".join(problems))
    raise PlanError("plan field_orders are malformed")  # pragma: no cover - unreachable
