"""Notebook displays (_repr_html_): well-formed HTML holding the numbers the text displays print,
names escaped."""

from html.parser import HTMLParser

import pytest

import jaxmm

SMALL, LARGE = "reaction ~ 1 + days + (1 | subj)", "reaction ~ 1 + days + (1 + days | subj)"


class _Reader(HTMLParser):
    """The text of every element, and a check that each tag closes in order."""

    VOID = {"br"}

    def __init__(self):
        super().__init__()
        self.open: list[str] = []
        self.texts: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open.pop() == tag, f"</{tag}> closes nothing open"

    def handle_data(self, data):
        self.texts.append(data.strip())


def _read(html: str) -> _Reader:
    reader = _Reader()
    reader.feed(html)
    reader.close()
    assert reader.open == [], f"unclosed: {reader.open}"
    return reader


def _numbers(text: str) -> set[str]:
    """The printed numbers of a text display, as printed: words that parse as numbers, or p-values like <1e-9."""

    def number(word: str) -> bool:
        try:
            float(word)
        except ValueError:
            return word.startswith("<1e")
        return True

    return {word for word in text.split() if number(word)}


def _check(obj) -> _Reader:
    reader = _read(obj._repr_html_())
    assert "table" in reader.tags
    cells = set(reader.texts) | {w for t in reader.texts for w in t.split()}
    missing = _numbers(repr(obj)) - cells
    assert not missing, f"printed but not in the HTML: {sorted(missing)}"
    return reader


@pytest.fixture(scope="module")
def sleep():
    return jaxmm.dataset("sleepstudy")


@pytest.fixture(scope="module")
def fits(sleep):
    return jaxmm.fit(SMALL, sleep), jaxmm.fit(LARGE, sleep)


def test_model_html_holds_the_summarys_numbers(fits, sleep):
    reader = _check(fits[1])
    assert {"logLik", "AIC", "Variance components:", "Fixed-effects parameters:", "+0.08"} <= set(reader.texts)
    reml = _check(jaxmm.fit(LARGE, sleep, REML=True))
    assert any(t.startswith("REML criterion at convergence:") for t in reml.texts)


def test_names_are_escaped(sleep):
    m = jaxmm.fit("reaction ~ 1 + I(days > 4) + (1 | subj)", sleep)
    html = m._repr_html_()
    assert "I(days > 4)" not in html and "I(days &gt; 4)" in html
    assert "I(days > 4)" in _check(m).texts
    unfitted = jaxmm.LinearMixedModel("reaction ~ 1 + (1 | subj)", sleep)._repr_html_()
    assert _read(unfitted).texts == [repr(jaxmm.LinearMixedModel("reaction ~ 1 + (1 | subj)", sleep))]


def test_bootstrap_html_holds_the_summarys_numbers():
    m = jaxmm.fit("yield ~ 1 + (1 | batch)", jaxmm.dataset("dyestuff"))
    samp = jaxmm.parametricbootstrap(7, 100, m, progress=False)
    reader = _check(samp)
    assert set(samp.tbl.columns) <= set(reader.texts)


def test_test_tables_html_hold_the_printed_numbers(fits):
    reader = _check(jaxmm.likelihoodratiotest(*fits))
    assert {SMALL, LARGE} <= set(reader.texts)
    reader = _check(jaxmm.pblrt(3, 100, *fits, progress=False))
    assert {"LRT", "PBtest", "Gamma", "Bartlett"} <= set(reader.texts)
