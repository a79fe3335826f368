"""FD discovery, declared-group checks and their errors, against plain recounts."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from conftest import shared_path
from hypothesis import given, settings
from hypothesis import strategies as st

from ggr_kv.core.table import Table, TableError
from ggr_kv.reorder import reorder
from ggr_kv.reorder.fd import (
    FDWarning,
    check_fd_group,
    discover_fd_groups,
    discover_fds,
    fd_confidence,
    fd_groups,
    resolve_fd_groups,
)

LABELS = ["manual_labels", "gpt4o", "llama3-8b", "llama3-70b", "Unnamed: 0"]


def shared_csv(name: str) -> Path:
    return shared_path(name)


def sample_table(name: str) -> Table:
    df = pd.read_csv(shared_csv(name), dtype=str, keep_default_na=False)
    return Table.from_frame(df.drop(columns=[c for c in LABELS if c in df.columns]))


def direct_consistent(a: list[str], b: list[str]) -> int:
    """Rows whose b is the most common b of their a value."""
    by_a: dict[str, Counter] = {}
    for x, y in zip(a, b):
        by_a.setdefault(x, Counter())[y] += 1
    return sum(c.most_common(1)[0][1] for c in by_a.values())


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 40).flatmap(
        lambda n: st.tuples(
            st.lists(st.sampled_from("abcde"), min_size=n, max_size=n),
            st.lists(st.sampled_from(["x", "y", "zz", ""]), min_size=n, max_size=n),
        )
    )
)
def test_confidence_matches_a_direct_recount(cols):
    a, b = cols
    t = Table.from_frame(pd.DataFrame({"a": a, "b": b}))
    fd = fd_confidence(t, "a", "b")
    ok = direct_consistent(a, b)
    assert fd.violations == len(a) - ok
    assert fd.confidence == pytest.approx(ok / len(a))
    assert fd.n_distinct == len(set(a)) and fd.n_distinct_dependent == len(set(b))


def test_discover_finds_the_movies_fd_group():
    path = shared_csv("movies_small.csv")
    groups = discover_fd_groups(path)
    assert groups == [("rotten_tomatoes_link", "movie_title", "movie_info")]
    fds = discover_fds(path)
    pairs = {(f.determinant, f.dependent) for f in fds}
    group = ("rotten_tomatoes_link", "movie_title", "movie_info")
    assert {(x, y) for x in group for y in group if x != y} <= pairs
    assert all(f.confidence == 1.0 and f.violations == 0 for f in fds)
    # the unique id determines everything, trivially: skipped unless asked for
    assert not any(f.determinant == "id" for f in fds)
    wide = discover_fds(path, max_distinct_fraction=1.0)
    assert ("id", "movie_title") in {(f.determinant, f.dependent) for f in wide}


@pytest.mark.parametrize(
    "fname,group",
    [
        ("movies_sampled_labelled.csv", ("movieinfo", "movietitle", "rottentomatoeslink")),
        ("products_sampled_labelled.csv", ("product_title", "parent_asin")),
        ("posts_sampled_labelled.csv", ("PostId", "Body")),
    ],
)
def test_readme_fd_groups_hold_on_the_samples(fname, group):
    t = sample_table(fname)
    chk = check_fd_group(t, group)
    assert chk.holds and chk.violations == 0 and chk.confidence == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", FDWarning)  # an exact group must not warn
        groups, _ = resolve_fd_groups(t, [group])
    assert [tuple(t.columns[i] for i in g) for g in groups] == [group]


def test_min_confidence_admits_approximate_fds():
    # city -> state holds except for one row out of 10
    df = pd.DataFrame(
        {
            "city": ["Paris"] * 5 + ["Lyon"] * 5,
            "state": ["IDF"] * 4 + ["ARA"] + ["ARA"] * 5,
            "row": [str(i) for i in range(10)],
        }
    )
    exact = {(f.determinant, f.dependent) for f in discover_fds(df)}
    assert ("city", "state") not in exact
    approx = {(f.determinant, f.dependent): f for f in discover_fds(df, min_confidence=0.9)}
    f = approx[("city", "state")]
    assert f.confidence == pytest.approx(0.9) and f.violations == 1
    with pytest.raises(ValueError, match="min_confidence"):
        discover_fds(df, min_confidence=1.5)


def test_fd_groups_need_both_directions():
    df = pd.DataFrame(
        {
            "title": ["A", "A", "B", "C"],
            "link": ["a", "a", "b", "c"],  # 1:1 with title
            "genre": ["g", "g", "g", "h"],  # title -> genre only
        }
    )
    fds = discover_fds(df, max_distinct_fraction=1.0)
    assert ("title", "genre") in {(f.determinant, f.dependent) for f in fds}
    assert fd_groups(fds, df.columns) == [("title", "link")]


def test_group_check_counts_violations_of_the_worst_member():
    df = pd.DataFrame(
        {
            "title": ["A", "A", "A", "B", "B", "C"],
            "info": ["x", "x", "y", "z", "z", "z"],
        }
    )
    chk = check_fd_group(df, ("title", "info"))
    # title -> (title, info): "A" comes with x twice and y once, 1 row breaks;
    # info -> (title, info): "z" comes with B twice and C once, 1 row breaks
    # (the worst member counts)
    assert chk.violations == 1 and not chk.holds
    assert chk.confidence == pytest.approx(5 / 6)
    t = Table.from_frame(df)
    with pytest.warns(FDWarning, match=r"\('title', 'info'\) is not an exact FD: 1 of 6 rows"):
        resolve_fd_groups(t, [("title", "info")])


def test_declared_group_errors_name_the_column():
    t = Table.from_frame(pd.DataFrame({"title": ["a"], "info": ["b"], "genre": ["c"]}))
    with pytest.raises(TableError, match=r"no column 'tilte'.*\['title', 'info', 'genre'\]"):
        resolve_fd_groups(t, [("tilte", "info")])
    with pytest.raises(TableError, match="'info' is in two FD groups"):
        resolve_fd_groups(t, [("title", "info"), ("info", "genre")])
    with pytest.raises(TableError, match="single name"):
        resolve_fd_groups(t, ["title"])
    with pytest.raises(TableError, match="repeats a column"):
        resolve_fd_groups(t, [("title", "title")])
    with pytest.raises(ValueError, match="'auto' or None"):
        resolve_fd_groups(t, "everything")


def test_reorder_with_auto_fds_uses_the_discovered_group():
    path = shared_csv("movies_small.csv")
    res = reorder(path, "ggr", fds="auto")
    assert [sorted(g) for g in res.info["fd_groups"]] == [
        sorted(["rotten_tomatoes_link", "movie_title", "movie_info"])
    ]
    t = Table.from_frame(pd.read_csv(path, dtype=str, keep_default_na=False))
    idx = sorted(t.col_index(c) for c in ("rotten_tomatoes_link", "movie_title", "movie_info"))
    for row in res.plan.field_perm.tolist():
        pos = sorted(row.index(c) for c in idx)
        assert pos == list(range(pos[0], pos[0] + 3))
