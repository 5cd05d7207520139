"""Parsing lme4 formulas (jaxmm.formula) and the model structure they produce (no fitting)."""

from __future__ import annotations

import re

import pytest

import jaxmm
from jaxmm.formula import MixedFormula, RandomTerm, parse_formula

# ---- parse_formula: accepted syntax -------------------------------------------------------


def test_correlated_vector_term():
    f = parse_formula("reaction ~ 1 + days + (1 + days | subj)")
    assert isinstance(f, MixedFormula)
    assert f.text == "reaction ~ 1 + days + (1 + days | subj)"
    assert f.response == "reaction"
    assert f.fixed == "1 + days"
    assert f.random == (RandomTerm("1 + days", ("subj",), True),)
    assert f.random[0].group_name == "subj"


def test_expression_kept_as_written():
    f = parse_formula("reaction ~ 1 + days + (days | subj)")
    assert f.random == (RandomTerm("days", ("subj",), True),)


@pytest.mark.parametrize(
    "text",
    [
        "reaction ~ 1 + days + (1 + days || subj)",
        "reaction ~ 1 + days + zerocorr(1 + days | subj)",
        "reaction ~ 1 + days + zerocorr (1 + days | subj)",
    ],
)
def test_uncorrelated_terms(text):
    f = parse_formula(text)
    assert f.fixed == "1 + days"
    assert f.random == (RandomTerm("1 + days", ("subj",), False, double_bar="||" in text),)


def test_nested_two_levels():
    f = parse_formula("strength ~ 1 + (1 | batch/cask)")
    assert [t.group for t in f.random] == [("batch",), ("batch", "cask")]
    assert [t.group_name for t in f.random] == ["batch", "batch:cask"]
    assert all(t.expr == "1" and t.correlated for t in f.random)


def test_nested_three_levels():
    f = parse_formula("y ~ 1 + (1 + x | a/b/c)")
    assert [t.group for t in f.random] == [("a",), ("a", "b"), ("a", "b", "c")]
    assert all(t.expr == "1 + x" and t.correlated for t in f.random)


def test_nested_zerocorr_keeps_flag_on_every_level():
    f = parse_formula("y ~ 1 + (1 + x || a/b)")
    assert [(t.group, t.correlated) for t in f.random] == [(("a",), False), (("a", "b"), False)]


def test_interaction_grouping():
    f = parse_formula("angle ~ 1 + (1 | recipe:replicate)")
    assert f.random == (RandomTerm("1", ("recipe", "replicate"), True),)
    assert f.random[0].group_name == "recipe:replicate"


def test_no_intercept_random_term():
    f = parse_formula("y ~ 1 + x + (0 + x | g)")
    assert f.random == (RandomTerm("0 + x", ("g",), True),)
    assert f.fixed == "1 + x"


def test_several_terms_in_order():
    f = parse_formula("y ~ 1 + x + (1 | g) + (0 + x | g) + (1 + x | h) + z")
    assert f.fixed == "1 + x + z"
    assert f.random == (
        RandomTerm("1", ("g",), True),
        RandomTerm("0 + x", ("g",), True),
        RandomTerm("1 + x", ("h",), True),
    )


@pytest.mark.parametrize(
    "text, fixed",
    [
        ("y ~ 0 + x + (1 | g)", "0 + x"),
        ("y ~ x - 1 + (1 | g)", "x - 1"),
        ("y ~ 1 + x + (1 | g) - 1", "1 + x - 1"),
        ("y ~ a*b + (1 | g)", "a*b"),
        ("y ~ 1 + a + b + a:b + (1 | g)", "1 + a + b + a:b"),
        ("y~x+(1|g)", "x"),
    ],
)
def test_fixed_part(text, fixed):
    f = parse_formula(text)
    assert f.fixed == fixed
    assert f.random == (RandomTerm("1", ("g",), True),)


def test_leading_minus_one_keeps_a_valid_fixed_part():
    # '-1 + x' would be an invalid right-hand side on its own; it becomes '1 - 1 + x'.
    f = parse_formula("y ~ -1 + x + (1 | g)")
    assert f.fixed == "1 - 1 + x"


def test_transforms_are_kept_verbatim():
    f = parse_formula("log(y) ~ I(x - 1) + (1|g)")
    assert f.response == "log(y)"
    assert f.fixed == "I(x - 1)"  # the '-' inside I() is not a term separator
    assert f.random == (RandomTerm("1", ("g",), True),)


def test_empty_fixed_part_means_intercept():
    f = parse_formula("y ~ (1|g)")
    assert f.response == "y"
    assert f.fixed == "1"
    assert f.random == (RandomTerm("1", ("g",), True),)


# ---- parse_formula: errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, pieces",
    [
        ("y ~ 1 + x", ["'y ~ 1 + x'", "no random-effects term"]),
        ("y ~ 1 + (1 | g", ["'y ~ 1 + (1 | g'", "unbalanced parentheses"]),
        ("y ~ 1 + x) + (1 | g", ["unbalanced parentheses"]),
        ("y 1 + (1 | g)", ["'y 1 + (1 | g)'", "response ~ terms"]),
        ("~ 1 + (1 | g)", ["response ~ terms"]),
        ("y ~ (1 | g) ~ x", ["response ~ terms"]),
        ("y ~ 1 + (1 | g) +", ["'1 + (1 | g) +'", "ends with an operator"]),
        ("y ~ 1 + + (1 | g)", ["'1 + + (1 | g)'", "empty term"]),
        ("y ~ 1 + x - (1 | g)", ["'(1 | g)'", "cannot be subtracted"]),
        ("y ~ 1 + zerocorr(1 + x)", ["'zerocorr(1 + x)'", "needs a bar term"]),
        ("y ~ 1 + (1 | g | h)", ["'(1 | g | h)'", "exactly one bar"]),
        ("y ~ 1 + (1 | g + h)", ["'g + h'", "'(1 | g + h)'", "column names"]),
        ("y ~ 1 + (1 | log(g))", ["'log(g)'", "column names"]),
        ("y ~ 1 + (1 | 2g)", ["'2g'", "column names"]),
        ("y ~ 1 + ( | g)", ["'( | g)'", "needs an expression and a grouping factor"]),
        ("y ~ 1 + (1 | )", ["'(1 | )'", "needs an expression and a grouping factor"]),
    ],
)
def test_parse_errors_name_the_offending_piece(text, pieces):
    with pytest.raises(ValueError) as err:
        parse_formula(text)
    message = str(err.value)
    assert "\n" not in message
    for piece in pieces:
        assert piece in message, (piece, message)


def test_formula_must_be_a_string():
    with pytest.raises(ValueError, match="formula must be a string.*got int"):
        parse_formula(3)


# ---- the model structure a formula produces (design only, no fit) --------------------------


@pytest.fixture(scope="module")
def sleepstudy():
    return jaxmm.dataset("sleepstudy")


def _only_term(model):
    (term,) = model.structure.terms
    return term


@pytest.mark.parametrize(
    "random",
    ["(1 | subj) + (0 + days | subj)", "zerocorr(1 + days | subj)", "(1 + days || subj)"],
)
def test_uncorrelated_forms_give_the_same_structure(sleepstudy, random):
    m = jaxmm.LinearMixedModel(f"reaction ~ 1 + days + {random}", sleepstudy)
    term = _only_term(m)
    assert term.group == "subj"
    assert term.columns == ("(Intercept)", "days")
    assert term.nlevels == 18
    assert (term.theta_rows, term.theta_cols) == ((0, 1), (0, 1))
    assert m.structure.ntheta == 2
    assert list(m.lowerbd) == [0.0, 0.0]
    assert m.coefnames == ("(Intercept)", "days")
    assert (m.nobs, m.rank) == (180, 2)


@pytest.mark.parametrize("random", ["(1 + days | subj)", "(days | subj)"])
def test_correlated_term_is_column_major(sleepstudy, random):
    m = jaxmm.LinearMixedModel(f"reaction ~ 1 + days + {random}", sleepstudy)
    term = _only_term(m)
    assert term.columns == ("(Intercept)", "days")  # an implicit intercept is added
    assert term.theta_rows == (0, 1, 1)
    assert term.theta_cols == (0, 0, 1)
    assert term.nranef == 36
    assert list(m.lowerbd) == [0.0, -float("inf"), 0.0]
    assert list(m.initial_theta()) == [1.0, 0.0, 1.0]


def test_three_column_correlated_term_order():
    cake = jaxmm.dataset("cake")
    m = jaxmm.LinearMixedModel("angle ~ 1 + temp + (1 + temp + I(temp**2) | replicate)", cake)
    term = _only_term(m)
    assert term.k == 3
    assert term.theta_rows == (0, 1, 2, 1, 2, 2)
    assert term.theta_cols == (0, 0, 0, 1, 1, 2)


def test_nested_pastes_orders_largest_term_first():
    m = jaxmm.LinearMixedModel("strength ~ 1 + (1 | batch/cask)", jaxmm.dataset("pastes"))
    assert [(t.group, t.nlevels) for t in m.structure.terms] == [("batch:cask", 30), ("batch", 10)]
    assert m.design.levels[0][:3] == ("A:a", "A:b", "A:c")
    assert m.structure.ntheta == 2


def test_crossed_penicillin_orders_plate_first():
    m = jaxmm.LinearMixedModel("diameter ~ 1 + (1 | sample) + (1 | plate)", jaxmm.dataset("penicillin"))
    assert [(t.group, t.nlevels) for t in m.structure.terms] == [("plate", 24), ("sample", 6)]
    assert m.structure.qrest == 6
    assert m.nobs == 144


def test_cake_interaction_grouping_and_fixed_names():
    m = jaxmm.LinearMixedModel("angle ~ 1 + recipe * temperature + (1 | recipe:replicate)", jaxmm.dataset("cake"))
    term = _only_term(m)
    assert term.group == "recipe:replicate"
    assert term.nlevels == 45
    names = m.coefnames
    assert len(names) == 18 and m.rank == 18  # 1 + 2 + 5 + 2 * 5, all estimable
    assert names[0] == "(Intercept)"
    assert names[1:3] == ("recipe: B", "recipe: C")
    assert "temperature: 185" in names
    assert "recipe: B & temperature: 185" in names
    assert "recipe: C & temperature: 225" in names
    assert sum(" & " in n for n in names) == 10


def test_categorical_fixed_effect_names():
    cake = jaxmm.dataset("cake")
    m = jaxmm.LinearMixedModel("angle ~ 1 + recipe + temp + (1 | replicate)", cake)
    assert m.coefnames == ("(Intercept)", "recipe: B", "recipe: C", "temp")
    m0 = jaxmm.LinearMixedModel("angle ~ 0 + recipe + (1 | replicate)", cake)
    assert m0.coefnames == ("recipe: A", "recipe: B", "recipe: C")


def test_aliased_fixed_column_is_kept_in_names_but_not_estimable(sleepstudy):
    m = jaxmm.LinearMixedModel("reaction ~ 1 + days + I(2 * days) + (1 | subj)", sleepstudy)
    assert m.coefnames == ("(Intercept)", "days", "I(2 * days)")
    assert m.design.estimable.tolist() == [True, True, False]
    assert m.rank == 2
    assert m.design.x.shape == (180, 2)


def test_random_term_column_names_follow_fixed_naming():
    cake = jaxmm.dataset("cake")
    m = jaxmm.LinearMixedModel("angle ~ 1 + (1 + recipe | replicate)", cake)
    assert _only_term(m).columns == ("(Intercept)", "recipe: B", "recipe: C")
    assert re.fullmatch(r"\d+", m.design.levels[0][0])


def test_caret_is_a_power_inside_calls_and_crossing_outside(sleepstudy):
    """R's I(days^2) is days squared (Python's ^ on integers is exclusive or: a different model)."""
    from jaxmm.formula import r_powers

    squared = jaxmm.fit("reaction ~ 1 + days + I(days^2) + (1|subj)", sleepstudy)
    column = jaxmm.fit("reaction ~ 1 + days + dsq + (1|subj)", sleepstudy.assign(dsq=sleepstudy["days"] ** 2))
    xor = jaxmm.fit("reaction ~ 1 + days + dxor + (1|subj)", sleepstudy.assign(dxor=sleepstudy["days"] ^ 2))
    assert squared.objective == pytest.approx(column.objective, rel=1e-12)
    assert abs(squared.objective - xor.objective) > 0.1  # 1792.94 against 1792.36
    assert r_powers("log(y) ~ I(log(x)^2) + log(x^2) + (a + b)^2 + Q('a^b')") == (
        "log(y) ~ I(log(x)**2) + log(x**2) + (a + b)^2 + Q('a^b')"
    )


def test_terms_in_lme4s_order():
    """lme4's mkReTrms: as written unless the numbers of levels increase, else rev(order(nl)) (ties reversed)."""
    from jaxmm.design import lme4_order

    assert lme4_order(["a", "b", "c"], [18, 18, 10]) == ["a", "b", "c"]  # already non-increasing: as written
    assert lme4_order(["a", "b", "c"], [6, 24, 6]) == ["b", "c", "a"]  # R: rev(order(c(6, 24, 6))) = 2 3 1
    sleep = jaxmm.dataset("sleepstudy").assign(g10=lambda d: [f"g{i % 10}" for i in range(len(d))])
    m = jaxmm.LinearMixedModel("reaction ~ 1 + days + (1 + days | g10) + (1 | subj)", sleep)
    assert [(t.group, t.nlevels, t.nranef) for t in m.structure.terms] == [("subj", 18, 18), ("g10", 10, 20)]
