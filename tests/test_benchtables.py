"""The tables benchmarks and experiments share (`ggr_kv.datasets.benchtables`)."""

from __future__ import annotations

from ggr_kv.datasets import DATASETS, load_dataset
from ggr_kv.datasets.benchtables import (
    GENERIC_QUERY,
    SYNTHETIC_FDS,
    bench_tables,
    first_query,
    synthetic_reviews,
)


def test_synthetic_reviews_are_seeded_and_keep_their_fd_group():
    a, b = synthetic_reviews(2000, seed=1), synthetic_reviews(2000, seed=1)
    assert a.equals(b) and not a.equals(synthetic_reviews(2000, seed=2))
    assert a.shape == (2000, 8) and a["review_id"].is_unique
    (group,) = SYNTHETIC_FDS
    # the title determines the movie's other fields: one value of each per title
    assert (a.groupby(group[0])[list(group[1:])].nunique() == 1).all().all()
    assert 1 < a["movie_title"].nunique() < 2000  # repeated movies: prefixes to share


def test_bench_tables_are_the_bundled_ones_then_the_real_samples(tmp_path):
    (tmp_path / "mine.csv").write_text("a,b\nx,1\ny,2\n")
    labels = [label for label, _ in bench_tables(tmp_path)]
    assert labels == [*sorted(DATASETS), "mine"]
    assert [label for label, _ in bench_tables(tmp_path / "missing")] == sorted(DATASETS)


def test_first_query_is_the_tables_first_query_else_the_generic_one(tmp_path):
    movies = load_dataset("movies", n=5, sample="head")
    assert first_query(movies) == movies.query(movies.query_types[0]).text
    (tmp_path / "plain.csv").write_text("a,b\nx,1\n")
    plain = load_dataset(tmp_path / "plain.csv")  # a table nobody declared queries for
    assert plain.query_types == ()
    assert first_query(plain) == GENERIC_QUERY and first_query(plain, "Say hi.") == "Say hi."
