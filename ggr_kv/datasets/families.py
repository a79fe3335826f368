"""Generated tables at any size: the generator families and their paper-scale presets.

A family is a seeded generator of `ggr_kv.datasets.gen` with knobs chosen so that its
tables have the structure of one of the GGR paper's real tables (rows per key, field
lengths in tokens, FD groups), measured against the paper's samples in ``data/README.md``.
The number of keys grows with the row count, so rows per key (and so prefix sharing)
stays the same at any size. ``movies@15000`` is the movies family at 15,000 rows;
``movies@paper`` the paper's row count (`Family.preset_rows`).

The shipped tables in ``data/`` are the same generators at their default knobs (small
demo tables); they are not these families at 1,500 rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ggr_kv.datasets.gen import beer, movies, posts, products, rag

__all__ = ["FAMILIES", "SEED", "Family"]

#: the seed of the shipped files and the default seed of every generated table
SEED = 20250409

Progress = Callable[[int], object] | None
Rows = list[tuple[str, ...]]


@dataclass(frozen=True)
class Family:
    """A generator family (see the module notes).

    Attributes
    ----------
    name : what a user types before ``@`` (``movies`` in ``movies@15000``).
    kind : query family in `ggr_kv.datasets.queries`.
    module : the `ggr_kv.datasets.gen` module that makes the rows (its source is part of
        the cache key).
    columns : field names, in file order.
    fds : FD groups (columns that determine each other one to one).
    one_way_fds : ``(determinant, dependent)`` pairs that hold one way only.
    key : the column that defines a group (a movie, a post) for the statistics, or None.
    preset_rows : rows of the ``@paper`` preset (the paper's table size).
    make : ``make(seed, rows, progress)`` -> rows (tuples of text cells).
    description : one paragraph for people.
    """

    name: str
    kind: str
    module: str
    columns: tuple[str, ...]
    fds: tuple[tuple[str, ...], ...]
    one_way_fds: tuple[tuple[str, str], ...]
    key: str | None
    preset_rows: int
    make: Callable[[int, int, Progress], Rows]
    description: str


def _movies(seed: int, rows: int, progress: Progress) -> Rows:
    shape = movies.MovieShape(skew=0.3, info_words=(40, 90), review_words=(8, 32), subtitles=True)
    return movies.generate(seed, rows, max(5, round(rows / 200)), shape, progress)


def _short_groups(seed: int, rows: int, progress: Progress) -> Rows:
    return movies.generate_short_groups(seed, rows, (2, 4), progress=progress)


def _products(seed: int, rows: int, progress: Progress) -> Rows:
    n = max(5, round(rows / 50))
    shape = products.ProductShape(
        sellers=max(3, n // 4),
        descriptions=(1, 3),
        copy_paras=(2, 4),
        generic_paras=(3, 9),
        boilerplate=(1, 4),
        title_bits=(2, 4),
        title_keywords=(0, 2),
        review_words=(5, 30),
    )
    return products.generate(seed, rows, n, shape, progress)


def _posts(seed: int, rows: int, progress: Progress) -> Rows:
    shape = posts.PostShape(skew=0.3, output_blocks=1.6, comment_words=(15, 80))
    return posts.generate(seed, rows, max(5, round(rows / 19)), shape, progress)


def _beer(seed: int, rows: int, progress: Progress) -> Rows:
    n = max(5, round(rows / 50))
    shape = beer.BeerShape(brewers=max(5, n // 10), users=max(10, rows // 40), user_skew=1.0,
                           paper_layout=True)  # fmt: skip
    return beer.generate(seed, rows, n, shape, progress)


def _rag(seed: int, rows: int, progress: Progress) -> Rows:
    shape = rag.RagShape(background=(4, 8), paraphrases=2, compound_names=True, neighbors=2,
                         noise=0.01)  # fmt: skip
    return rag.generate(seed, rows, max(2, math.ceil(rows / 14)), shape, progress)


_MOVIE_FDS = (("movieinfo", "movietitle", "rottentomatoeslink"),)
_MOVIE_ONE_WAY = (("movietitle", "genres"), ("movietitle", "productioncompany"))

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "movies", "movies", "movies", movies.COLUMNS, _MOVIE_FDS, _MOVIE_ONE_WAY,
            "movieinfo", 15000, _movies,
            "Rotten Tomatoes-style critic reviews: one movie per 200 rows on average "
            "(mild popularity skew), a 40-90 word synopsis repeated on each of its reviews, "
            "8-32 word reviews, rows in review-time order.",
        ),
        Family(
            "products", "products", "products", products.COLUMNS,
            (("product_title", "parent_asin"),), (("parent_asin", "description"),),
            "parent_asin", 14890, _products,
            "Amazon-style reviews of handmade products: one product per 50 rows (Zipf "
            "popularity), keyword-stuffed titles, long multi-paragraph descriptions that a "
            "seller shares across its products, rows in review-time order.",
        ),
        Family(
            "posts", "posts", "posts", posts.COLUMNS, (("PostId", "Body"),),
            (("PostId", "PostDate"),), "PostId", 14920, _posts,
            "BIRD-style forum questions joined with their comments: one question per 19 rows, "
            "long HTML bodies with pasted console output (a few very long), rows in "
            "comment-time order.",
        ),
        Family(
            "beer", "beer", "beer", beer.PAPER_COLUMNS, (("beer/beerId", "beer/name"),),
            (("beer/beerId", "beer/style"),), "beer/beerId", 28479, _beer,
            "RateBeer reviews in the paper's nine fields (no review text): one beer per 50 rows "
            "and one reviewer per 40, both Zipf-popular, with short frequent score fields, so "
            "beer, reviewer and scores compete as the shared prefix; rows in review-time order.",
        ),
        Family(
            "rag", "rag", "rag", rag.COLUMNS, (), (), None, 22665, _rag,
            "SQuAD-style questions with the top-5 passages of a retriever: about 4-5 questions "
            "per passage, passages of 110-190 words from the question's subject and two "
            "neighbouring subjects; questions on one passage retrieve nearly the same list, "
            "small score noise swaps neighbours; rows in random order.",
        ),
        Family(
            "shortgroups", "movies", "movies", movies.COLUMNS, _MOVIE_FDS, _MOVIE_ONE_WAY,
            "movieinfo", 12000, _short_groups,
            "Short groups under a long shared prefix, for group-aware sharding: "
            "2-4 reviews per movie, each under a 300-500-token movie page (synopsis, cast, "
            "crew, release details, critics consensus); rows in review-time order, so a "
            "movie's reviews are scattered.",
        ),
    )
}
