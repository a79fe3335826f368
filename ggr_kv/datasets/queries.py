"""Query templates for the GGR paper's five query types, per dataset.

The paper (MLSys 2025, Table 1) runs 16 queries of five types over its tables:

- ``filter`` (T1): a yes/no (or label) question per row; answers are a word, so
  ``max_tokens`` is small (the paper uses 5).
- ``projection`` (T2): a short summary or extraction per row.
- ``multi_llm`` (T3): a filter over one field (the review's sentiment), then a projection
  over the rows that pass: two `Stage`\\ s.
- ``aggregation`` (T4): a 1-5 score per row; the average is computed in pandas
  (`aggregate_scores`).
- ``rag`` (T5): answer a question (SQuAD) or check a claim (FEVER) from retrieved contexts.

The texts follow the prompts of the paper's artifact (``src/prompts/q*.py``), with typos
fixed. `Query.custom` wraps any other text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

#: a loaded ``ggr_kv.datasets.Dataset`` (read through ``kind``, ``name``, ``columns`` and
#: ``source`` only: this module sits below the catalog and does not import it)
Dataset = Any

__all__ = [
    "PAPER_TYPES",
    "QUERIES",
    "QUERY_TYPES",
    "STAGE_KINDS",
    "Query",
    "QueryError",
    "ScoreSummary",
    "Stage",
    "aggregate_scores",
    "get_query",
    "list_queries",
    "query_types",
]

QUERY_TYPES = ("filter", "projection", "multi_llm", "aggregation", "rag")
#: query type -> the paper's name for it
PAPER_TYPES = {
    "filter": "T1",
    "projection": "T2",
    "multi_llm": "T3",
    "aggregation": "T4",
    "rag": "T5",
}
_TYPE_ALIASES = {
    **{v.lower(): k for k, v in PAPER_TYPES.items()},
    "multi-llm": "multi_llm",
    "multillm": "multi_llm",
    "multi": "multi_llm",
    "agg": "aggregation",
    "aggregate": "aggregation",
    "project": "projection",
}
_DATASET_ALIASES = {"bird": "posts", "squad": "rag", "ratebeer": "beer"}
#: ``choice``: one of ``choices``; ``score``: an integer in ``score_range``; ``text``: free text
STAGE_KINDS = ("choice", "score", "text")
_LEAD = " \t\r\n\"'*`([:"


class QueryError(ValueError):
    """Unknown dataset or query type, or an invalid query definition."""


@dataclass(frozen=True)
class Stage:
    """One LLM call per row.

    Attributes
    ----------
    text : the query text that goes into every prompt of this stage.
    max_tokens : generation limit per row, in tokens.
    kind : ``"choice"``, ``"score"`` or ``"text"`` (see `STAGE_KINDS`).
    choices : allowed answers of a ``choice`` stage, as written in the prompt.
    keep : answers that let a row through to the next stage (a filter); empty keeps all.
    fields : the columns this stage's prompts include; ``None`` means every column.
    score_range : inclusive bounds of a ``score`` stage's integer answer.
    """

    text: str
    max_tokens: int
    kind: str = "text"
    choices: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    fields: tuple[str, ...] | None = None
    score_range: tuple[int, int] = (1, 5)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise QueryError("query text must be a non-empty string")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, (int, np.integer)):
            raise QueryError(f"max_tokens must be a positive int, got {self.max_tokens!r}")
        if self.max_tokens <= 0:
            raise QueryError(f"max_tokens must be a positive int, got {self.max_tokens}")
        if self.kind not in STAGE_KINDS:
            raise QueryError(f"unknown stage kind {self.kind!r}; use one of {list(STAGE_KINDS)}")
        object.__setattr__(self, "choices", tuple(self.choices))
        object.__setattr__(self, "keep", tuple(self.keep))
        if self.fields is not None:
            object.__setattr__(self, "fields", tuple(self.fields))
        if self.kind == "choice" and not self.choices:
            raise QueryError("a choice stage needs its allowed answers in `choices`")
        upper = {c.upper() for c in self.choices}
        bad = [k for k in self.keep if k.upper() not in upper]
        if bad:
            raise QueryError(f"keep {bad} must be among choices {list(self.choices)}")
        lo, hi = self.score_range
        if lo > hi:
            raise QueryError(f"score_range {self.score_range} is empty")

    def parse(self, outputs: Iterable[str]) -> pd.Series:
        """Normalize raw model outputs (vectorized).

        ``choice``: the matching choice as written in `choices` (case-insensitive, leading
        quotes/markup ignored, longest choice first), else NaN. ``score``: the first integer
        if inside `score_range`, else NaN (float Series). ``text``: stripped text.
        """
        s = pd.Series(list(outputs), dtype=object).fillna("").astype(str)
        if self.kind == "text":
            return s.str.strip()
        head = s.str.lstrip(_LEAD)
        if self.kind == "score":
            lo, hi = self.score_range
            num = pd.to_numeric(head.str.extract(r"(\d+)", expand=False), errors="coerce")
            return num.where((num >= lo) & (num <= hi)).astype(float)
        alts = sorted(self.choices, key=len, reverse=True)
        pattern = "^(" + "|".join(re.escape(c.upper()) for c in alts) + r")(?![A-Z0-9])"
        found = head.str.upper().str.extract(pattern, expand=False)
        return found.map({c.upper(): c for c in self.choices})

    def passes(self, outputs: Iterable[str]) -> np.ndarray:
        """Boolean mask of rows whose answer is in `keep` (all True when `keep` is empty)."""
        parsed = self.parse(outputs)
        if not self.keep:
            return np.ones(len(parsed), dtype=bool)
        return parsed.isin(list(self.keep)).to_numpy()


@dataclass(frozen=True)
class Query:
    """A query of one type over one dataset: one or more `Stage`\\ s.

    ``text`` and ``max_tokens`` are those of the first stage; a multi-stage query
    (``multi_llm``) runs ``stages`` in order, each on the rows the previous one kept.

    Attributes
    ----------
    dataset : dataset (query family) name, or ``"custom"``.
    qtype : one of `QUERY_TYPES`, or ``"custom"``.
    text : query text of the first stage.
    max_tokens : generation limit of the first stage, tokens per row.
    stages : all stages; filled from ``text`` and ``max_tokens`` when left empty.
    description : one line for people.
    """

    dataset: str
    qtype: str
    text: str
    max_tokens: int
    stages: tuple[Stage, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if self.qtype not in QUERY_TYPES and self.qtype != "custom":
            raise QueryError(f"unknown query type {self.qtype!r}; use one of {list(QUERY_TYPES)}")
        if not self.stages:
            kind = {"aggregation": "score"}.get(self.qtype, "text")
            object.__setattr__(self, "stages", (Stage(self.text, self.max_tokens, kind),))
        else:
            object.__setattr__(self, "stages", tuple(self.stages))
            first = self.stages[0]
            if (first.text, first.max_tokens) != (self.text, self.max_tokens):
                raise QueryError("text and max_tokens must be those of the first stage")

    @classmethod
    def custom(
        cls,
        text: str,
        max_tokens: int = 64,
        *,
        dataset: str = "custom",
        choices: Iterable[str] = (),
        keep: Iterable[str] = (),
        fields: Iterable[str] | None = None,
    ) -> Query:
        """A one-stage query with your own text (``choice`` kind when ``choices`` are given)."""
        choices = tuple(choices)
        stage = Stage(
            text,
            max_tokens,
            "choice" if choices else "text",
            choices,
            tuple(keep),
            None if fields is None else tuple(fields),
        )
        return cls(dataset, "custom", text, max_tokens, (stage,), "custom query")

    @property
    def is_multi_stage(self) -> bool:
        return len(self.stages) > 1

    @property
    def paper_type(self) -> str | None:
        """``"T1"`` ... ``"T5"``, or ``None`` for custom queries."""
        return PAPER_TYPES.get(self.qtype)

    def to_dict(self) -> dict:
        """JSON-ready form (for run records)."""
        d = asdict(self)
        d["stages"] = [
            {**s, "fields": None if s["fields"] is None else list(s["fields"])} for s in d["stages"]
        ]
        return d


@dataclass(frozen=True)
class ScoreSummary:
    """An aggregation query's result: the mean of valid 1-5 scores.

    Attributes
    ----------
    mean : mean score over valid answers (NaN when none is valid).
    n : answers given.
    n_valid : answers with an integer score inside the range.
    invalid_fraction : 0-1 fraction of answers without a valid score.
    counts : score -> number of answers.
    """

    mean: float
    n: int
    n_valid: int
    invalid_fraction: float
    counts: dict[int, int] = field(default_factory=dict)


def aggregate_scores(outputs: Iterable[str], query: Query | Stage | None = None) -> ScoreSummary:
    """Average the scores of an aggregation query's outputs (T4's ``AVG``), in pandas."""
    stage = query.stages[-1] if isinstance(query, Query) else query
    if stage is None:
        stage = Stage("score", 4, "score")
    if stage.kind != "score":
        raise QueryError(f"aggregate_scores needs a score stage, got a {stage.kind!r} stage")
    scores = stage.parse(outputs)
    valid = scores.dropna()
    n = len(scores)
    counts = {int(k): int(v) for k, v in valid.astype(int).value_counts().sort_index().items()}
    return ScoreSummary(
        mean=float(valid.mean()) if len(valid) else float("nan"),
        n=n,
        n_valid=len(valid),
        invalid_fraction=(n - len(valid)) / n if n else 0.0,
        counts=counts,
    )


# -- the templates ---------------------------------------------------------------------------
_SENTIMENT = (
    'Given the following review, answer whether the sentiment associated is "POSITIVE" or '
    '"NEGATIVE". Answer in all caps with ONLY "POSITIVE" or "NEGATIVE".'
)


_FEVER = (
    "Given a claim and pieces of evidence, answer SUPPORTS if the evidence supports the claim, "
    "REFUTES if it refutes the claim, or NOT ENOUGH INFO if there is not enough information. "
    "Answer only SUPPORTS, REFUTES or NOT ENOUGH INFO."
)


def _filter(dataset: str, text: str, choices: tuple[str, ...], keep: tuple[str, ...]) -> Query:
    stage = Stage(text, 5, "choice", choices, keep)
    return Query(dataset, "filter", text, 5, (stage,), f"T1 filter over {dataset}")


def _projection(dataset: str, text: str, max_tokens: int) -> Query:
    return Query(dataset, "projection", text, max_tokens, (), f"T2 projection over {dataset}")


def _multi(dataset: str, review_field: str, projection: Query) -> Query:
    first = Stage(_SENTIMENT, 5, "choice", ("POSITIVE", "NEGATIVE"), ("POSITIVE",), (review_field,))
    second = projection.stages[0]
    return Query(
        dataset,
        "multi_llm",
        first.text,
        first.max_tokens,
        (first, second),
        f"T3 sentiment of {review_field}, then a projection of the positive rows",
    )


def _aggregation(dataset: str, thing: str) -> Query:
    text = (
        f"Given the following fields of a {thing} description and a user review, assign a "
        "sentiment score for the review out of 5. Answer with ONLY a single integer between "
        "1 (bad) and 5 (good)."
    )
    return Query(
        dataset,
        "aggregation",
        text,
        4,
        (Stage(text, 4, "score"),),
        f"T4 average review score over {dataset}",
    )


def _movies(name: str, review_field: str) -> dict[str, Query]:
    proj = _projection(
        name,
        "Given information including movie descriptions and critic reviews for movies with a "
        "positive sentiment, summarize the good qualities in this movie that led to a "
        "favorable rating.",
        64,
    )
    return {
        "filter": _filter(
            name,
            "Given the following fields of a movie description and a user review, answer in ONE "
            "word, 'Yes' or 'No', whether the movie would be suitable for kids. Answer ONLY "
            "'Yes' or 'No'.",
            ("Yes", "No"),
            ("Yes",),
        ),
        "projection": proj,
        "multi_llm": _multi(name, review_field, proj),
        "aggregation": _aggregation(name, "movie"),
    }


def _products() -> dict[str, Query]:
    proj = _projection(
        "products",
        "Given the following fields related to Amazon products, summarize the product, then "
        "answer whether the product description is consistent with the quality expressed in "
        "the review.",
        128,
    )
    return {
        "filter": _filter(
            "products",
            "Given the following fields, determine whether the review speaks positively "
            "('POSITIVE'), negatively ('NEGATIVE') or neutrally ('NEUTRAL') about the product. "
            "Answer only 'POSITIVE', 'NEGATIVE' or 'NEUTRAL', nothing else.",
            ("POSITIVE", "NEGATIVE", "NEUTRAL"),
            ("POSITIVE",),
        ),
        "projection": proj,
        "multi_llm": _multi("products", "text", proj),
        "aggregation": _aggregation("products", "product"),
    }


QUERIES: dict[str, dict[str, Query]] = {
    "movies": _movies("movies", "reviewcontent"),
    "movies_small": _movies("movies_small", "review_content"),
    "products": _products(),
    "posts": {
        "filter": _filter(
            "posts",
            "Given the following fields related to posts in an online codebase community, "
            "answer whether the post is related to statistics. Answer with only 'YES' or 'NO'.",
            ("YES", "NO"),
            ("YES",),
        ),
        "projection": _projection(
            "posts",
            "Given the following fields related to posts in an online codebase community, "
            "summarize how the comment Text relates to the post Body.",
            64,
        ),
    },
    "beer": {
        "filter": _filter(
            "beer",
            "Based on the review text and overall rating, does this beer seem likely to be "
            "recommended by the reviewer? Answer only 'YES', 'NO', or 'NEUTRAL', nothing else.",
            ("YES", "NO", "NEUTRAL"),
            ("YES",),
        ),
        "projection": _projection(
            "beer",
            "Given the following fields, provide a high-level overview of the beer and the "
            "review in a 20-word paragraph.",
            48,
        ),
    },
    "pdmx": {
        "filter": _filter(
            "pdmx",
            "Based on the following fields, answer 'YES' or 'NO' whether the song name appears "
            "to reference a specific individual. If the song name is empty, answer 'NO'. "
            "Answer only 'YES' or 'NO', nothing else.",
            ("YES", "NO"),
            ("YES",),
        ),
        "projection": _projection(
            "pdmx",
            "Given the following fields, provide an overview of the music type and analyze the "
            "given scores. Give exactly 50 words of summary.",
            96,
        ),
    },
    "rag": {
        "rag": Query(
            "rag",
            "rag",
            "Given a question and supporting contexts, answer the provided question in a few "
            "words.",
            32,
            (),
            "T5 question answering over retrieved contexts (SQuAD)",
        ),
    },
    "fever": {
        "rag": Query(
            "fever",
            "rag",
            _FEVER,
            8,
            (Stage(_FEVER, 8, "choice", ("SUPPORTS", "REFUTES", "NOT ENOUGH INFO")),),
            "T5 claim verification over retrieved evidence (FEVER)",
        )
    },
}


def query_types(family: str | None) -> tuple[str, ...]:
    """Query types with templates for query family ``family``, in `QUERY_TYPES` order.

    The one home of "which query types make sense for which table": the catalog's
    ``DatasetSpec.query_types`` and ``Layout.query_types`` read it. ``()`` for ``None`` or
    a family without templates.
    """
    templates = QUERIES.get(family or "", {})
    return tuple(t for t in QUERY_TYPES if t in templates)


def _family(dataset: str | Dataset) -> tuple[str, str, Dataset | None]:
    """(query family, display name, Dataset or None) for a name or a `Dataset`."""
    if isinstance(dataset, str):
        key = dataset.lower()
        key = _DATASET_ALIASES.get(key, key)
        if key not in QUERIES:
            raise QueryError(
                f"no query templates for dataset {dataset!r}. Datasets with templates: "
                f"{list(QUERIES)}; use Query.custom(text) for anything else"
            )
        return key, key, None
    kind = getattr(dataset, "kind", None)
    if kind is None or kind not in QUERIES:
        raise QueryError(
            f"dataset {getattr(dataset, 'name', dataset)!r} has no query templates (its columns "
            f"match none of the paper's tables); use Query.custom(text)"
        )
    return kind, dataset.name, dataset


def _qtype(qtype: str) -> str:
    if not isinstance(qtype, str):
        raise QueryError(f"query type must be a string, got {qtype!r}")
    key = qtype.lower()
    return _TYPE_ALIASES.get(key, key)


def get_query(dataset: str | Dataset, qtype: str) -> Query:
    """The paper-style query of type ``qtype`` for ``dataset``.

    Parameters
    ----------
    dataset : a bundled dataset or query-family name (``"movies"``, ``"bird"``, ``"fever"``
        ...), or a loaded `ggr_kv.datasets.Dataset` (its ``kind`` picks the family and its
        columns are checked against the stages' ``fields``).
    qtype : one of `QUERY_TYPES`, or the paper's ``"T1"``..``"T5"``.
    """
    family, name, ds = _family(dataset)
    key = _qtype(qtype)
    templates = QUERIES[family]
    if key not in templates:
        raise QueryError(
            f"dataset {name!r} has no {qtype!r} query. Query types for it: {list(templates)}"
            + ("" if key in QUERY_TYPES else f"; all query types: {list(QUERY_TYPES)}")
        )
    q = templates[key]
    if ds is not None:
        cols = set(ds.columns)
        for st in q.stages:
            missing = [f for f in st.fields or () if f not in cols]
            if missing:
                raise QueryError(
                    f"query {key!r} of {family!r} reads column(s) {missing}, which "
                    f"{ds.source} does not have. Available columns: {list(ds.columns)}"
                )
        q = replace(q, dataset=ds.name)
    return q


def list_queries(dataset: str | Dataset | None = None) -> list[Query]:
    """Every template (or those of one dataset), in `QUERY_TYPES` order per dataset."""
    if dataset is not None:
        family, _, _ = _family(dataset)
        return [get_query(dataset, t) for t in QUERY_TYPES if t in QUERIES[family]]
    return [q for fam in QUERIES.values() for t in QUERY_TYPES if (q := fam.get(t)) is not None]
