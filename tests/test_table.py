"""Loading tables: the stringification rules and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path

from ggr_kv.core.table import Table, TableError, load_table


def cells(df: pd.DataFrame) -> dict[str, list[str]]:
    t = Table.from_frame(df)
    return {c: t.cells[:, j].tolist() for j, c in enumerate(t.columns)}


# -- stringification ------------------------------------------------------------------------
def test_missing_values_become_empty_strings():
    df = pd.DataFrame(
        {
            "obj": ["x", None, np.nan],
            "float": [1.5, np.nan, 2.5],
            "int": pd.array([1, None, 3], dtype="Int64"),
            "bool": pd.array([True, None, False], dtype="boolean"),
            "ts": [pd.Timestamp("2024-01-31"), pd.NaT, pd.Timestamp("2024-02-01")],
            "str": pd.array(["a", pd.NA, "c"], dtype="string"),
            "cat": pd.Categorical(["a", None, "b"]),
        }
    )
    out = cells(df)
    assert all(col[1] == "" for col in out.values()), out


def test_bools_ints_and_floats():
    df = pd.DataFrame(
        {
            "bool": [True, False],
            "int": [7, -12],
            "big": np.array([2**64 - 1, 0], dtype=np.uint64),
            "integral_float": [3.0, -0.0],
            "float": [0.1, 1 / 3],
            "huge": [1e20, float("inf")],
            "f32": np.array([0.1, 2.5], dtype=np.float32),
        }
    )
    assert cells(df) == {
        "bool": ["True", "False"],
        "int": ["7", "-12"],
        "big": [str(2**64 - 1), "0"],
        "integral_float": ["3", "0"],
        "float": ["0.1", repr(1 / 3)],
        "huge": ["1e+20", "inf"],
        "f32": ["0.1", "2.5"],  # shortest text at float32 width, not 0.10000000149011612
    }


def test_an_int_column_with_gaps_reads_like_ints():
    # NaN turns an int column into floats; the cells must still read 1 and 3, not 1.0
    df = pd.DataFrame({"n": [1, None, 3]})
    assert df["n"].dtype == float
    assert cells(df) == {"n": ["1", "", "3"]}


def test_timestamps_are_iso_8601():
    df = pd.DataFrame(
        {
            "ts": pd.to_datetime(["2024-01-31 12:00:00", "2024-02-01 00:00:05"]),
            "tz": pd.to_datetime(["2024-01-31 12:00:00", "2024-02-01 00:00:05"]).tz_localize("UTC"),
        }
    )
    assert cells(df) == {
        "ts": ["2024-01-31T12:00:00", "2024-02-01T00:00:05"],
        "tz": ["2024-01-31T12:00:00+00:00", "2024-02-01T00:00:05+00:00"],
    }


def test_mixed_object_column_keeps_each_value_s_own_text():
    # True == 1 == 1.0 in Python; each must still read as itself
    df = pd.DataFrame({"m": pd.Series([True, 1, 1.0, "1", None, 2.5], dtype=object)})
    assert cells(df) == {"m": ["True", "1", "1", "1", "", "2.5"]}


def test_nested_parquet_cells_become_json(tmp_path):
    # issue 21 case 9: list and struct cells read as JSON, not Python reprs
    path = tmp_path / "lists.parquet"
    pd.DataFrame({"genres": [["Drama", "Crime"], None, ["Comedy"]],
                  "meta": [{"a": "x", "b": "é"}, {"a": "y", "b": None}, None]}).to_parquet(path)
    t = load_table(path)
    assert t.cells[:, 0].tolist() == ['["Drama", "Crime"]', "", '["Comedy"]']
    assert t.cells[:, 1].tolist() == ['{"a": "x", "b": "é"}', '{"a": "y", "b": null}', ""]


def test_codes_and_lengths_follow_the_text():
    df = pd.DataFrame({"a": ["x", "yy", "x", None, ""], "b": [1, 1.0, 2, 2, 1]})
    t = Table.from_frame(df)
    for j in range(t.n_cols):
        text = t.cells[:, j]
        # equal codes exactly when equal text
        same_code = t.codes[:, j][:, None] == t.codes[:, j][None, :]
        same_text = text[:, None] == text[None, :]
        assert (same_code == same_text).all()
        assert t.lengths[:, j].tolist() == [len(s) for s in text]


def test_caller_dataframe_is_unchanged():
    df = pd.DataFrame(
        {"a": [1.0, None, 3.0], "b": ["x", None, "z"], "c": [True, False, True]},
        index=[10, 20, 30],
    )
    before = df.copy(deep=True)
    Table.from_frame(df)
    load_table(df)
    pd.testing.assert_frame_equal(df, before)


# -- CSV files ------------------------------------------------------------------------------
def test_csv_cells_stay_text(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('id,zip,flag,note\n007,01234,TRUE,NA\n8,99999,false,""\n')
    t = load_table(path)
    assert t.columns == ("id", "zip", "flag", "note")
    assert t.cells.tolist() == [["007", "01234", "TRUE", "NA"], ["8", "99999", "false", ""]]
    assert t.source == str(path)


def test_tsv(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("a\tb\n1,5\t2\n")
    assert load_table(path).cells.tolist() == [["1,5", "2"]]


def test_parquet_round_trip(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"a": ["x", None], "n": [1, 2]}).to_parquet(path)
    t = load_table(path)
    assert t.columns == ("a", "n")
    assert t.cells.tolist() == [["x", "1"], ["", "2"]]


@pytest.mark.parametrize("name", ["movies_small.csv", "contributions.csv"])
def test_shared_real_tables_load(name):
    path = shared_path(name)
    t = load_table(path)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert t.columns == tuple(df.columns)
    assert t.n_rows == len(df)
    assert t.cells.tolist() == df.to_numpy().tolist()


# -- bad input ------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(TableError, match=r"nope\.csv: file not found"):
        load_table(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(TableError, match=r"empty\.csv: the file is empty"):
        load_table(path)


def test_header_only_csv_has_no_rows(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("a,b\n")
    with pytest.raises(TableError, match=r"header\.csv: the table has no rows"):
        load_table(path)


@pytest.mark.parametrize(
    ("name", "text"), [("dup.csv", "a,b,a\n1,2,3\n"), ("dup.tsv", "a\tb\ta\n1\t2\t3\n")]
)
def test_duplicate_column_names_in_a_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TableError, match=rf"{name}: duplicate column names \['a'\]"):
        load_table(path)


def test_csv_header_names_that_only_look_like_pandas_renames_are_fine(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,a.1\n1,2\n")
    assert load_table(path).columns == ("a", "a.1")


def test_duplicate_column_names_in_a_dataframe():
    df = pd.DataFrame([[1, 2, 3]], columns=["a", "b", "a"])
    with pytest.raises(TableError, match=r"duplicate column names \['a'\]"):
        Table.from_frame(df)


def test_row_with_more_fields_than_the_header(tmp_path):
    # pandas would silently make the first column the index and shift every value
    path = tmp_path / "ragged.csv"
    path.write_text("a,b\n1,2,3\n4,5\n")
    with pytest.raises(TableError, match=r"ragged\.csv: a row has more fields than the header"):
        load_table(path)


def test_a_directory(tmp_path):
    folder = tmp_path / "table.csv"
    folder.mkdir()
    with pytest.raises(TableError, match=r"table\.csv: is a directory"):
        load_table(folder)


def test_unknown_suffix(tmp_path):
    path = tmp_path / "t.xlsx"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(TableError, match=r"t\.xlsx: unknown table format '\.xlsx'"):
        load_table(path)


def test_not_parquet(tmp_path):
    path = tmp_path / "t.parquet"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(TableError, match=r"t\.parquet: cannot read as Parquet"):
        load_table(path)


def test_not_utf8(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("name\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(TableError, match=r"latin\.csv: cannot read as a table"):
        load_table(path)


def test_no_columns_and_not_a_dataframe():
    with pytest.raises(TableError, match="no columns"):
        Table.from_frame(pd.DataFrame(index=[0, 1]))
    with pytest.raises(TableError, match="expected a pandas DataFrame, got list"):
        Table.from_frame([[1, 2]])  # type: ignore[arg-type]


def test_unknown_column_lists_the_real_ones():
    t = Table.from_frame(pd.DataFrame({"title": ["x"], "genre": ["y"]}))
    assert t.col_index("genre") == 1
    with pytest.raises(TableError, match=r"no column 'gnere'.*\['title', 'genre'\]"):
        t.col_index("gnere")
