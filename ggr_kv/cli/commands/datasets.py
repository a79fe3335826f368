"""``ggr-kv datasets``: the bundled datasets (names accepted wherever a table is)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")


def main(args: argparse.Namespace) -> int:
    from ggr_kv.core.jsonutil import dumps
    from ggr_kv.datasets import list_datasets

    table = list_datasets()
    if args.json:
        for rec in table.to_dict(orient="records"):
            print(dumps(rec))
        return 0
    cols = [c for c in ("name", "rows", "columns", "query_types", "description") if c in table]
    with_text = table[cols].astype(str)
    widths = {c: max(len(c), with_text[c].str.len().max()) for c in cols[:-1]}
    print("  ".join(c.ljust(widths.get(c, 0)) for c in cols))
    for _, row in with_text.iterrows():
        print("  ".join(row[c].ljust(widths.get(c, 0)) for c in cols))
    return 0
