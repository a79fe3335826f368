"""``data/README.md``: the shipped tables, the generated presets, and how their structure
compares with the paper's real tables (written by ``python -m ggr_kv.datasets.generate``).

The real samples' statistics live in ``data/samples.json`` (measured by
``python -m ggr_kv.datasets.generate --samples DIR`` from the folder of the paper's
samples), so the README renders, and ``--check`` passes, without that folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ggr_kv.datasets.families import FAMILIES, SEED
from ggr_kv.datasets.names import MAX_ROWS, MIN_ROWS
from ggr_kv.datasets.queries import get_query, query_types
from ggr_kv.datasets.stats import TableStats, table_stats

__all__ = ["PAPER", "SAMPLES", "Sample", "measure_presets", "measure_samples", "render_readme"]


@dataclass(frozen=True)
class Sample:
    """A real table of the shared samples folder, measured for the comparison.

    ``family`` is the generator family it is compared with (``None``: none), ``key`` its
    group column, ``full_rows`` the rows of the table it randomly samples (``None``: it is
    a whole table), ``rename`` its column names -> the family's.
    """

    file: str
    family: str | None
    key: str | None
    full_rows: int | None
    rename: tuple[tuple[str, str], ...] = ()


SAMPLES = (
    Sample("movies_sampled_labelled.csv", "movies", "movieinfo", 15000),
    Sample("movies_small.csv", "movies", "movie_info", None,
           (("movie_info", "movieinfo"), ("review_content", "reviewcontent"),
            ("movie_title", "movietitle"), ("rotten_tomatoes_link", "rottentomatoeslink"))),
    Sample("products_sampled_labelled.csv", "products", "parent_asin", 14890),
    Sample("posts_sampled_labelled.csv", "posts", "PostId", 14920),
    Sample("contributions.csv", None, "CMTE_ID", None),
)  # fmt: skip
#: the paper's Table 1: rows and average input tokens per row (its prompt, Llama-3 tokens)
PAPER = {
    "movies": (15000, 276),
    "products": (14890, 377),
    "posts": (14920, 765),
    "beer": (28479, 156),
    "rag": (22665, 1047),
}
#: the per-row text field of each family (a review, a comment, a question)
_TEXT_FIELD = {"movies": "reviewcontent", "products": "text", "posts": "Text", "rag": "question",
               "shortgroups": "reviewcontent"}  # fmt: skip
#: the long field a group shares (what prefix caching reuses)
SHARED_FIELD = {"movies": "movieinfo", "products": "description", "posts": "Body",
                "beer": "beer/name", "rag": "context1", "shortgroups": "movieinfo"}  # fmt: skip


def _query_text(kind: str | None) -> str:
    qtypes = query_types(kind)
    return get_query(kind, qtypes[0]).text if qtypes else ""


def measure_samples(folder: Path) -> dict:
    """``data/samples.json``'s content: `TableStats` of every `SAMPLES` file in ``folder``."""
    from ggr_kv.datasets.catalog import load_dataset

    out = {}
    for s in SAMPLES:
        ds = load_dataset(Path(folder) / s.file)
        frame = ds.frame.rename(columns=dict(s.rename))
        key = dict(s.rename).get(s.key, s.key)
        kind = FAMILIES[s.family].kind if s.family else None
        st = table_stats(frame, s.file, key, query=_query_text(kind), full_rows=s.full_rows)
        out[s.file] = {"family": s.family, **st.to_dict()}
    return {"tokenizer": "llama3", "samples": out}


def measure_presets(progress: bool = True) -> dict[str, TableStats]:
    """`TableStats` of every family at its preset size (generated or read from the cache)."""
    from ggr_kv.datasets.catalog import dataset_path, load_dataset

    out = {}
    for name, fam in FAMILIES.items():
        dataset_path(f"{name}@paper", progress=progress)  # generate (quietly) if needed
        ds = load_dataset(f"{name}@paper")
        out[name] = table_stats(ds.frame, f"{name}@paper", fam.key, query=_query_text(fam.kind))
    return out


def _f(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _presets_section(presets: dict[str, TableStats]) -> list[str]:
    lines = [
        "## Generated tables at any size",
        "",
        "Every family below makes a table of any row count on demand, byte for byte the same",
        "for the same name: `movies@15000` (or `movies@15k`) is the movies family at 15,000",
        "rows, `movies@paper` the paper's row count, `movies@15000,seed=7` another seed",
        f"(default `{SEED}`); rows {MIN_ROWS:,}-{MAX_ROWS:,}. `shortgroups` alone means",
        "`shortgroups@paper`. The names work wherever a dataset name does (`load_dataset`,",
        "`dataset_path`, `ggr-kv run NAME`, the notebooks' `dataset` parameter, sweeps).",
        "Keys grow with the row count, so rows per key stay as below at any size.",
        "",
        "Tables are generated on first use (a progress bar after 2 s) and cached in",
        "`.cache/datasets/` of the checkout (gitignored; outside a checkout",
        "`~/.cache/ggr-kv/datasets`); set `GGR_KV_DATA_CACHE` to use another folder. A cached",
        "file is keyed by family, rows, seed and a hash of the generator's source, so a",
        "changed generator never reads an old file.",
        "",
        "| preset | rows | fields | FD groups | keys | rows per key | description |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, fam in FAMILIES.items():
        st = presets[name]
        groups = "; ".join("[" + ", ".join(g) + "]" for g in fam.fds) or "none"
        lines.append(
            f"| `{name}@paper` | {fam.preset_rows:,} | {len(fam.columns)} | {groups} "
            f"| {_f(st.keys)} | {_f(st.rows_per_key, 1)} | {fam.description} |"
        )
    sg = presets["shortgroups"]
    lines += [
        "",
        "`shortgroups` is the table for group-aware sharding over several GPUs:",
        (f"{sg.rows_per_key:.1f} rows per movie on average, each under a `movieinfo` of "
         f"{sg.field_tokens['movieinfo']:.0f} tokens"),
        f"on average ({sg.prompt_tokens:.0f}-token prompts), so a group split across replicas",
        "recomputes a long prefix on each, while `movies@paper` (200 rows per movie) barely",
        "notices a split. `data/ORDERINGS.md` predicts the cost of a round-robin split.",
    ]
    return lines + [""]


def _row(label: str, st: dict, family: str, paper_tokens: int | None) -> str:
    shared = SHARED_FIELD.get(family)
    key_tokens = st["field_tokens"].get(shared) if shared else None
    text = _TEXT_FIELD.get(family)
    text_tokens = st["field_tokens"].get(text) if text else None
    if st["keys_in_100_lo"] is not None and st["keys_in_100_lo"] != st["keys_in_100_hi"]:
        k100 = f"{st['keys_in_100']:.1f} [{st['keys_in_100_lo']:.0f}-{st['keys_in_100_hi']:.0f}]"
    else:
        k100 = _f(st["keys_in_100"])
    group = _f(st["group_rows"]) + (" (est.)" if st.get("full_rows") else "")
    return (
        f"| {label} | {st['rows']:,} | {k100} | {group} | {_f(key_tokens)} | {_f(text_tokens)} "
        f"| {_f(st['cell_tokens'])} | {_f(st['prompt_tokens'])} | {_f(paper_tokens)} "
        f"| {st['repeated_share_100']:.2f} |"
    )


def _comparison_section(samples: dict, presets: dict[str, TableStats]) -> list[str]:
    lines = [
        "## Structure compared with the paper's tables",
        "",
        "Measured the same way on the paper's real samples (`../shared/datasets/`, see its",
        "README) and on the generated presets (`ggr_kv.datasets.stats.table_stats`, Llama-3",
        "tokens). *keys in 100 rows*: distinct keys (movie, product, post) among 100 random",
        "rows, the one group statistic a 100-row random sample of the paper's table shows",
        "directly (generated: mean [5th-95th percentile] over 200 draws). *rows per key*: the",
        "size of the group a random row sits in, sum(s^2)/n; for a 100-row sample estimated",
        "at the full table's size from pairs of rows sharing a key (noisy: posts has 7 such",
        "pairs). *prompt*: the project's prompt (instruction, the table's first query, the",
        "row as JSON); the paper's count used its own chat template. *repeated in 100*: share",
        "of cell tokens whose value occurs on another of 100 random rows. *shared field*: the",
        "long field a group repeats (`movieinfo`, `description`, `Body`, `beer/name`,",
        "`context1`); *text field*: the per-row review, comment or question.",
        "",
        (
            "| table | rows | keys in 100 rows | rows per key | shared field tokens "
            "| text field tokens | cell tokens / row | prompt tokens / row | paper's tokens / row "
            "| repeated in 100 |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in FAMILIES:
        paper = PAPER.get(name, (None, None))[1]
        for file, st in samples["samples"].items():
            if st["family"] == name:
                lines.append(_row(f"real: {file}", st, name, paper))
        lines.append(_row(f"generated: `{name}@paper`", presets[name].to_dict(), name, paper))
    others = [f for f, st in samples["samples"].items() if st["family"] is None]
    for file in others:
        lines.append(_row(f"real: {file} (no generator)", samples["samples"][file], "", None))
    return lines + [""]


def _fields_section(samples: dict, presets: dict[str, TableStats]) -> list[str]:
    lines = ["### Tokens per field", ""]
    for name in ("movies", "products", "posts"):
        reals = [(f, st) for f, st in samples["samples"].items() if st["family"] == name]
        head = " | ".join(f"real {f}" for f, _ in reals)
        lines += [f"{name}:", "", f"| field | {head} | generated |",
                  "|---|" + "---|" * (len(reals) + 1)]  # fmt: skip
        for col, gen in presets[name].field_tokens.items():
            vals = " | ".join(_f(st["field_tokens"].get(col), 1) for _, st in reals)
            lines.append(f"| `{col}` | {vals} | {gen:.1f} |")
        lines.append("")
    lines += [
        "Tolerances the tests hold the presets to (`tests/test_datasets_scale.py`): the real",
        "sample's keys in 100 rows inside the generated 5th-95th percentile range; shared-field",
        "and text-field tokens within 15% of the labelled sample; prompt tokens per row within",
        "15% of the labelled sample's (movies, products, posts) or of the paper's count (beer,",
        "rag). Where GGR and `sorted` differ on these tables is measured by",
        "`python benchmarks/bench_datasets.py` (`data/ORDERINGS.md`).",
        "",
    ]
    return lines


def render_readme(
    shipped: list[str], samples: dict, presets: dict[str, TableStats], details: list[str]
) -> str:
    """The whole README: ``shipped`` (table of shipped files) and ``details`` (their
    sections) come from `ggr_kv.datasets.generate`."""
    return "\n".join(
        shipped
        + _presets_section(presets)
        + _comparison_section(samples, presets)
        + _fields_section(samples, presets)
        + details
    )


def load_samples(path: Path) -> dict:
    """``data/samples.json`` (written by ``generate --samples``)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
