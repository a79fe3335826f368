"""Generated tables at any size: names, reproducible bytes, a cache that is never stale,
preset sizes, structure like the paper's samples, and where `sorted` and GGR differ."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, shared_datasets_dir

from ggr_kv.core.tokenizer import load_tokenizer
from ggr_kv.datasets import DATASETS, DatasetError, dataset_path, list_datasets, load_dataset
from ggr_kv.datasets import cache as cache_mod
from ggr_kv.datasets.cache import CACHE_ENV, cache_dir, generator_version
from ggr_kv.datasets.families import FAMILIES, SEED
from ggr_kv.datasets.names import MAX_ROWS, MIN_ROWS, parse_name
from ggr_kv.datasets.readme import PAPER, SHARED_FIELD, load_samples, measure_samples
from ggr_kv.datasets.stats import table_stats

SAMPLES_JSON = ROOT / "data" / "samples.json"


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch) -> Path:
    """An empty cache folder for this test only."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- names ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, family, rows, seed",
    [
        ("movies@15000", "movies", 15000, SEED),
        ("movies@15k", "movies", 15000, SEED),
        ("Movies@15_000", "movies", 15000, SEED),
        ("beer@paper", "beer", 28479, SEED),
        ("products@paper", "products", 14890, SEED),
        ("posts@paper", "posts", 14920, SEED),
        ("rag@paper", "rag", 22665, SEED),
        ("rag@300,seed=7", "rag", 300, 7),
        ("shortgroups", "shortgroups", FAMILIES["shortgroups"].preset_rows, SEED),
    ],
)
def test_generated_names_parse(text, family, rows, seed):
    gen = parse_name(text, tuple(DATASETS))
    assert (gen.family, gen.rows, gen.seed) == (family, rows, seed)


def test_bundled_names_stay_the_shipped_files():
    assert parse_name("movies", tuple(DATASETS)) is None
    ds = load_dataset("movies")
    assert ds.n_rows == 1500 and ds.generator is None
    assert ds.source == str(ROOT / "data" / "movies.csv")


@pytest.mark.parametrize(
    "name, match",
    [
        ("moviez@100", r"unknown dataset 'moviez@100'.*movies@ROWS.*movies@paper \(15000 rows\)"),
        ("moviez", r"bundled: \['movies', 'products', 'posts', 'beer', 'rag'\].*shortgroups@ROWS"),
        ("movies@abc", r"bad size or seed after '@'.*FAMILY@ROWS"),
        ("movies@15000,seed=x", r"bad size or seed"),
        (f"movies@{MIN_ROWS - 1}", rf"{MIN_ROWS - 1} rows is outside {MIN_ROWS}-{MAX_ROWS}"),
        (f"beer@{MAX_ROWS + 1}", rf"{MAX_ROWS + 1} rows is outside"),
    ],
)
def test_bad_names_say_what_is_valid_in_one_line(name, match, tmp_cache):
    with pytest.raises(DatasetError, match=match) as e:
        load_dataset(name)
    assert "\n" not in str(e.value)
    assert not tmp_cache.exists()  # nothing generated for a bad name


# -- generation, cache, reproducibility ----------------------------------------------------
def test_a_generated_name_loads_as_a_dataset(tmp_cache):
    ds = load_dataset("movies@1234")
    fam = FAMILIES["movies"]
    assert ds.name == "movies@1234" and ds.n_rows == ds.total_rows == 1234
    assert ds.columns == fam.columns and ds.kind == "movies"
    assert ds.fds == list(fam.fds) and ds.one_way_fds == list(fam.one_way_fds)
    assert ds.query_types == ("filter", "projection", "multi_llm", "aggregation")
    assert ds.generator == {
        "family": "movies",
        "rows": 1234,
        "seed": SEED,
        "version": generator_version("movies"),
    }
    assert ds.metadata()["generator"] == ds.generator
    assert Path(ds.source).parent == tmp_cache == cache_dir()
    assert dataset_path("movies@1234") == Path(ds.source)
    sample = load_dataset("movies@1234", n=100, seed=3)
    assert sample.frame.equals(ds.frame.iloc[sample.source_rows].reset_index(drop=True))


def test_loading_the_cached_file_by_path_gives_the_same_dataset(tmp_cache):
    """A run records the cached file as its source; reloading it keeps name, FDs, generator."""
    by_name = load_dataset("shortgroups@200")
    by_path = load_dataset(by_name.source)
    assert by_path.frame.equals(by_name.frame)
    assert (by_path.kind, by_path.fds, by_path.generator) == (
        by_name.kind,
        by_name.fds,
        by_name.generator,
    )
    assert by_path.name == "shortgroups@200"


@pytest.mark.subprocess
def test_same_name_same_bytes_across_processes(tmp_cache, tmp_path):
    """Another process, another hash seed, another cache: byte-identical files."""
    names = ["movies@700", "products@600", "posts@500", "beer@900", "rag@400", "shortgroups@300"]
    here = {n: _sha(dataset_path(n)) for n in names}
    other = tmp_path / "other-cache"
    code = (
        "import hashlib, json; from ggr_kv.datasets import dataset_path; "
        f"print(json.dumps({{n: hashlib.sha256(dataset_path(n).read_bytes()).hexdigest() "
        f"for n in {names!r}}}))"
    )
    env = {**os.environ, CACHE_ENV: str(other), "PYTHONHASHSEED": "12345",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=tmp_path)  # fmt: skip
    assert json.loads(out.stdout.strip().splitlines()[-1]) == here
    assert len(list(other.glob("*.csv"))) == len(names)


def test_seed_and_rows_are_part_of_the_key(tmp_cache):
    a = dataset_path("beer@500")
    b = dataset_path("beer@500,seed=1")
    c = dataset_path("beer@501")
    assert len({a, b, c}) == 3
    assert a.read_bytes() != b.read_bytes()
    assert dataset_path("beer@500") == a  # the cached file, read again
    assert load_dataset("beer@500,seed=1").generator["seed"] == 1


def test_a_new_generator_version_never_reads_an_old_file(tmp_cache, monkeypatch):
    old = dataset_path("posts@300")
    old_bytes = old.read_bytes()
    monkeypatch.setattr(cache_mod, "generator_version", lambda family: "0123456789ab")
    new = dataset_path("posts@300")
    assert new != old and new.name.endswith("-0123456789ab.csv")
    assert old.read_bytes() == old_bytes  # the old file is left alone, not reused
    assert new.read_bytes() == old_bytes  # same generator code here, so the same rows


def test_version_hashes_the_generator_source():
    versions = {n: generator_version(n) for n in FAMILIES}
    assert all(len(v) == 12 for v in versions.values())
    assert versions["movies"] != versions["shortgroups"]  # same module, other family
    assert len(set(versions.values())) == len(versions)


def test_a_damaged_cache_file_is_made_again(tmp_cache):
    path = dataset_path("rag@120")
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # e.g. a disk that filled up
    assert dataset_path("rag@120").read_bytes() == good


@pytest.mark.subprocess
def test_default_cache_is_gitignored_in_the_checkout(monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert cache_dir() == ROOT / ".cache" / "datasets"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(cache_dir() / "x.csv")], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0


def test_list_datasets_offers_the_presets():
    df = list_datasets().set_index("name")
    for name, fam in FAMILIES.items():
        row = df.loc[f"{name}@paper"]
        assert row["rows"] == fam.preset_rows and row["source"] == "generated"
        assert row["columns"] == len(fam.columns)
    assert (df.loc[list(DATASETS), "source"] == "bundled").all()


# -- the presets at full size (slow: ~2-10 s each to generate, cached afterwards) ----------
@pytest.fixture(scope="module")
def presets() -> dict:
    return {n: load_dataset(f"{n}@paper") for n in FAMILIES}


@pytest.mark.slow
def test_preset_sizes_are_the_papers(presets):
    for name, (rows, _) in PAPER.items():
        assert presets[name].n_rows == FAMILIES[name].preset_rows == rows
    assert presets["shortgroups"].n_rows == 12000


@pytest.mark.slow
def test_presets_keep_their_fd_groups(presets):
    for name, ds in presets.items():
        assert ds.fds == list(FAMILIES[name].fds), name
        assert ds.one_way_fds == list(FAMILIES[name].one_way_fds), name
        assert not any("dropped" in n for n in ds.notes), name
        assert not ds.frame.isna().any().any(), name


@pytest.mark.slow
def test_original_order_scatters_the_groups(presets):
    """Rows are in time (or random) order, not grouped by key: reordering has work to do."""
    for name, fam in FAMILIES.items():
        if fam.key is None:
            continue
        key = presets[name].frame[fam.key].to_numpy()
        runs = 1 + int((key[1:] != key[:-1]).sum())
        assert runs > 0.5 * len(key), (name, runs)


@pytest.mark.slow
def test_shortgroups_has_short_groups_under_a_long_prefix(presets):
    f = presets["shortgroups"].frame
    sizes = f.groupby("movieinfo").size()
    assert sizes.between(1, 4).all() and (sizes == 1).sum() <= 1  # the last movie takes the rest
    assert abs(sizes.mean() - 3) < 0.1
    tok = load_tokenizer("llama3")
    info = tok.count(list(sizes.index), add_special_tokens=False)
    assert info.min() >= 300 and info.max() <= 500


# -- structure against the paper's samples ---------------------------------------------------
@pytest.fixture(scope="module")
def preset_stats(presets) -> dict:
    from ggr_kv.datasets.readme import _query_text

    return {
        n: table_stats(ds.frame, n, FAMILIES[n].key, query=_query_text(FAMILIES[n].kind))
        for n, ds in presets.items()
    }


def _labelled(family: str) -> dict:
    return load_samples(SAMPLES_JSON)["samples"][f"{family}_sampled_labelled.csv"]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["movies", "products", "posts"])
def test_keys_in_100_rows_match_the_papers_sample(preset_stats, family):
    """The real 100-row sample's distinct keys lie in the generated 5-95% range."""
    real, gen = _labelled(family), preset_stats[family]
    assert gen.keys_in_100_lo <= real["keys_in_100"] <= gen.keys_in_100_hi, (real, gen)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["movies", "products", "posts"])
def test_field_and_prompt_tokens_match_the_papers_sample(preset_stats, family):
    real, gen = _labelled(family), preset_stats[family]
    text = {"movies": "reviewcontent", "products": "text", "posts": "Text"}[family]
    for col in (SHARED_FIELD[family], text):
        assert gen.field_tokens[col] == pytest.approx(real["field_tokens"][col], rel=0.15), col
    assert gen.prompt_tokens == pytest.approx(real["prompt_tokens"], rel=0.15)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["beer", "rag"])
def test_prompt_tokens_match_the_papers_average(preset_stats, family):
    """No real sample of beer or SQuAD here: the paper's average input tokens per row."""
    assert preset_stats[family].prompt_tokens == pytest.approx(PAPER[family][1], rel=0.15)


@pytest.mark.slow
def test_samples_json_matches_the_real_samples():
    """``data/samples.json`` is what measuring ``../shared/datasets`` gives now."""
    folder = shared_datasets_dir()
    if not folder.is_dir():
        from conftest import shared_path

        shared_path("movies_small.csv")  # skips, and the session summary says why
    assert measure_samples(folder) == load_samples(SAMPLES_JSON)


# -- where sorted and GGR differ ---------------------------------------------------------------
def _block_rates(ds) -> tuple[dict, dict]:
    from ggr_kv.reorder import reorder
    from ggr_kv.reorder.metrics import score

    table, query = ds.table(), ds.query(ds.query_types[0]).text
    plans, rates = {}, {}
    for m in ("sorted", "ggr"):
        plans[m] = reorder(table, m, fds=ds.fds or None).plan
        rates[m] = score(table, plans[m], query=query, tokenizer="llama3", block_size=16)
    return plans, {m: s.block_hit_rate for m, s in rates.items()}


def _same_plan(a, b) -> bool:
    return np.array_equal(a.row_order, b.row_order) and np.array_equal(a.field_perm, b.field_perm)


@pytest.mark.slow
def test_ggr_beats_sorted_on_rag():
    """Retrieved passages swap places between questions; GGR picks each group's order."""
    plans, rates = _block_rates(load_dataset("rag@4000"))
    assert not _same_plan(plans["sorted"], plans["ggr"])
    assert rates["ggr"] - rates["sorted"] > 0.03, rates


@pytest.mark.slow
def test_ggr_pick_closes_most_of_sorted_lead_on_beer():
    """Short frequent score fields win GGR's len^2 * count rule but save little: with our
    settings alone ggr is >3 points under sorted here; its default pick of the paper's
    settings (`ggr_kv.reorder.ggrpick`) leaves less than 1 point."""
    from ggr_kv.reorder import reorder
    from ggr_kv.reorder.metrics import score

    ds = load_dataset("beer@paper")
    plans, rates = _block_rates(ds)
    assert not _same_plan(plans["sorted"], plans["ggr"])
    assert rates["sorted"] - rates["ggr"] < 0.01, rates
    table, query = ds.table(), ds.query(ds.query_types[0]).text
    ours = reorder(table, "ggr", fds=ds.fds or None, pick=False).plan
    alone = score(table, ours, query=query, tokenizer="llama3", block_size=16).block_hit_rate
    assert rates["sorted"] - alone > 0.03, (rates, alone)


@pytest.mark.slow
def test_sorted_equals_ggr_on_one_key_hierarchies():
    """posts is question -> comments only: both orderings find the same sharing."""
    _, rates = _block_rates(load_dataset("posts@3000"))
    assert abs(rates["ggr"] - rates["sorted"]) < 0.005, rates


@pytest.mark.slow
def test_tables_scale_by_keys_not_rows_per_key(tmp_cache):
    """Twice the rows, about twice the keys: rows per key (and sharing) stay put."""
    small = load_dataset("posts@1900").frame["PostId"].nunique()
    big = load_dataset("posts@3800").frame["PostId"].nunique()
    assert 1.7 < big / small < 2.3
    assert pd.Series([1900 / small, 3800 / big]).between(15, 25).all()
