"""Dataset names a user types for generated tables: ``FAMILY@ROWS[,seed=N]``.

- ``movies@15000`` (also ``movies@15k``, ``movies@15_000``): the movies family at 15,000
  rows, default seed;
- ``movies@paper``: the family at the paper's row count (`Family.preset_rows`);
- ``movies@15000,seed=7``: another seed (another table of the same structure);
- a family without a shipped table (``shortgroups``) also answers to its bare name, which
  means ``shortgroups@paper``.

Bundled names (``movies``) and file paths are handled by `ggr_kv.datasets.catalog`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ggr_kv.datasets.families import FAMILIES, SEED

__all__ = ["MAX_ROWS", "MIN_ROWS", "DatasetError", "GeneratedName", "parse_name", "valid_names"]

MIN_ROWS = 10
MAX_ROWS = 200_000
_NAME = re.compile(
    r"^(?P<family>[a-z_]+)(?:@(?P<size>paper|[0-9][0-9_]*k?))?(?:,seed=(?P<seed>[0-9]+))?$"
)


class DatasetError(ValueError):
    """Unknown dataset name, missing file, bad sample request or FD group that does not hold."""


@dataclass(frozen=True)
class GeneratedName:
    """A parsed generated-table name.

    Attributes
    ----------
    text : the name as normalized (lowercase, sizes as digits, ``paper`` kept).
    family : key of `FAMILIES`.
    rows : row count.
    seed : generator seed.
    """

    text: str
    family: str
    rows: int
    seed: int


def valid_names(bundled: list[str] | tuple[str, ...] = ()) -> str:
    """One line listing what a dataset name can be (for error messages)."""
    presets = ", ".join(f"{f}@paper ({FAMILIES[f].preset_rows} rows)" for f in FAMILIES)
    return (
        f"bundled: {list(bundled)}; generated at any size: "
        f"{', '.join(f + '@ROWS' for f in FAMILIES)} (ROWS {MIN_ROWS}-{MAX_ROWS}, e.g. "
        f"movies@15000 or movies@15k, optional ',seed=N'); presets: {presets}; "
        "or the path of a .csv or .parquet file"
    )


def _rows(size: str, text: str) -> int:
    digits = size.replace("_", "")
    rows = int(digits[:-1]) * 1000 if digits.endswith("k") else int(digits)
    if not MIN_ROWS <= rows <= MAX_ROWS:
        raise DatasetError(
            f"dataset {text!r}: {rows} rows is outside {MIN_ROWS}-{MAX_ROWS}; "
            "pick a row count in that range"
        )
    return rows


def parse_name(text: str, bundled: tuple[str, ...] = ()) -> GeneratedName | None:
    """The generated table that ``text`` names, or ``None`` if it names no family.

    A bundled name (in ``bundled``) without ``@`` is not a generated name. Raises
    `DatasetError` (one line) for a family name with a bad size or seed.
    """
    key = text.strip().lower()
    m = _NAME.match(key)
    if m is None or m["family"] not in FAMILIES:
        if "@" in key and key.split("@", 1)[0] in FAMILIES:
            raise DatasetError(
                f"dataset {text!r}: bad size or seed after '@'; write FAMILY@ROWS, "
                "FAMILY@paper or FAMILY@ROWS,seed=N (e.g. movies@15000,seed=7)"
            )
        return None
    family = FAMILIES[m["family"]]
    if m["size"] is None and family.name in bundled:
        return None  # the shipped table (a seed needs an explicit size)
    size = m["size"] or "paper"
    rows = family.preset_rows if size == "paper" else _rows(size, text)
    seed = SEED if m["seed"] is None else int(m["seed"])
    norm = f"{family.name}@{size if size == 'paper' else rows}"
    if m["seed"] is not None:
        norm += f",seed={seed}"
    return GeneratedName(norm, family.name, rows, seed)
