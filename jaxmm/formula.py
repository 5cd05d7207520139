"""lme4-style model formulas: split `y ~ fixed + (expr | g)` into its fixed and random-effects parts.

formulaic parses the fixed part and each random term's model matrix; the bars are parsed here:

- ``(expr | g)``            correlated random effects for the columns of ``expr`` within levels of ``g``
- ``(expr || g)``, ``zerocorr(expr | g)``   the same, uncorrelated (diagonal relative covariance factor)
- ``(expr | a:b)``          grouping by the interaction of ``a`` and ``b``
- ``(expr | a/b)``          nesting: ``(expr | a) + (expr | a:b)``

``^`` means what it means in R: a power inside a function call (``I(x^2)``, ``log(x^2)``), where
the formula engine would evaluate Python's ``^`` (bitwise exclusive or), and the crossing of terms
outside one (``(a + b)^2``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class RandomTerm:
    """One bar term as written: model-matrix expression, grouping columns (interaction), correlation."""

    expr: str
    group: tuple[str, ...]
    correlated: bool

    @property
    def group_name(self) -> str:
        return ":".join(self.group)


@dataclass(frozen=True)
class MixedFormula:
    """A parsed mixed-model formula: response, fixed-effects right-hand side and the bar terms."""

    text: str
    response: str
    fixed: str
    random: tuple[RandomTerm, ...]


_ZEROCORR = re.compile(r"^zerocorr\s*\((.*)\)$", re.S)


def parse_formula(text: str) -> MixedFormula:
    """Parse an lme4 / MixedModels.jl formula string (see the module docstring for the syntax)."""
    if not isinstance(text, str):
        raise ValueError(f"formula must be a string like 'y ~ 1 + x + (1 | g)', got {type(text).__name__}")
    if _depth_balance(text) != 0:
        raise ValueError(f"formula {text!r} has unbalanced parentheses")
    parts = _split_top(r_powers(text), "~")
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
        raise ValueError(f"formula {text!r} must have the form 'response ~ terms'")
    response, rhs = parts[0].strip(), parts[1].strip()
    fixed_terms: list[str] = []
    random: list[RandomTerm] = []
    for sign, term in _signed_terms(rhs):
        bar = _bar_term(term)
        if bar is None:
            fixed_terms.append(f"{sign} {term}")
        elif sign == "-":
            raise ValueError(f"random-effects term {term!r} cannot be subtracted in formula {text!r}")
        else:
            random.extend(bar)
    if not random:
        raise ValueError(
            f"formula {text!r} has no random-effects term such as (1 | g); "
            "for a model without random effects use a linear model"
        )
    fixed = " ".join(fixed_terms).strip().lstrip("+").strip()
    if not fixed or fixed.startswith("-"):
        fixed = f"1 {fixed}".strip()
    return MixedFormula(text=text, response=response, fixed=fixed, random=tuple(random))


def r_powers(text: str) -> str:
    """R's ``^`` inside function calls written as Python's ``**``; outside calls (term crossing) and
    inside quoted names it is left as it is."""
    out, calls, quote = [], [], None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            before = text[:i].rstrip()
            calls.append(bool(before) and (before[-1].isalnum() or before[-1] in "_."))
        elif ch == ")" and calls:
            calls.pop()
        elif ch == "^" and any(calls):
            out.append("**")
            continue
        out.append(ch)
    return "".join(out)


def _depth_balance(text: str) -> int:
    depth = 0
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return -1
    return depth


def _split_top(text: str, sep: str) -> list[str]:
    """Split at `sep` where it stands outside all parentheses."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(text[start:])
    return parts


def _signed_terms(rhs: str) -> list[tuple[str, str]]:
    """Top-level terms of a right-hand side with their sign: '1 + x - 1' -> [(+,1), (+,x), (-,1)]."""
    terms, depth, sign, start = [], 0, "+", 0
    for i, ch in enumerate(rhs):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and ch in "+-":
            if rhs[start:i].strip():
                terms.append((sign, rhs[start:i].strip()))
            elif (terms or sign == "-") and not (sign == "+" and ch == "-"):
                # '+ -1' is a unary minus, lme4's '- 1'; '+ +' and '- -' are typing errors
                raise ValueError(f"formula right-hand side {rhs!r} has an empty term")
            sign, start = ch, i + 1
    if not rhs[start:].strip():
        raise ValueError(f"formula right-hand side {rhs!r} ends with an operator")
    terms.append((sign, rhs[start:].strip()))
    return terms


def _bar_term(term: str) -> list[RandomTerm] | None:
    """Expand `(expr | g)`, `(expr || g)` or `zerocorr(expr | g)`; None for a fixed-effects term."""
    zc = _ZEROCORR.match(term)
    inner, forced_zerocorr = (zc.group(1), True) if zc else (None, False)
    if inner is None:
        if not (term.startswith("(") and term.endswith(")") and _depth_balance(term[1:-1]) == 0):
            return None
        inner = term[1:-1]
    if len(_split_top(inner, "|")) == 1:
        if forced_zerocorr:
            raise ValueError(f"zerocorr needs a bar term such as zerocorr(1 + x | g), got {term!r}")
        return None
    double = _split_top(inner, "||")
    correlated = len(double) == 1 and not forced_zerocorr
    pieces = double if len(double) == 2 else _split_top(inner, "|")
    if len(pieces) != 2:
        raise ValueError(f"random-effects term {term!r} must have exactly one bar: (expr | group)")
    expr, grouping = pieces[0].strip(), pieces[1].strip()
    if not expr or not grouping:
        raise ValueError(f"random-effects term {term!r} needs an expression and a grouping factor")
    return [RandomTerm(expr, group, correlated) for group in _grouping_factors(grouping, term)]


def _grouping_factors(grouping: str, term: str) -> list[tuple[str, ...]]:
    """'a/b/c' -> [(a,), (a,b), (a,b,c)]; 'a:b' -> [(a,b)]."""
    nested = [g.strip() for g in grouping.split("/")]
    factors, prefix = [], ()
    for piece in nested:
        # a:a is a (the interaction of a factor with itself), as in lme4
        names = tuple(dict.fromkeys(name.strip() for name in piece.split(":")))
        if not all(re.fullmatch(r"[A-Za-z_.][\w.]*", name) for name in names):
            raise ValueError(f"grouping factor {grouping!r} in {term!r} must be column names joined by ':' or '/'")
        prefix = prefix + tuple(name for name in names if name not in prefix)
        factors.append(prefix)
    return factors
