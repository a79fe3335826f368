"""``ggr-kv make-model SHAPE [--out DIR]``: a local model folder for dummy-weight runs.

Writes ``config.json`` (the architecture's shapes), ``tokenizer.json`` (the real Llama-3
vocabulary, built offline) and the small config files vLLM reads; run it with
``load_format="dummy"`` (the runner does this for shape names).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ggr_kv.engine.models import SHAPES

    parser.add_argument("shape", choices=sorted(SHAPES), help="architecture to write")
    parser.add_argument(
        "--out", default=None, metavar="DIR", help="folder to write (default: models/SHAPE)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="rebuild the files even if the folder is complete"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def main(args: argparse.Namespace) -> int:
    from ggr_kv.core.paths import project_path
    from ggr_kv.engine.models import SHAPES, make_model_dir

    out = Path(args.out) if args.out else project_path(Path("models") / args.shape)
    path = make_model_dir(args.shape, out, overwrite=args.overwrite)
    shape = SHAPES[args.shape]
    info = {
        "shape": args.shape,
        "path": str(path),
        "files": sorted(p.name for p in path.iterdir() if p.is_file()),
        "layers": shape["num_hidden_layers"],
        "hidden_size": shape["hidden_size"],
        "attention_heads": shape["num_attention_heads"],
        "kv_heads": shape["num_key_value_heads"],
    }
    if args.json:
        print(json.dumps(info))
    else:
        print(path)
    return 0
