"""The shipped data sets: names, shapes, column types and factor levels as lme4 has them."""

from __future__ import annotations

import pandas as pd
import pytest

import jaxmm

NAMES = [
    "cake",
    "cbpp",
    "dyestuff",
    "dyestuff2",
    "grouseticks",
    "insteval",
    "pastes",
    "penicillin",
    "sleepstudy",
    "verbagg",
]

# name -> (rows, factor columns with their number of levels, numeric columns)
EXPECTED = {
    "cake": (270, {"replicate": 15, "recipe": 3, "temperature": 6}, ["angle", "temp"]),
    "cbpp": (56, {"herd": 15, "period": 4}, ["incidence", "size"]),
    "dyestuff": (30, {"batch": 6}, ["yield"]),
    "dyestuff2": (30, {"batch": 6}, ["yield"]),
    "grouseticks": (403, {"index": 403, "brood": 118, "location": 63, "year": 3}, ["ticks", "height", "cheight"]),
    "insteval": (73421, {"s": 2972, "d": 1128, "dept": 14, "studage": 4, "lectage": 6, "service": 2}, ["y"]),
    "pastes": (60, {"batch": 10, "cask": 3, "sample": 30}, ["strength"]),
    "penicillin": (144, {"plate": 24, "sample": 6}, ["diameter"]),
    "sleepstudy": (180, {"subj": 18}, ["days", "reaction"]),
    "verbagg": (
        7584,
        {"gender": 2, "item": 24, "resp": 3, "id": 316, "btype": 3, "situ": 2, "mode": 2, "r2": 2},
        ["anger"],
    ),
}


@pytest.fixture(scope="module")
def loaded():
    return {name: jaxmm.dataset(name) for name in NAMES}


def test_datasets_lists_the_ten_names():
    assert jaxmm.datasets() == NAMES


@pytest.mark.parametrize("name", ["SleepStudy", "SLEEPSTUDY", "sleepstudy"])
def test_dataset_name_is_case_insensitive(name):
    df = jaxmm.dataset(name)
    assert isinstance(df, pd.DataFrame)
    assert df.shape == (180, 3)
    assert list(df.columns) == ["subj", "days", "reaction"]


def test_dataset_returns_a_fresh_frame():
    a = jaxmm.dataset("dyestuff")
    a.loc[0, "yield"] = -1
    assert jaxmm.dataset("dyestuff").loc[0, "yield"] == 1545


@pytest.mark.parametrize("name", NAMES)
def test_shape_and_column_types(loaded, name):
    df = loaded[name]
    rows, factors, numeric = EXPECTED[name]
    assert len(df) == rows
    assert sorted(df.columns) == sorted([*factors, *numeric])
    assert not df.isna().any().any()
    for col, nlevels in factors.items():
        assert isinstance(df[col].dtype, pd.CategoricalDtype), col
        assert not df[col].cat.ordered
        assert len(df[col].cat.categories) == nlevels, col
        assert all(isinstance(level, str) for level in df[col].cat.categories), col
    for col in numeric:
        assert pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col]), col


def test_specific_shapes(loaded):
    assert loaded["sleepstudy"].shape == (180, 3)
    assert loaded["insteval"].shape == (73421, 7)
    assert loaded["verbagg"].shape == (7584, 9)
    assert loaded["dyestuff"].shape == (30, 2)


def test_numeric_looking_codes_are_factors_in_r_order(loaded):
    # read as strings (not numbers) and ordered numerically, as R's factor() orders them
    dept = loaded["insteval"]["dept"].cat.categories.tolist()
    assert dept == ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "14", "15"]
    assert loaded["insteval"]["studage"].cat.categories.tolist() == ["2", "4", "6", "8"]
    assert loaded["insteval"]["service"].cat.categories.tolist() == ["0", "1"]
    assert loaded["cbpp"]["herd"].cat.categories.tolist() == [str(i) for i in range(1, 16)]
    assert loaded["grouseticks"]["index"].cat.categories.tolist() == [str(i) for i in range(1, 404)]
    assert loaded["grouseticks"]["year"].cat.categories.tolist() == ["95", "96", "97"]
    assert loaded["cake"]["replicate"].cat.categories.tolist() == [str(i) for i in range(1, 16)]
    assert loaded["cake"]["temperature"].cat.categories.tolist() == ["175", "185", "195", "205", "215", "225"]


def test_text_factors_in_lexical_order(loaded):
    assert loaded["sleepstudy"]["subj"].cat.categories[:3].tolist() == ["S308", "S309", "S310"]
    assert loaded["dyestuff"]["batch"].cat.categories.tolist() == list("ABCDEF")
    assert loaded["verbagg"]["resp"].cat.categories.tolist() == ["no", "perhaps", "yes"]
    assert loaded["pastes"]["sample"].cat.categories[:2].tolist() == ["A:a", "A:b"]


def test_values(loaded):
    assert loaded["dyestuff"]["yield"].mean() == pytest.approx(1527.5)
    assert loaded["dyestuff2"]["yield"].mean() == pytest.approx(5.6656)
    sleep = loaded["sleepstudy"]
    assert (sleep["days"].min(), sleep["days"].max()) == (0, 9)
    assert sleep["reaction"].mean() == pytest.approx(298.50789166666664)
    assert sorted(loaded["insteval"]["y"].unique().tolist()) == [1, 2, 3, 4, 5]
    assert (sleep.groupby("subj", observed=True).size() == 10).all()


@pytest.mark.parametrize("name", ["nosuchdata", "sleep_study", ""])
def test_unknown_name_lists_available(name):
    with pytest.raises(ValueError) as err:
        jaxmm.dataset(name)
    message = str(err.value)
    assert f"unknown dataset {name!r}" in message
    assert "available: " + ", ".join(NAMES) in message
