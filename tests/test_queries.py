"""Query templates: every dataset gets the paper's query types; answers parse; clear errors."""

from __future__ import annotations

import json
import math
from dataclasses import fields

import numpy as np
import pytest
from conftest import shared_path

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.prompts import build_prompts
from ggr_kv.datasets import DATASETS, Dataset, load_dataset
from ggr_kv.datasets.queries import (
    PAPER_TYPES,
    QUERIES,
    QUERY_TYPES,
    Query,
    QueryError,
    Stage,
    aggregate_scores,
    get_query,
    list_queries,
    query_types,
)

EXPECTED_TYPES = {
    "movies": ("filter", "projection", "multi_llm", "aggregation"),
    "products": ("filter", "projection", "multi_llm", "aggregation"),
    "posts": ("filter", "projection"),
    "beer": ("filter", "projection"),
    "rag": ("rag",),
}


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_bundled_dataset_has_its_query_types(name):
    assert DATASETS[name].query_types == EXPECTED_TYPES[name]
    assert [q.qtype for q in list_queries(name)] == list(EXPECTED_TYPES[name])
    for qtype in EXPECTED_TYPES[name]:
        q = get_query(name, qtype)
        assert (q.dataset, q.qtype) == (name, qtype)
        assert q.text == q.stages[0].text and q.max_tokens == q.stages[0].max_tokens


@pytest.mark.parametrize("name", list(DATASETS))
def test_query_types_that_make_no_sense_are_refused(name):
    for qtype in set(QUERY_TYPES) - set(EXPECTED_TYPES[name]):
        with pytest.raises(QueryError, match=r"Query types for it: \[") as e:
            get_query(name, qtype)
        for valid in EXPECTED_TYPES[name]:
            assert repr(valid) in str(e.value)


def test_query_types_have_one_home_in_the_templates():
    """Catalog specs and layouts read `query_types`, which reads `QUERIES`: nothing to
    keep in sync by hand."""
    from ggr_kv.datasets.catalog import LAYOUTS

    for fam, templates in QUERIES.items():
        assert query_types(fam) == tuple(t for t in QUERY_TYPES if t in templates)
    for spec in DATASETS.values():
        assert spec.query_types == query_types(spec.kind) == tuple(QUERIES[spec.kind])
    for layout in LAYOUTS.values():
        assert layout.query_types == query_types(layout.kind) != ()
    assert query_types(None) == () and query_types("nope") == ()
    assert "query_types" not in {f.name for f in fields(type(DATASETS["movies"]))}


def test_generated_tables_get_their_familys_queries(tmp_path, monkeypatch):
    monkeypatch.setenv("GGR_KV_DATA_CACHE", str(tmp_path))
    ds = load_dataset("shortgroups@40")
    assert ds.query_types == EXPECTED_TYPES["movies"]
    q = ds.query("multi_llm")
    assert q.dataset == "shortgroups@40" and q.stages[0].fields == ("reviewcontent",)


def test_stage_shapes_follow_the_query_type():
    for fam in QUERIES.values():
        for qtype, q in fam.items():
            kinds = [s.kind for s in q.stages]
            if qtype == "filter":
                assert kinds == ["choice"] and q.stages[0].keep and q.max_tokens <= 8
            elif qtype == "projection":
                assert kinds == ["text"] and 16 <= q.max_tokens <= 256
            elif qtype == "multi_llm":
                first, second = q.stages
                assert first.kind == "choice" and first.keep == ("POSITIVE",)
                assert first.fields is not None and len(first.fields) == 1
                assert second.kind == "text" and second.fields is None
            elif qtype == "aggregation":
                assert kinds == ["score"] and q.stages[0].score_range == (1, 5)
                assert q.max_tokens <= 8
            else:
                assert qtype == "rag" and len(q.stages) == 1


def test_choice_prompts_name_their_answers():
    """The model can only answer as parsed if the prompt lists the allowed answers."""
    for fam in QUERIES.values():
        for q in fam.values():
            for st in q.stages:
                for c in st.choices:
                    assert c in st.text, (q.dataset, q.qtype, c)


@pytest.mark.parametrize("name", ["movies", "products"])
def test_multi_llm_first_stage_reads_the_review_column(name):
    ds = load_dataset(name, n=5, sample="head")
    q = get_query(ds, "T3")
    assert set(q.stages[0].fields) <= set(ds.columns)


def test_paper_names_and_aliases():
    assert get_query("movies", "T1") == get_query("movies", "filter")
    assert get_query("movies", "multi-llm").qtype == "multi_llm"
    assert get_query("BIRD", "t2") == get_query("posts", "projection")
    assert get_query("squad", "T5") == get_query("rag", "rag")
    assert {q.paper_type for q in list_queries()} == set(PAPER_TYPES.values())


def test_unknown_dataset_and_type_list_the_valid_ones():
    with pytest.raises(QueryError) as e:
        get_query("moviez", "filter")
    for fam in QUERIES:
        assert repr(fam) in str(e.value)
    with pytest.raises(QueryError, match=r"all query types: \['filter', 'projection'"):
        get_query("movies", "T9")


def test_dataset_objects_pick_their_family_and_name():
    ds = load_dataset("beer", n=3)
    q = get_query(ds, "filter")
    assert q.dataset == "beer" and q.text == get_query("beer", "filter").text
    assert ds.query("projection") == get_query("beer", "projection")


def test_real_samples_get_their_families_queries():
    path = shared_path("movies_small.csv")
    ds = load_dataset(path)
    assert ds.query("T3").stages[0].fields == ("review_content",)
    other = load_dataset(shared_path("contributions.csv"), n=5, sample="head")
    with pytest.raises(QueryError, match=r"no query templates.*Query.custom"):
        get_query(other, "filter")


def test_a_stage_reading_a_missing_column_is_refused():
    frame = load_dataset("movies", n=20, sample="head").frame.drop(columns="reviewcontent")
    ds = Dataset("trimmed", frame, [], "trimmed.csv", "movies without reviews", kind="movies")
    with pytest.raises(QueryError, match=r"\['reviewcontent'\].*Available columns"):
        get_query(ds, "multi_llm")
    assert get_query(ds, "filter").dataset == "trimmed"


# -- parsing answers ------------------------------------------------------------------------
def test_choice_answers_parse_case_insensitively():
    st = get_query("beer", "filter").stages[0]  # YES / NO / NEUTRAL
    outs = ["YES", " yes.", '"No"', "**Neutral**", "Nope", "NOTHING", "", "maybe YES"]
    assert st.parse(outs).tolist()[:4] == ["YES", "YES", "NO", "NEUTRAL"]
    assert st.parse(outs).isna().tolist()[4:] == [True, True, True, True]
    assert st.passes(outs).tolist() == [True, True] + [False] * 6


def test_longest_choice_wins():
    st = Stage("answer NO or NOT ENOUGH INFO", 8, "choice", ("NO", "NOT ENOUGH INFO"))
    assert st.parse(["not enough info", "No, it does not"]).tolist() == ["NOT ENOUGH INFO", "NO"]
    fever = get_query("fever", "rag").stages[0]
    assert fever.parse(["Refutes.", "SUPPORTS"]).tolist() == ["REFUTES", "SUPPORTS"]


def test_filter_without_keep_passes_everything():
    st = get_query("fever", "rag").stages[0]
    assert st.passes(["x", "REFUTES"]).tolist() == [True, True]


def test_aggregate_scores_averages_valid_scores():
    q = get_query("products", "aggregation")
    s = aggregate_scores(["5", "Score: 4", " 3.", "7", "great", "1"], q)
    assert s.mean == pytest.approx((5 + 4 + 3 + 1) / 4)
    assert (s.n, s.n_valid) == (6, 4) and s.invalid_fraction == pytest.approx(2 / 6)
    assert s.counts == {1: 1, 3: 1, 4: 1, 5: 1}
    empty = aggregate_scores([], q)
    assert math.isnan(empty.mean) and empty.n == 0 and empty.invalid_fraction == 0.0
    with pytest.raises(QueryError, match="score stage"):
        aggregate_scores(["1"], get_query("movies", "filter"))


# -- custom queries and validation --------------------------------------------------------
def test_custom_queries():
    q = Query.custom("List the actors named in the synopsis.", max_tokens=40)
    assert (q.dataset, q.qtype, q.max_tokens) == ("custom", "custom", 40)
    assert len(q.stages) == 1 and q.stages[0].kind == "text" and q.paper_type is None
    yn = Query.custom("Is it a comedy? Answer Yes or No.", 3, choices=("Yes", "No"), keep=("Yes",))
    assert yn.stages[0].passes(["yes", "no"]).tolist() == [True, False]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"text": "  "}, "non-empty"),
        ({"max_tokens": 0}, "positive"),
        ({"max_tokens": 2.5}, "positive int"),
        ({"choices": ("Yes", "No"), "keep": ("Maybe",)}, r"keep \['Maybe'\]"),
    ],
)
def test_invalid_queries_are_refused(kwargs, match):
    args = {"text": "Is it good?", "max_tokens": 5, **kwargs}
    with pytest.raises(QueryError, match=match):
        Query.custom(**args)


def test_query_checks_its_type_and_first_stage():
    with pytest.raises(QueryError, match="unknown query type 'sort'"):
        Query("movies", "sort", "x", 5)
    with pytest.raises(QueryError, match="first stage"):
        Query("movies", "filter", "x", 5, (Stage("y", 5),))
    with pytest.raises(QueryError, match="needs its allowed answers"):
        Stage("x", 5, "choice")


def test_to_dict_is_json_ready():
    d = get_query("movies", "multi_llm").to_dict()
    back = json.loads(json.dumps(d))
    assert back["qtype"] == "multi_llm" and len(back["stages"]) == 2
    assert back["stages"][0]["fields"] == ["reviewcontent"]


def test_prompts_for_a_bundled_dataset_are_hundreds_of_tokens():
    """Instruction + query + row JSON: ~4 chars per token puts movies near the paper's 276."""
    ds = load_dataset("movies", n=200, seed=1)
    table = ds.table()
    q = get_query(ds, "filter")
    prompts = build_prompts(table, ReorderPlan.identity(table), q.text)
    assert all(q.text in p for p in prompts)
    mean_chars = np.mean([len(p) for p in prompts])
    assert 800 < mean_chars < 2400
