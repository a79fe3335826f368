"""Tables as prompts see them: loading, validation, deterministic strings, integer codes.

Every cell becomes a string before anything else happens, so that the reorder methods,
the metrics and the prompt serializer all see the same text:

- missing values (``None``, ``NaN``, ``NaT``, ``pd.NA``) become ``""``;
- booleans become ``"True"`` / ``"False"``;
- integers become their decimal digits; floats with an integral value drop the
  ``.0`` (``3.0`` -> ``"3"``, which is what a CSV with gaps turns an int column into),
  other floats use Python's shortest round-trip ``repr`` (``0.1`` -> ``"0.1"``);
- timestamps use ISO 8601 (``2024-01-31T12:00:00``);
- anything else uses ``str()``.

The caller's DataFrame is never modified: `Table` holds its own arrays.
"""

from __future__ import annotations

import json
import os
import re
import stat
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ggr_kv.core.jsonutil import to_jsonable

__all__ = ["DELIMITERS", "Table", "TableError", "check_table_file", "load_table", "sniff_delimiter", "stringify_column"]


class TableError(ValueError):
    """Bad input table: the message names the file, column or value."""


def stringify_column(values: pd.Series) -> np.ndarray:
    """Turn one column into an object array of ``str`` following the module's rules."""
    s = values
    missing = s.isna().to_numpy()
    if pd.api.types.is_bool_dtype(s.dtype):
        out = np.where(s.to_numpy(dtype=bool, na_value=False), "True", "False").astype(object)
    elif pd.api.types.is_integer_dtype(s.dtype):
        # astype(str) keeps every digit, uint64 beyond the int64 range included
        out = np.asarray(s.astype(str), dtype=object)
    elif pd.api.types.is_float_dtype(s.dtype):
        arr = s.to_numpy(dtype=float, na_value=np.nan)
        out = np.empty(len(arr), dtype=object)
        finite = np.isfinite(arr)
        integral = finite & (np.floor(arr) == arr) & (np.abs(arr) < 2**63)
        out[integral] = arr[integral].astype(np.int64).astype(str)
        rest = ~integral & ~missing
        npd = getattr(s.dtype, "numpy_dtype", s.dtype)  # Float32 (nullable) -> float32
        narrow = npd if isinstance(npd, np.dtype) and npd.itemsize < 8 else None
        if narrow is not None:
            # float32/float16: the shortest text that round-trips at that width (0.1, not
            # 0.10000000149011612)
            out[rest] = [str(x) for x in arr[rest].astype(narrow)]
        else:
            out[rest] = [repr(float(x)) for x in arr[rest]]
    else:
        # object / string / category / datetime: map through the unique values only (fast
        # on repetitive columns, which is exactly the kind GGR cares about)
        try:
            codes, uniques = pd.factorize(s, use_na_sentinel=True)
        except TypeError:  # unhashable cells (lists, arrays from Parquet list columns)
            out = np.empty(len(s), dtype=object)
            out[:] = [_scalar_to_str(v) for v in s.to_numpy(dtype=object)]
            out[missing] = ""
            return out
        if s.dtype == object and len(s):
            codes, uniques = _split_mixed_types(s.to_numpy(dtype=object), codes, uniques)
        ustr = np.array([_scalar_to_str(u) for u in uniques] + [""], dtype=object)
        out = ustr[codes]  # code -1 (missing) picks the trailing ""
    out[missing] = ""
    return out


def _split_mixed_types(vals: np.ndarray, codes: np.ndarray, uniques: object) -> tuple:
    """Re-factorize by (type, value): ``factorize`` alone merges ``True``, ``1`` and ``1.0``."""
    present = codes >= 0
    tcodes, types = pd.factorize(
        np.fromiter(map(type, vals[present]), dtype=object, count=int(present.sum()))
    )
    if len(types) <= 1:
        return codes, uniques
    sub, _ = pd.factorize(codes[present].astype(np.int64) * len(types) + tcodes)
    first = np.unique(sub, return_index=True)[1]  # first occurrence of each new code
    new_codes = np.full(len(vals), -1, dtype=np.intp)
    new_codes[present] = sub
    return new_codes, list(vals[present][first])


def _scalar_to_str(v: object) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (np.ndarray, list, tuple, dict, set)):  # nested Parquet cells: JSON
        return json.dumps(to_jsonable(v), ensure_ascii=False)
    if v is None or pd.isna(v):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "True" if v else "False"
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if f.is_integer() and abs(f) < 2**63:
            return str(int(f))
        return str(v) if isinstance(v, np.floating) and v.dtype.itemsize < 8 else repr(f)
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    return str(v)


@dataclass(frozen=True)
class Table:
    """A table ready for reordering: string cells plus per-column integer codes.

    Attributes
    ----------
    columns : field names, in the input's order.
    cells : ``(n_rows, n_cols)`` object array of ``str``.
    codes : ``(n_rows, n_cols)`` int32 array; equal codes in a column mean equal text.
    lengths : ``(n_rows, n_cols)`` int64 array of cell lengths in characters.
    source : where the table came from (a path, or ``"<DataFrame>"``), for messages.
    """

    columns: tuple[str, ...]
    cells: np.ndarray
    codes: np.ndarray
    lengths: np.ndarray
    source: str = "<DataFrame>"
    uniques: tuple[np.ndarray, ...] = field(default=(), repr=False)

    @property
    def n_rows(self) -> int:
        return self.cells.shape[0]

    @property
    def n_cols(self) -> int:
        return self.cells.shape[1]

    def col_index(self, name: str) -> int:
        """Position of column ``name``; a `TableError` lists the valid names otherwise."""
        try:
            return self.columns.index(name)
        except ValueError:
            raise TableError(
                f"{self.source}: no column {name!r}. Available columns: {list(self.columns)}"
            ) from None

    def to_frame(self) -> pd.DataFrame:
        """The string cells as a new DataFrame (original row order)."""
        return pd.DataFrame(self.cells, columns=list(self.columns))

    @classmethod
    def from_frame(cls, df: pd.DataFrame, source: str = "<DataFrame>") -> Table:
        """Build a `Table` from a DataFrame without modifying it."""
        if not isinstance(df, pd.DataFrame):
            raise TableError(f"{source}: expected a pandas DataFrame, got {type(df).__name__}")
        names = [str(c) for c in df.columns]
        dup = sorted({c for c in names if names.count(c) > 1})
        if dup:
            raise TableError(f"{source}: duplicate column names {dup}; rename them first")
        if df.shape[1] == 0:
            raise TableError(f"{source}: the table has no columns")
        if df.shape[0] == 0:
            raise TableError(f"{source}: the table has no rows")
        n, m = df.shape
        cells = np.empty((n, m), dtype=object)
        codes = np.empty((n, m), dtype=np.int32)
        lengths = np.empty((n, m), dtype=np.int64)
        uniques = []
        for j in range(m):
            try:
                col = stringify_column(df.iloc[:, j])
            except (TypeError, ValueError) as e:
                raise TableError(
                    f"{source}: column {names[j]!r}: cannot turn its values into text: {e}"
                ) from None
            cells[:, j] = col
            c, u = pd.factorize(col)
            codes[:, j] = c
            ulen = np.fromiter((len(x) for x in u), dtype=np.int64, count=len(u))
            lengths[:, j] = ulen[c]
            uniques.append(np.asarray(u, dtype=object))
        return cls(tuple(names), cells, codes, lengths, source, tuple(uniques))


def load_table(table: str | Path | pd.DataFrame | Table, sep: str | None = None) -> Table:
    """Load a CSV or Parquet file (or wrap a DataFrame) as a `Table`.

    CSV cells are read as text (``dtype=str``) so that ``007`` stays ``"007"``; empty
    CSV cells are missing values and become ``""``. ``sep`` is the CSV delimiter; by
    default it is sniffed from the header line (``,``, ``;``, tab or ``|``; ``.tsv``
    files: tab).
    """
    if isinstance(table, Table):
        return table
    if isinstance(table, pd.DataFrame):
        return Table.from_frame(table)
    path = Path(table)
    check_table_file(path)
    if sep in ("\\t", "tab"):
        sep = "\t"
    if sep is not None and len(sep) != 1:
        raise TableError(f"{path}: --sep {sep!r} must be one character (e.g. ',' ';' '|')")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq

            _check_width(path, len(pq.read_schema(path).names))
            df = pd.read_parquet(path)
        except TableError:
            raise
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types
            raise TableError(f"{path}: cannot read as Parquet: {e}") from None
        return Table.from_frame(df, source=str(path))
    if suffix not in (".csv", ".tsv", ".txt", ""):
        raise TableError(f"{path}: unknown table format {suffix!r}; use .csv or .parquet")
    sep = sep or ("\t" if suffix == ".tsv" else sniff_delimiter(path))
    _check_width(path, _header_outside_quotes(path).count(sep) + 1)  # before pandas reads it
    try:
        with warnings.catch_warnings():
            # index_col=False: a first row with more fields than the header must not turn
            # the first column into the index silently; pandas warns instead, we raise
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(
                path, dtype=str, keep_default_na=False, na_values=[""], sep=sep, index_col=False
            )
    except pd.errors.EmptyDataError:
        raise TableError(f"{path}: the file is empty") from None
    except pd.errors.ParserWarning:
        raise TableError(
            f"{path}: a row has more fields than the header; quote cells that contain {sep!r}"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise TableError(f"{path}: cannot read as a table: {e}") from None
    _check_csv_header(path, df, sep)
    return Table.from_frame(df, source=str(path))


#: largest table file `load_table` reads, bytes (``GGR_KV_MAX_TABLE_BYTES`` overrides)
MAX_TABLE_BYTES = 8 * 2**30
#: most columns a table may have (``GGR_KV_MAX_COLUMNS`` overrides)
MAX_COLUMNS = 4096
#: longest CSV header line read, characters
MAX_HEADER_CHARS = 2**20


def _limit(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def check_table_file(path: Path) -> None:
    """Raise `TableError` unless ``path`` is a regular file (not a FIFO, device, folder)
    of at most `MAX_TABLE_BYTES`: nothing blocks or reads without end."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise TableError(f"{path}: file not found") from None
    except OSError as e:
        raise TableError(f"{path}: cannot read: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise TableError(f"{path}: is a directory, expected a .csv or .parquet file")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else (
            "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket")
        raise TableError(f"{path}: is {kind}, not a regular file; save the table to a file first")
    cap = _limit("GGR_KV_MAX_TABLE_BYTES", MAX_TABLE_BYTES)
    if st.st_size > cap:
        raise TableError(f"{path}: {st.st_size:,} bytes, above the {cap:,}-byte limit "
                         "(GGR_KV_MAX_TABLE_BYTES raises it)")


def _check_width(path: Path, n_columns: int) -> None:
    cap = _limit("GGR_KV_MAX_COLUMNS", MAX_COLUMNS)
    if n_columns > cap:
        raise TableError(f"{path}: {n_columns:,} columns, above the {cap:,}-column limit "
                         "(GGR_KV_MAX_COLUMNS raises it)")


#: delimiters `sniff_delimiter` chooses from, in order of preference on ties
DELIMITERS = (",", ";", "\t", "|")


def _header_outside_quotes(path: Path) -> str:
    """The first line of ``path`` (at most `MAX_HEADER_CHARS`), quoted parts removed."""
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            header = f.readline(MAX_HEADER_CHARS + 1)
    except OSError as e:
        raise TableError(f"{path}: cannot read: {e}") from None
    if len(header) > MAX_HEADER_CHARS:
        raise TableError(f"{path}: header line longer than {MAX_HEADER_CHARS:,} characters")
    return re.sub(r'"[^"]*"?', "", header)


def sniff_delimiter(path: Path) -> str:
    """The CSV delimiter of ``path``: of `DELIMITERS`, the one splitting the header line
    (outside quotes) into the most fields; ``,`` when none splits it."""
    text = _header_outside_quotes(path)
    counts = [text.count(d) for d in DELIMITERS]
    best = max(range(len(DELIMITERS)), key=lambda i: (counts[i], -i))
    return DELIMITERS[best] if counts[best] else ","


def _check_csv_header(path: Path, df: pd.DataFrame, sep: str = ",") -> None:
    # pandas renames duplicate CSV headers to "a.1"; catch that before it hides a mistake
    header = pd.read_csv(path, nrows=1, header=None, dtype=str, keep_default_na=False, sep=sep)
    names = [str(x) for x in header.iloc[0]] if len(header) else []
    _check_width(path, len(names))
    dup = sorted(c for c, k in Counter(names).items() if k > 1)
    if dup:
        raise TableError(f"{path}: duplicate column names {dup}; rename them first")
