"""Regenerate the bundled tables in ``data/`` from their seed: ``python -m ggr_kv.datasets.generate``.

Every table comes from word lists and templates in ``ggr_kv/datasets/gen/`` and a seeded random
source built on ``random.Random.random()`` alone, whose stream Python keeps fixed, so the
same seed writes the same bytes on any platform. No network, no downloads.

Usage::

    python -m ggr_kv.datasets.generate            # write data/*.csv and data/README.md (if changed)
    python -m ggr_kv.datasets.generate --check    # exit 1 if the shipped files differ from the seed's
    python -m ggr_kv.datasets.generate --out DIR  # write elsewhere
    python -m ggr_kv.datasets.generate --samples ../shared/datasets  # re-measure the real samples

``data/README.md`` also compares the generated paper-scale presets (`ggr_kv.datasets.families`,
generated on demand into the cache) with the paper's real samples (``data/samples.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from ggr_kv.core.atomic import write_atomic
from ggr_kv.core.paths import CHECKOUT_DIR
from ggr_kv.datasets.cache import csv_bytes
from ggr_kv.datasets.catalog import DATASETS
from ggr_kv.datasets.families import SEED
from ggr_kv.datasets.gen import beer, movies, posts, products, rag
from ggr_kv.datasets.readme import load_samples, measure_presets, measure_samples, render_readme

__all__ = ["GENERATORS", "SEED", "generate_rows", "render_csv", "write_all"]

#: dataset name -> (column names, row generator taking the seed)
GENERATORS: dict[str, tuple[tuple[str, ...], Callable[[int], list[tuple[str, ...]]]]] = {
    "movies": (movies.COLUMNS, movies.generate),
    "products": (products.COLUMNS, products.generate),
    "posts": (posts.COLUMNS, posts.generate),
    "beer": (beer.COLUMNS, beer.generate),
    "rag": (rag.COLUMNS, rag.generate),
}


def generate_rows(name: str, seed: int = SEED) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """Column names and rows (all cells text) of bundled dataset ``name``."""
    if name not in GENERATORS:
        raise ValueError(f"no generator for {name!r}; available: {list(GENERATORS)}")
    columns, gen = GENERATORS[name]
    return columns, gen(seed)


def render_csv(name: str, seed: int = SEED) -> bytes:
    """The CSV file of dataset ``name`` as UTF-8 bytes (``\\n`` line ends, minimal quoting)."""
    return csv_bytes(*generate_rows(name, seed))


def _stats(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> dict:
    n = len(rows)
    chars = sum(len(c) for r in rows for c in r) / n
    words = sum(len(c.split()) for r in rows for c in r) / n
    distinct = [len({r[j] for r in rows}) for j in range(len(columns))]
    return {"rows": n, "chars": chars, "words": words, "distinct": distinct}


def _shipped_sections(tables: dict[str, tuple], seed: int) -> tuple[list[str], list[str]]:
    """The README's table of shipped files, and one section per file."""
    lines = [
        "# Bundled tables",
        "",
        "Small generated tables with the structure of the GGR paper's datasets (MLSys 2025):",
        "long shared fields, FD groups, short per-row text. Every text is made from word lists",
        "and templates in `ggr_kv/datasets/gen/`; nothing here was downloaded. Rows are in a realistic",
        "original order (time order, or random for `rag`), not grouped, so reordering has work",
        "to do. Load them with `ggr_kv.datasets.load_dataset(name)`; paper-scale tables of any",
        "size are generated on demand (next section).",
        "",
        f"Seed: `{seed}`. Regenerate (byte for byte) with `python -m ggr_kv.datasets.generate`;",
        "`python -m ggr_kv.datasets.generate --check` verifies the shipped files and this README.",
        "",
        "| name | rows | fields | avg chars / row | avg words / row | size (bytes) | FD groups |",
        "|---|---|---|---|---|---|---|",
    ]
    details = []
    for name, spec in DATASETS.items():
        columns, rows, data = tables[name]
        st = _stats(columns, rows)
        groups = "; ".join("[" + ", ".join(g) + "]" for g in spec.fds) or "none"
        lines.append(
            f"| {name} | {st['rows']} | {len(columns)} | {st['chars']:.0f} | {st['words']:.0f} "
            f"| {len(data)} | {groups} |"
        )
        cols = ", ".join(f"`{c}` ({d})" for c, d in zip(columns, st["distinct"]))
        one_way = ", ".join(f"`{a}` -> `{b}`" for a, b in spec.one_way_fds) or "none"
        details += [
            f"## {name} (`{spec.filename}`)",
            "",
            spec.description,
            "",
            f"- columns (distinct values): {cols}",
            f"- one-way dependencies: {one_way}",
            f"- query types: {', '.join(spec.query_types)}",
            "",
        ]
    lines += ["", "Characters and words count cell text only (no field names or JSON quoting).", ""]
    return lines, details


def _default_out() -> Path | None:
    """The checkout's ``data/``; ``None`` in an installed package (no ``pyproject.toml``)."""
    return CHECKOUT_DIR / "data" if (CHECKOUT_DIR / "pyproject.toml").is_file() else None


def write_all(
    out: Path,
    seed: int = SEED,
    check: bool = False,
    *,
    samples: Path | None = None,
    readme: bool = True,
    progress: bool = True,
) -> list[str]:
    """Write (or with ``check`` only compare) every shipped table and the README in ``out``.

    ``samples``: the folder of the paper's real samples; measures them into
    ``out/samples.json`` (else the README reads the committed ``data/samples.json``).
    ``readme=False`` skips the README (which generates the paper-scale presets, seconds
    each, cached). Returns the names of files that differed from the freshly generated
    ones (written unless ``check``). Files that already match are left untouched.
    """
    tables = {}
    for name in GENERATORS:
        columns, rows = generate_rows(name, seed)
        tables[name] = (columns, rows, csv_bytes(columns, rows))
    payload = {DATASETS[n].filename: t[2] for n, t in tables.items()}
    if readme:
        if samples is not None:
            measured = measure_samples(samples)
            payload["samples.json"] = (json.dumps(measured, indent=1) + "\n").encode()
        else:
            measured = load_samples(_samples_json(out))
        shipped, details = _shipped_sections(tables, seed)
        text = render_readme(shipped, measured, measure_presets(progress), details)
        payload["README.md"] = text.encode("utf-8")
    changed = []
    if not check:
        out.mkdir(parents=True, exist_ok=True)
    for fname, data in payload.items():
        p = out / fname
        if p.is_file() and p.read_bytes() == data:
            continue
        changed.append(fname)
        if not check:
            write_atomic(p, data)
    return changed


def _samples_json(out: Path) -> Path:
    """``samples.json`` in ``out`` if there, else the checkout's ``data/samples.json``."""
    here = out / "samples.json"
    return here if here.is_file() else CHECKOUT_DIR / "data" / "samples.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m ggr_kv.datasets.generate", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--out", type=Path, default=None, help="folder to write (default: data/)")
    ap.add_argument("--seed", type=int, default=SEED, help=f"random seed (default {SEED})")
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 on differences")
    ap.add_argument(
        "--samples",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder of the paper's real samples: re-measure them into samples.json",
    )
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.add_argument(
        "--no-readme",
        action="store_true",
        help="only the shipped CSVs (the README measures the presets: ~1 min)",
    )
    args = ap.parse_args(argv)
    out = args.out or _default_out()
    if out is None:
        ap.error("not running from a repository checkout; pass --out DIR")
    if args.samples is not None and not args.samples.is_dir():
        ap.error(f"--samples {args.samples}: not a folder")
    changed = write_all(out, args.seed, check=args.check, samples=args.samples,
                        readme=not args.no_readme, progress=not args.no_progress)  # fmt: skip
    if args.check:
        if changed:
            print(f"differs from seed {args.seed}: {', '.join(changed)} in {out}", file=sys.stderr)
            return 1
        print(f"{out}: up to date (seed {args.seed})")
        return 0
    print(f"{out}: wrote {', '.join(changed) if changed else 'nothing (up to date)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
