"""Bundled and real datasets: FD groups that hold, realistic order, sampling, clear errors."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path

from ggr_kv.core.table import TableError, load_table
from ggr_kv.datasets import (
    DATASETS,
    LABEL_COLUMNS,
    Dataset,
    DatasetError,
    data_dirs,
    dataset_path,
    list_datasets,
    load_dataset,
)
from ggr_kv.datasets.generate import SEED, main, render_csv, write_all

REPO = Path(__file__).resolve().parents[1]
NAMES = list(DATASETS)


def needs_shared(name: str) -> Path:
    return shared_path(name)


@pytest.fixture(scope="module")
def bundled() -> dict[str, Dataset]:
    return {name: load_dataset(name) for name in NAMES}


def assert_fd_group(frame: pd.DataFrame, group: tuple[str, ...]) -> None:
    """Every column of the group determines every other one (1:1 within the group)."""
    for c in group:
        others = [o for o in group if o != c]
        per_value = frame.groupby(c, dropna=False)[others].nunique(dropna=False)
        assert (per_value <= 1).all().all(), f"{c} does not determine {others}"


# -- bundled tables ------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_bundled_dataset_matches_its_spec(bundled, name):
    ds, spec = bundled[name], DATASETS[name]
    assert ds.name == name and ds.kind == spec.kind
    assert ds.n_rows == spec.rows == ds.total_rows
    assert ds.columns == spec.columns
    assert ds.fds == list(spec.fds) and ds.one_way_fds == list(spec.one_way_fds)
    assert ds.query_types == spec.query_types
    assert ds.sample == "all" and ds.notes == ()
    assert not ds.frame.isna().any().any(), "bundled tables have no empty cells"
    assert ds.source_rows.tolist() == list(range(spec.rows))


@pytest.mark.parametrize("name", [n for n in NAMES if DATASETS[n].fds])
def test_declared_fd_groups_hold_and_share_long_values(bundled, name):
    ds = bundled[name]
    for group in ds.fds:
        assert set(group) <= set(ds.columns)
        assert_fd_group(ds.frame, group)
        # a group value repeats on many rows, which is what GGR exploits
        assert ds.frame[group[0]].nunique() <= ds.n_rows / 4
    for det, dep in ds.one_way_fds:
        assert ds.frame.groupby(det)[dep].nunique().max() == 1


def test_products_description_is_one_way_only(bundled):
    f = bundled["products"].frame
    assert f.groupby("description")["parent_asin"].nunique().max() > 1


@pytest.mark.parametrize("name", [n for n in NAMES if DATASETS[n].fds])
def test_original_order_interleaves_groups(bundled, name):
    """Rows are not grouped by the FD key: GGR has work to do."""
    key = bundled[name].frame[DATASETS[name].fds[0][0]].to_numpy()
    runs = 1 + int((key[1:] != key[:-1]).sum())
    assert runs > 3 * len(set(key)), (runs, len(set(key)))


def test_rag_contexts_come_from_a_shared_pool(bundled):
    f = bundled["rag"].frame
    ctx = f[[f"context{i}" for i in range(1, 6)]]
    assert f["question"].is_unique
    pool = pd.unique(ctx.to_numpy().ravel())
    assert len(pool) < 0.15 * ctx.size  # the same passages recur across questions
    # and a passage shows up in different positions for different questions
    positions = ctx.melt(value_name="p").groupby("p")["variable"].nunique()
    assert (positions > 1).mean() > 0.5
    assert (ctx.nunique(axis=1) == 5).all()  # no passage twice in one row


def test_text_lengths_resemble_the_papers(bundled):
    words = lambda s: s.str.split().str.len()
    movies = bundled["movies"].frame
    assert words(movies["movieinfo"]).between(60, 120).all()
    assert words(movies["reviewcontent"]).between(10, 40).all()
    products = bundled["products"].frame
    assert words(products["text"]).between(10, 40).all()
    assert products["description"].str.startswith("[").all()  # a list repr, as in the paper
    posts = bundled["posts"].frame
    assert posts["Body"].str.startswith("<p>").all()
    assert posts["Body"].str.len().mean() > 3 * posts["Text"].str.len().mean()


@pytest.mark.parametrize(
    "name, column",
    [
        ("movies", "reviewcontent"),
        ("products", "text"),
        ("posts", "Text"),
        ("beer", "review/text"),
        ("rag", "question"),
    ],
)
def test_per_row_text_is_unique(bundled, name, column):
    """Each row has its own review or question, as in the real tables."""
    assert bundled[name].frame[column].is_unique


def test_average_row_is_hundreds_of_tokens_long(bundled):
    """~4 characters per token: movies rows are a few hundred tokens, like the paper's 276."""
    for name, ds in bundled.items():
        chars = ds.frame.apply(lambda s: s.str.len()).sum(axis=1).mean()
        assert 250 < chars < 2000, (name, chars)


def test_dataset_table_equals_loading_the_file(bundled):
    ds = bundled["beer"]
    t = ds.table()
    ref = load_table(dataset_path("beer"))
    assert t.columns == ref.columns
    assert (t.cells == ref.cells).all()


def test_list_datasets_describes_every_bundled_table():
    df = list_datasets()
    bundled = df[df["source"] == "bundled"]
    assert bundled["name"].tolist() == NAMES
    assert bundled["rows"].tolist() == [DATASETS[n].rows for n in NAMES]
    assert bundled["query_types"].tolist() == [list(DATASETS[n].query_types) for n in NAMES]


# -- shipped files ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data")
    write_all(out, SEED, readme=False)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("fname", [DATASETS[n].filename for n in NAMES])
def test_regenerating_from_the_seed_reproduces_shipped_files(regenerated, fname):
    shipped = data_dirs()[0] / fname
    assert shipped.read_bytes() == (regenerated / fname).read_bytes(), (
        f"{fname} differs from its seed; run `python -m ggr_kv.datasets.generate`"
    )


@pytest.mark.slow
def test_generate_check_passes_on_the_shipped_folder(capsys):
    """`python -m ggr_kv.datasets.generate --check`: CSVs and README (with the presets'
    statistics, generated into the cache if needed) are what the generators give."""
    assert main(["--check", "--no-progress"]) == 0, capsys.readouterr().err


def test_another_seed_gives_another_table():
    assert render_csv("beer", SEED + 1) != dataset_path("beer").read_bytes()


@pytest.mark.slow
def test_generate_check_reports_missing_or_stale_files(tmp_path, capsys):
    assert main(["--check", "--out", str(tmp_path), "--no-readme"]) == 1
    assert "movies.csv" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # --check writes nothing


def test_shipped_data_stays_small():
    """Paper-scale tables are generated on demand, never committed."""
    total = sum(p.stat().st_size for p in data_dirs()[0].iterdir() if p.is_file())
    assert total < 5.5e6


def test_wheel_data_location_matches_pyproject():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = cfg["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    checkout, wheel = data_dirs()
    assert checkout == REPO / "data"
    assert include["data"] == wheel.relative_to(REPO).as_posix()


# -- sampling --------------------------------------------------------------------------------
def test_random_sample_is_reproducible_and_keeps_file_order(bundled):
    a = load_dataset("movies", n=100, seed=7)
    b = load_dataset("movies", n=100, seed=7)
    c = load_dataset("movies", n=100, seed=8)
    assert a.source_rows.tolist() == b.source_rows.tolist()
    assert a.frame.equals(b.frame)
    assert a.source_rows.tolist() != c.source_rows.tolist()
    assert (np.diff(a.source_rows) > 0).all()
    full = bundled["movies"].frame
    assert a.frame.equals(full.iloc[a.source_rows].reset_index(drop=True))
    assert (a.sample, a.seed, a.n_rows, a.total_rows) == ("random", 7, 100, 1500)


def test_head_and_tail(bundled):
    full = bundled["posts"].frame
    head = load_dataset("posts", n=10, sample="head")
    tail = load_dataset("posts", n=10, sample="tail")
    assert head.frame.equals(full.iloc[:10].reset_index(drop=True))
    assert tail.frame.equals(full.iloc[-10:].reset_index(drop=True))
    assert tail.source_rows.tolist() == list(range(990, 1000))
    assert head.seed is None and tail.seed is None


def test_n_equal_to_the_table_keeps_every_row():
    ds = load_dataset("rag", n=700)
    assert ds.n_rows == 700 and ds.source_rows.tolist() == list(range(700))


@pytest.mark.parametrize("n", [1501, 10**6])
def test_n_larger_than_the_table_is_an_error(n):
    with pytest.raises(DatasetError, match=r"movies has 1500 rows.*n=None"):
        load_dataset("movies", n=n)


@pytest.mark.parametrize("n", [0, -3, 2.5, True, "10"])
def test_bad_n(n):
    with pytest.raises(DatasetError, match="n must be"):
        load_dataset("beer", n=n)


def test_bad_sample_mode():
    with pytest.raises(DatasetError, match=r"'middle'.*random.*head.*tail"):
        load_dataset("beer", n=5, sample="middle")


# -- errors ----------------------------------------------------------------------------------
def test_unknown_name_lists_the_datasets():
    with pytest.raises(DatasetError) as e:
        load_dataset("moviez")
    for name in NAMES:
        assert repr(name) in str(e.value)


def test_missing_file_and_bad_files(tmp_path):
    with pytest.raises(DatasetError, match="file not found"):
        load_dataset(tmp_path / "nope.csv")
    with pytest.raises(TableError, match="directory"):
        load_dataset(tmp_path)
    bad = tmp_path / "t.xlsx"
    bad.write_text("x")
    with pytest.raises(TableError, match="unknown table format"):
        load_dataset(bad)


def test_user_fd_groups_are_checked():
    ds = load_dataset("movies", fds=[("movietitle", "rottentomatoeslink")])
    assert ds.fds == [("movietitle", "rottentomatoeslink")]
    with pytest.raises(DatasetError, match=r"\['movietitle', 'reviewtype'\] does not hold"):
        load_dataset("movies", fds=[("movietitle", "reviewtype")])
    with pytest.raises(DatasetError, match=r"no column\(s\) \['nope'\].*Available columns"):
        load_dataset("movies", fds=[("movietitle", "nope")])
    with pytest.raises(DatasetError, match="two or more"):
        load_dataset("movies", fds=["movietitle"])


# -- the paper's real tables ---------------------------------------------------------------
@pytest.mark.parametrize(
    "fname, kind, group",
    [
        (
            "movies_sampled_labelled.csv",
            "movies",
            ("movieinfo", "movietitle", "rottentomatoeslink"),
        ),
        ("products_sampled_labelled.csv", "products", ("product_title", "parent_asin")),
        ("posts_sampled_labelled.csv", "posts", ("PostId", "Body")),
    ],
)
def test_labelled_samples_load_without_labels(fname, kind, group):
    path = needs_shared(fname)
    ds = load_dataset(path)
    assert ds.kind == kind and ds.name == path.stem and ds.n_rows == 100
    assert not set(LABEL_COLUMNS) & set(ds.columns)
    assert not any(c.startswith("Unnamed") for c in ds.columns)
    assert ds.labels is not None and list(ds.labels.columns) == ["index", *LABEL_COLUMNS]
    # "field: value" cells lose their prefix
    for c in ds.columns:
        assert not ds.frame[c].dropna().str.startswith(f"{c}: ").any()
    assert ds.fds == [group]
    assert_fd_group(ds.frame, group)
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert raw[group[0]].str.startswith(f"{group[0]}: ").all()


def test_labelled_sample_keeps_labels_aligned_and_prefixes_optional():
    path = needs_shared("movies_sampled_labelled.csv")
    full = load_dataset(path)
    part = load_dataset(path, n=10, seed=3)
    assert part.labels.equals(full.labels.iloc[part.source_rows].reset_index(drop=True))
    raw = load_dataset(path, strip_prefixes=False)
    assert raw.frame["reviewtype"].str.startswith("reviewtype: ").all()
    assert raw.fds == full.fds


def test_products_sample_declares_the_one_way_description():
    ds = load_dataset(needs_shared("products_sampled_labelled.csv"))
    assert ds.one_way_fds == [("parent_asin", "description")]


def test_demo_movies_and_unrecognized_tables():
    small = load_dataset(needs_shared("movies_small.csv"))
    assert small.kind == "movies_small"
    assert small.fds == [("rotten_tomatoes_link", "movie_title", "movie_info")]
    assert small.frame["review_content"].isna().sum() == 225  # empty cells stay missing
    other = load_dataset(needs_shared("contributions.csv"), n=50, sample="head")
    assert (other.kind, other.fds, other.query_types) == (None, [], ())


def _write(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    "fname, kind, fds",
    [
        ("BIRD.csv", "posts", [("PostId", "Body")]),
        ("beer.csv", "beer", [("beer/beerId", "beer/name")]),
        ("fever.csv", "fever", []),
        ("squad.csv", "rag", []),
    ],
)
def test_full_paper_layouts_are_recognized(bundled, tmp_path, fname, kind, fds):
    posts, beer, rag = bundled["posts"].frame, bundled["beer"].frame, bundled["rag"].frame
    frames = {
        "BIRD.csv": posts[["Body", "PostDate", "PostId", "Text"]],
        # the paper's beer.csv: nine RateBeer fields, no review text
        "beer.csv": beer[
            [
                "review/profileName",
                "review/time",
                "review/overall",
                "review/taste",
                "review/palate",
                "review/appearance",
                "beer/name",
                "beer/style",
                "beer/beerId",
            ]
        ],
        "fever.csv": rag.rename(
            columns={"question": "claim", **{f"context{i}": f"evidence{i}" for i in range(1, 6)}}
        ).drop(columns="evidence5"),
        "squad.csv": rag,
    }
    ds = load_dataset(_write(frames[fname].head(200), tmp_path / fname))
    assert ds.kind == kind and ds.fds == fds
    assert ds.query_types == (("rag",) if kind in ("fever", "rag") else ("filter", "projection"))


def test_parquet_files_load(bundled, tmp_path):
    path = tmp_path / "beer.parquet"
    bundled["beer"].frame.to_parquet(path)
    ds = load_dataset(path, n=20, sample="tail")
    assert ds.kind == "beer" and ds.fds == [("beer/beerId", "beer/name")]
    assert ds.frame.equals(bundled["beer"].frame.iloc[-20:].reset_index(drop=True))


def test_declared_group_that_does_not_hold_is_dropped_with_a_warning(bundled, tmp_path):
    df = bundled["products"].frame.head(50).copy()
    df.loc[1, "parent_asin"] = df.loc[0, "parent_asin"]  # two titles on one asin
    df.loc[1, "product_title"] = "a different title"
    path = _write(df, tmp_path / "products.csv")
    with pytest.warns(UserWarning, match=r"\['product_title', 'parent_asin'\] dropped"):
        ds = load_dataset(path)
    assert ds.fds == [] and any("dropped FD group" in n for n in ds.notes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_dataset(path, fds=[]).fds == []  # explicit groups replace declared ones
