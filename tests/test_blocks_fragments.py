"""Fragment tokenization equals whole-prompt tokenization, and tokenizers say when it is safe.

`ggr_kv.reorder.fragments` tokenizes each distinct cell once and assembles prompts from
pieces; that is only right where its cuts are pre-tokenizer chunk boundaries. These tests
compare it with tokenizing every whole prompt (`ggr_kv.core.prompts.encode_prompts`) over
generated tables whose cells and field names end and start in every kind of character
the split patterns treat differently.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.prompts import build_prompts, encode_prompts
from ggr_kv.core.table import Table
from ggr_kv.core.tokenizer import (
    LLAMA3_PATTERN,
    QWEN3_PATTERN,
    Tok,
    load_tokenizer,
    pattern_of_tokenizer_json,
)
from ggr_kv.reorder.fragments import PromptPieces

# pieces of text that behave differently under the split patterns: letters, digits
# (grouped by 3 in Llama-3, single in Qwen), punctuation runs, quotes and backslashes
# (escaped by JSON), spaces and newlines (escaped), contractions, non-ASCII letters and
# numbers, special-token text, braces and the serializer's own separators
ATOMS = [
    "a",
    "Up",
    "the cat",
    "12345",
    "7",
    "3.14",
    "!",
    "?!",
    ".",
    ",",
    ":",
    '"',
    "'s",
    "'",
    "\\",
    "\n",
    "\r\n",
    "\t",
    " ",
    "  ",
    "é",
    "Ünï",
    "日本",
    "٣",
    "½",
    "Ⅻ",
    "<|eot_id|>",
    "<think>",
    "<|endoftext|>",
    "{",
    "}",
    '", "',
    '": "',
    "}\n\nAnswer:",
    "Data: {",
    "_x",
    "\u2028",
    "\u00a0",
    "x ",
    "- ",
    "https://www.x.com/m/the_matrix",
]
text = st.lists(st.sampled_from(ATOMS), max_size=5).map("".join)
NAMES = ["title", "_id", "1st", " lead", 'q"k', "ü", "Data", "a b", "x!", "t"]


@st.composite
def tables_and_plans(draw, max_rows: int = 6, max_cols: int = 4):
    m = draw(st.integers(1, max_cols))
    n = draw(st.integers(1, max_rows))
    names = draw(st.lists(st.sampled_from(NAMES), min_size=m, max_size=m, unique=True))
    data = {c: draw(st.lists(text, min_size=n, max_size=n)) for c in names}
    table = Table.from_frame(pd.DataFrame(data))
    rows = np.array(draw(st.permutations(range(n))))
    perms = np.array([draw(st.permutations(range(m))) for _ in range(n)])
    return table, ReorderPlan(table.columns, rows, perms)


@pytest.fixture(scope="module", params=["llama3", "qwen3"])
def tok(request):
    return load_tokenizer(request.param)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tp=tables_and_plans(), query=text, instruction=st.sampled_from(["", "Be brief.", "x\n"]))
def test_fragment_tokens_equal_whole_prompt_tokens(tp, query, instruction, tok):
    table, plan = tp
    pieces = PromptPieces.build(table, tok, query, instruction)
    assert pieces.exact
    got_t, got_o = pieces.encode(plan)
    want_t, want_o = encode_prompts(table, plan, tok, query, instruction)
    assert got_o.tolist() == want_o.tolist()
    assert got_t.tolist() == want_t.tolist()
    assert pieces.lengths(plan).tolist() == np.diff(want_o).tolist()


@pytest.mark.parametrize("name", ["movies", "products", "posts", "beer", "rag"])
def test_fragment_tokens_on_bundled_tables(name, tok):
    from ggr_kv.datasets import load_dataset
    from ggr_kv.reorder import reorder

    ds = load_dataset(name)
    table = ds.table()
    query = ds.query(ds.query_types[0]).text
    pieces = PromptPieces.build(table, tok, query)
    for method in ("original", "ggr"):
        plan = reorder(table, method, fds=list(ds.fds)).plan
        got = pieces.encode(plan)
        want = encode_prompts(table, plan, tok, query)
        assert np.array_equal(got[1], want[1]) and np.array_equal(got[0], want[0])


def test_naive_cut_at_the_separator_would_be_wrong():
    # why the pieces cut after '",' and not at ', ': Llama-3 splits '", "' as '",' | ' "',
    # and the head's '{"' merges with a key that starts with punctuation
    tok = load_tokenizer("llama3")
    whole = tok.encode('"a", "b"', add_special_tokens=False)
    naive = tok.encode('"a"', add_special_tokens=False) + tok.encode(
        ', "b"', add_special_tokens=False
    )
    assert whole != naive
    assert tok.encode('{"_id"', add_special_tokens=False) != (
        tok.encode("{", add_special_tokens=False) + tok.encode('"_id"', add_special_tokens=False)
    )


@pytest.mark.slow
def test_model_folder_tokenizer_is_recognized_and_exact(tiny_dir):
    tok = load_tokenizer(tiny_dir)
    assert tok.pattern == LLAMA3_PATTERN
    table = Table.from_frame(pd.DataFrame({"k": ["a!", "b", "<|eot_id|>x"], "v": ["1", "22", ""]}))
    plan = ReorderPlan.identity(table)
    pieces = PromptPieces.build(table, tok, "Q?")
    assert pieces.exact
    got = pieces.encode(plan)
    want = encode_prompts(table, plan, tok, "Q?")
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_unknown_tokenizer_falls_back_to_whole_prompts():
    base = load_tokenizer("llama3")
    calls = []

    def batch(texts):
        calls.append(len(texts))
        return base._encode_batch(texts)

    unknown = Tok("custom", base.bos_id, batch, base._decode, pattern=None)
    table = Table.from_frame(pd.DataFrame({"a": ["x", "y", "x"], "b": ["1", "2", "3"]}))
    plan = ReorderPlan.identity(table)
    pieces = PromptPieces.build(table, unknown, "Q")
    assert not pieces.exact
    calls.clear()
    got = pieces.encode(plan)
    assert calls == [3]  # the three whole prompts, nothing else
    want = encode_prompts(table, plan, base, "Q")
    assert np.array_equal(got[0], want[0])


def test_pattern_detection_from_tokenizer_json():
    split = {
        "type": "Split",
        "pattern": {"Regex": QWEN3_PATTERN},
        "behavior": "Isolated",
        "invert": False,
    }
    byte = {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": False,
        "use_regex": False,
    }
    spec = {
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [split, byte]},
    }
    assert pattern_of_tokenizer_json(spec) == QWEN3_PATTERN
    assert pattern_of_tokenizer_json({**spec, "normalizer": {"type": "NFC"}}) is None
    other = {**split, "pattern": {"Regex": r"\w+|\s+"}}
    assert (
        pattern_of_tokenizer_json(
            {
                "normalizer": None,
                "pre_tokenizer": {"type": "Sequence", "pretokenizers": [other, byte]},
            }
        )
        is None
    )
    assert (
        pattern_of_tokenizer_json(
            {"normalizer": None, "pre_tokenizer": {"type": "ByteLevel", "use_regex": True}}
        )
        is None
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(text, min_size=1, max_size=8))
def test_special_token_fast_path_gives_the_same_ids(texts):
    # quicktok's special-token scan is skipped for texts without '<'; ids must not change
    import quicktok

    for name in ("llama3", "qwen3"):
        tok = load_tokenizer(name)
        enc = quicktok.get_encoding(name)
        toks, offs = tok.encode_batch(texts, add_special_tokens=False)
        want_t, want_o = enc.encode_batch(texts, 0, True)
        assert offs.tolist() == np.asarray(want_o).tolist()
        assert toks.tolist() == np.asarray(want_t).tolist()


def test_pieces_do_not_change_the_callers_table():
    df = pd.DataFrame({"a": ["x!", "y"], "b": ["1", None]})
    before = df.copy(deep=True)
    table = Table.from_frame(df)
    codes = table.codes.copy()
    PromptPieces.build(table, "llama3", "Q").encode(ReorderPlan.identity(table))
    pd.testing.assert_frame_equal(df, before)
    assert np.array_equal(table.codes, codes)
    assert json.dumps(build_prompts(table, ReorderPlan.identity(table), "Q"))  # still builds


def test_opened_texts_equal_json_quoting():
    """The texts tokenized for the value pieces are ``' ' + json.dumps(v)[:-1]``, also where
    only a few texts of a chunk need escaping, across chunk ends, and for every code
    point (the no-escape fast path writes ``' "' + v``)."""
    from ggr_kv.reorder import fragments

    every = [chr(c) for c in range(0x110000)]
    mixed = ["plain", 'a "q"', "back\\slash", "tab\there", "é\u2028", "", "x\x7f", "\ud800"]
    texts = every + mixed * (2 * fragments._OPEN_CHUNK // len(mixed) + 3)
    want = [" " + json.dumps(v, ensure_ascii=False)[:-1] for v in texts]
    assert fragments._opened(texts) == want
