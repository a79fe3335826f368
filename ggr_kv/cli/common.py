"""What every ``ggr-kv`` subcommand shares: reading a TABLE_OR_DATASET argument, output
paths that never replace an input (or an existing file without ``--force``), KEY=VALUE
and number options, and the one printer of results (aligned text or one JSON object).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Input",
    "add_input_arguments",
    "check_out_path",
    "emit",
    "format_value",
    "input_files",
    "key_value",
    "load_input",
    "non_negative_int",
    "positive_int",
    "query_file",
    "same_file",
]

#: file endings `load_input` treats as a path even when the file does not exist
_TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")


def _int_at_least(low: int, expected: str) -> Callable[[str], int]:
    """argparse type: an integer >= ``low``; errors say ``expected <expected>``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


#: argparse type: an integer >= 1
positive_int = _int_at_least(1, "a positive integer")
#: argparse type: an integer >= 0
non_negative_int = _int_at_least(0, "an integer >= 0")


def key_value(what: str, normalize_key: bool = False) -> Callable[[str], tuple[str, Any]]:
    """argparse type for ``KEY=VALUE`` options; VALUE is parsed as JSON when it can be
    (numbers, true/false, null, lists, objects), else kept as text."""

    def parse(text: str) -> tuple[str, Any]:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if normalize_key:
            key = key.replace("-", "_")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"{what} {text!r} must look like KEY=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        return key, value

    return parse


#: longest --query-file read, bytes
MAX_QUERY_FILE_BYTES = 2**20


def query_file(text: str) -> str:
    """argparse type of ``--query-file FILE``: the file's text (UTF-8, one trailing newline
    dropped); a regular file of at most `MAX_QUERY_FILE_BYTES`."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file (or not a regular file)")
    if path.stat().st_size > MAX_QUERY_FILE_BYTES:
        raise argparse.ArgumentTypeError(
            f"{text}: {path.stat().st_size:,} bytes, above {MAX_QUERY_FILE_BYTES:,}")
    try:
        body = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise argparse.ArgumentTypeError(f"{text}: not UTF-8 text (byte {e.start})") from None
    return body[:-1] if body.endswith("\n") else body


def add_input_arguments(parser: argparse.ArgumentParser, rows: bool = False) -> None:
    """The TABLE_OR_DATASET positional, ``--sep`` and (``rows``) ``--rows``."""
    parser.add_argument(
        "table",
        metavar="TABLE_OR_DATASET",
        help="a .csv/.tsv/.parquet file or a bundled dataset name (`ggr-kv datasets` lists them)",
    )
    parser.add_argument(
        "--sep",
        default=None,
        metavar="CHAR",
        help="CSV delimiter (default: sniffed from the header line among , ; tab |)",
    )
    if rows:
        parser.add_argument(
            "--rows", type=positive_int, default=None, metavar="N", help="use the first N rows"
        )


@dataclass
class Input:
    """A TABLE_OR_DATASET argument, loaded.

    Attributes
    ----------
    source : what the runner gets: the `ggr_kv.datasets.Dataset` for a bundled name (its
        metadata goes into run.json), else the `Table`.
    table : the rows as a `ggr_kv.core.table.Table`.
    name : the dataset name, or the file's stem.
    fds : FD groups the dataset (or the paper layout its columns match) declares, or None.
    family : what picks query templates: the Dataset, or the layout's family name.
    path : the file read, None for a bundled name.
    """

    source: Any
    table: Any
    name: str
    fds: list[tuple[str, ...]] | None
    family: Any
    path: Path | None


def load_input(spec: str | Path, *, rows: int | None = None, sep: str | None = None) -> Input:
    """Load a table file (any CSV delimiter, Parquet) or a bundled dataset by name.

    An existing file is read with `ggr_kv.core.table.load_table`, so plans made from it fit
    it; its FD groups and query family come from the GGR paper's layouts when its columns
    match one. Anything else must be a bundled dataset name (first ``rows`` rows).
    """
    from ggr_kv.core.table import Table, TableError, load_table
    from ggr_kv.datasets import load_dataset, recognize

    path = Path(spec)
    if path.exists():
        table = load_table(path, sep=sep)
        if rows is not None:
            if rows > table.n_rows:
                raise TableError(f"{path}: --rows {rows} but the table has {table.n_rows} rows")
            table = Table.from_frame(table.to_frame().head(rows), str(path))
        layout = recognize(table.columns)
        fds = None
        if layout is not None:
            fds = [g for g in layout.fds if all(c in table.columns for c in g)] or None
        family = layout.kind if layout is not None else path.stem
        return Input(table, table, path.stem, fds, family, path)
    if path.suffix.lower() in _TABLE_SUFFIXES or len(path.parts) > 1:
        raise TableError(f"{spec}: file not found")
    ds = load_dataset(str(spec), n=rows, sample="head")  # an unknown name lists the valid ones
    return Input(ds, ds.table(), str(ds.name), list(ds.fds) or None, ds, None)


def input_files(spec: str | Path) -> list[Path]:
    """The files an input argument reads: the file itself, or the file behind a bundled
    dataset name (none for a name that does not resolve; loading it reports that)."""
    path = Path(spec)
    if path.exists():
        return [path]
    try:
        from ggr_kv.datasets import dataset_path

        return [dataset_path(str(spec), progress=False)]
    except Exception:  # noqa: BLE001 - not a dataset: the command's loader says why
        return []


def same_file(a: str | Path, b: str | Path) -> bool:
    """Both paths exist and are one file (same device and inode: hard and symbolic
    links included)."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def check_out_path(out: str | Path, *, force: bool, inputs: Iterable[str | Path | None] = ()) -> Path:
    """Check an output file path before any work: never the file (same device and inode)
    behind one of ``inputs`` (paths or dataset names; not even with ``force``), an existing
    file only with ``force``, never a directory."""
    out = Path(out)
    for src in inputs:
        if src is None:
            continue
        for f in input_files(src):
            if same_file(out, f):
                what = f" (the file behind {src}: {f})" if Path(src) != f else ""
                raise FileExistsError(
                    f"{out}: this is an input of the command{what}; pick another --out"
                )
    if out.is_dir():
        raise FileExistsError(f"{out}: is a directory; --out needs a file name")
    if out.exists() and not force:
        raise FileExistsError(f"{out}: already exists; pick another --out or add --force")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out.parent}: no such directory for --out")
    return out


def format_value(key: str, value: Any) -> str:
    """A result value as printed: rates and usages as ``0.7234 (72.3%)``, seconds with
    three decimals, counts with thousands separators."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (int, float)) and (
        key.endswith(("_rate", "_usage")) or key.startswith(("hit_rate", "max_kv", "peak_kv"))
    ):
        return f"{value:.4f} ({100 * value:.1f}%)"
    if isinstance(value, (int, float)) and (key.endswith("_s") or key == "seconds"):
        return f"{value:.3f}"
    if isinstance(value, (int, float)) and key.endswith("speedup"):
        return f"{value:.2f}x"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}"
    return str(value)


def emit(result: Mapping[str, Any], as_json: bool, labels: Mapping[str, str]) -> None:
    """Print ``result``: one strict-JSON object (every key), or aligned ``label  value``
    lines for the keys in ``labels`` (in that order) that have a value."""
    if as_json:
        from ggr_kv.core.jsonutil import dumps

        print(dumps(dict(result)))
    else:
        width = max(len(v) for v in labels.values())
        for key, label in labels.items():
            value = result.get(key)
            if value is not None:
                print(f"{label:<{width}}  {format_value(key, value)}")
    sys.stdout.flush()
