"""Tables the benchmarks and experiments share (``benchmarks/``, ``experiments/``).

- `synthetic_reviews(n)`: a seeded movie-review-like table of any size, 8 columns, one
  FD group (`SYNTHETIC_FDS`): the speed benchmarks of the reorder methods.
- `bench_tables()`: every bundled table, then every real sample of the paper's artifact
  (``../shared/datasets`` beside a checkout, or ``$GGR_KV_SHARED_DATASETS``).
- `first_query(ds)`: the text of a table's first query (a generic one when it has none).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ggr_kv.core.paths import CHECKOUT_DIR
from ggr_kv.datasets.catalog import DATASETS, Dataset, load_dataset

#: environment variable naming the folder of the paper's real samples (as the tests read it)
SHARED_ENV = "GGR_KV_SHARED_DATASETS"
#: the FD group of `synthetic_reviews`
SYNTHETIC_FDS = [("movie_title", "movie_info", "movie_link")]
#: the query of a table that declares none
GENERIC_QUERY = "Summarize this row in one sentence."


def shared_datasets_dir() -> Path:
    """The folder of the real samples: ``$GGR_KV_SHARED_DATASETS``, else ``../shared/datasets``."""
    env = os.environ.get(SHARED_ENV)
    return Path(env).expanduser() if env else CHECKOUT_DIR.parent / "shared" / "datasets"


def bench_tables(shared: Path | None = None) -> list[tuple[str, Dataset]]:
    """(label, Dataset) of every bundled table, then of every real sample in ``shared``
    (default `shared_datasets_dir`; none when the folder is missing)."""
    out = [(name, load_dataset(name)) for name in sorted(DATASETS)]
    folder = shared_datasets_dir() if shared is None else Path(shared)
    if folder.is_dir():
        out += [(path.stem, load_dataset(path)) for path in sorted(folder.glob("*.csv"))]
    return out


def first_query(ds: Dataset, default: str = GENERIC_QUERY) -> str:
    """Text of the table's first query type, else ``default``."""
    return ds.query(ds.query_types[0]).text if ds.query_types else default


_WORDS = [
    "a",
    "bold",
    "funny",
    "and",
    "oddly",
    "moving",
    "film",
    "that",
    "never",
    "quite",
    "earns",
    "its",
    "ending",
    "but",
    "the",
    "cast",
    "is",
    "superb",
    "slow",
    "overlong",
    "messy",
    "brilliant",
    "tender",
    "cold",
    "predictable",
    "fresh",
    "smart",
    "dull",
    "vivid",
    "gripping",
    "clumsy",
    "elegant",
    "sharp",
    "loud",
    "quiet",
    "strange",
    "familiar",
]
_GENRES = [
    "Drama", "Comedy", "Action & Adventure", "Horror", "Documentary", "Romance",
    "Science Fiction & Fantasy", "Mystery & Suspense", "Animation", "Kids & Family",
    "Art House & International", "Musical & Performing Arts", "Classics", "Western",
    "Television", "Sports & Fitness", "Special Interest", "Cult Movies", "Anime & Manga",
    "Faith & Spirituality",
]  # fmt: skip


def synthetic_reviews(n: int, seed: int = 0) -> pd.DataFrame:
    """A movie-review-like table of ``n`` rows and 8 columns.

    - ``movie_title`` / ``movie_info`` (~300 characters) / ``movie_link``: one FD group,
      n/10 movies with Zipf popularity (a long tail of movies with one review);
    - ``genre`` (20 values, determined by the movie);
    - ``critic`` (~30 characters, n/40 critics with Zipf activity, across movies);
    - ``review_type`` (2 values);
    - ``review_id`` (unique) and ``review_text`` (~150 characters, unique).
    """
    rng = np.random.default_rng(seed)
    words = np.array(_WORDS, dtype=object)

    def zipf(k: int, a: float) -> np.ndarray:
        p = 1.0 / np.arange(1, k + 1) ** a
        return rng.choice(k, size=n, p=p / p.sum())

    n_movies = max(5, n // 10)
    movie = zipf(n_movies, 1.0)
    info = np.array(
        [" ".join(words[r]) for r in rng.integers(0, len(words), size=(n_movies, 50))],
        dtype=object,
    )
    tw = rng.integers(0, len(words), size=(n_movies, 2))
    title = np.array(
        [f"{words[a].title()} {words[b].title()} {i}" for i, (a, b) in enumerate(tw)],
        dtype=object,
    )
    link = np.array([f"m/{t.lower().replace(' ', '_')}" for t in title], dtype=object)
    genre = np.array(_GENRES, dtype=object)[rng.integers(0, len(_GENRES), n_movies)]
    n_critics = max(3, n // 40)
    cw = rng.integers(0, len(words), size=(n_critics, 3))
    critic = np.array(
        [
            f"{words[a].title()} {words[b].title()}-{i} ({words[c].title()} Times)"
            for i, (a, b, c) in enumerate(cw)
        ],
        dtype=object,
    )
    phrases = np.array(
        [" ".join(words[r]) for r in rng.integers(0, len(words), size=(4096, 12))], dtype=object
    )
    ids = pd.Series(np.arange(n) * 7919 % 10_000_019 + 1_000_000).astype(str)
    first = pd.Series(phrases[rng.integers(0, 4096, n)])
    last = pd.Series(phrases[rng.integers(0, 4096, n)])
    text = first + " (" + ids + ") " + last
    return pd.DataFrame(
        {
            "review_id": ids.to_numpy(dtype=object),
            "review_text": text.to_numpy(dtype=object),
            "review_type": np.where(rng.random(n) < 0.6, "Fresh", "Rotten").astype(object),
            "critic": critic[zipf(n_critics, 0.9)],
            "movie_link": link[movie],
            "movie_title": title[movie],
            "movie_info": info[movie],
            "genre": genre[movie],
        }
    )
