"""Generate a table on first use and keep it in a cache folder, keyed so it is never stale.

Where: ``$GGR_KV_DATA_CACHE`` if set; else ``.cache/datasets/`` in the project checkout
(gitignored); else ``$XDG_CACHE_HOME/ggr-kv/datasets`` (``~/.cache/ggr-kv/datasets``).

Each table is ``{family}@{rows}-seed{seed}-{version}.csv`` beside a ``.json`` record
(family, rows, seed, version, SHA-256 of the CSV, seconds it took). ``version`` hashes the
source of the generator (`ggr_kv.datasets.gen` modules it uses and the family knobs), so
a changed generator, seed or row count never reads an old file. A file whose bytes no
longer match its record is made again. Files are written to a temporary name and renamed,
so concurrent users never see half a file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from pathlib import Path

from tqdm.auto import tqdm

from ggr_kv.core.atomic import write_atomic
from ggr_kv.core.paths import PACKAGE_DIR, cache_root
from ggr_kv.datasets.families import FAMILIES, Family

__all__ = ["CACHE_ENV", "cache_dir", "csv_bytes", "generated_file", "generator_version"]

#: environment variable naming the cache folder
CACHE_ENV = "GGR_KV_DATA_CACHE"
_SOURCES = ("gen/rng.py", "gen/grammar.py", "families.py", "cache.py")


def cache_dir() -> Path:
    """The cache folder (see the module notes); not created here."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else cache_root() / "datasets"


def generator_version(family: str | Family) -> str:
    """12 hex digits of SHA-256 over the source files that decide ``family``'s bytes."""
    fam = FAMILIES[family] if isinstance(family, str) else family
    h = hashlib.sha256(fam.name.encode())
    here = PACKAGE_DIR / "datasets"
    for rel in (*_SOURCES, f"gen/{fam.module}.py"):
        h.update(rel.encode() + b"\0" + (here / rel).read_bytes())
    return h.hexdigest()[:12]


def csv_bytes(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> bytes:
    """A table as UTF-8 CSV bytes (``\\n`` line ends, minimal quoting), header first."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    w.writerow(columns)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _valid(path: Path, record: Path) -> bool:
    if not (path.is_file() and record.is_file()):
        return False
    try:
        meta = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("sha256") == _sha256(path)


def generated_file(family: str, rows: int, seed: int, *, progress: bool = True) -> Path:
    """Path of the CSV of ``family`` at ``rows`` rows and ``seed``, generated if needed.

    A progress bar appears when generating takes over 2 s (unless ``progress`` is False).
    """
    fam = FAMILIES[family]
    version = generator_version(fam)
    folder = cache_dir()
    path = folder / f"{fam.name}@{rows}-seed{seed}-{version}.csv"
    record = path.with_suffix(".json")
    if _valid(path, record):
        return path
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tqdm(total=rows, desc=f"generating {fam.name}@{rows}", unit="row", delay=2.0,
              disable=not progress, leave=False) as bar:  # fmt: skip
        data = csv_bytes(fam.columns, fam.make(seed, rows, bar.update))
    write_atomic(path, data)
    meta = {
        "ggr_kv_generated": 1,
        "family": fam.name,
        "rows": rows,
        "seed": seed,
        "version": version,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    write_atomic(record, (json.dumps(meta, indent=1) + "\n").encode())
    return path


def read_record(path: Path) -> dict | None:
    """The ``.json`` record beside a cached CSV, or ``None`` if ``path`` is not one."""
    record = Path(path).with_suffix(".json")
    if Path(path).suffix != ".csv" or not record.is_file():
        return None
    try:
        meta = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if meta.get("ggr_kv_generated") == 1 and meta.get("family") in FAMILIES else None
