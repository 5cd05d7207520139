"""lme4-style model formulas: split `y ~ fixed + (expr | g)` into its fixed and random-effects parts.

formulaic parses the fixed part and each random term's model matrix; the bars are parsed here:

- ``(expr | g)``            correlated random effects for the columns of ``expr`` within levels of ``g``
- ``(expr || g)``, ``zerocorr(expr | g)``   the same, uncorrelated (diagonal relative covariance factor)
- ``(expr | a:b)``          grouping by the interaction of ``a`` and ``b``
- ``(expr | a/b)``          nesting: ``(expr | a) + (expr | a:b)``

``^`` means what it means in R: a power inside a function call (``I(x^2)``, ``log(x^2)``), where
the formula engine would evaluate Python's ``^`` (bitwise exclusive or), and the crossing of terms
outside one (``(a + b)^2``, and ``log(x)^2``, which is ``log(x)`` as in R).

R's syntax is translated here into the formula engine's (`to_engine`) before formulaic sees it:

- column names as in R data: ``Days.sq`` (a dot is Python's attribute access) and backticked
  non-syntactic names (`` `reaction time` ``), bare, inside calls, as the response and as a grouping
  factor; ``TRUE`` / ``FALSE``; ``as.factor``;
- the R functions of `R_FUNCTIONS`, evaluated with R's semantics: ``factor(x)`` / ``as.factor(x)``
  (levels sorted, as R's), ``poly(x, k)`` (R's orthogonal polynomials; ``raw = TRUE`` the powers),
  ``scale(x)`` (centred, divided by the standard deviation with n - 1), ``log``, ``exp``, ``sqrt``,
  ``abs``; ``I(...)`` is formulaic's;
- ``offset(expr)`` terms of the fixed part (`MixedFormula.offsets`: added to the linear predictor
  with coefficient 1); ``cbind(successes, failures)`` as a binomial response (`binomial_pair`).

What R formulas can say and a fit here would not mean the same is refused with a one-line
ValueError: ``y ~ .``, ``%in%`` and other ``%op%`` operators, spline bases (``ns``, ``bs``), other
dotted R functions (``as.numeric`` gives a factor's codes in R), ``offset`` in a random-effects term.

Coefficients are named as lme4 names them where the term is a call (`coefficient_name`):
``factor(days)1``, ``poly(days, 2)1``, ``log(x + 1)``, ``I(days^2)``.
"""

from __future__ import annotations

import ast
import functools
import keyword
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from formulaic.transforms import stateful_transform


@dataclass(frozen=True)
class RandomTerm:
    """One bar term as written: model-matrix expression, grouping columns (interaction), correlation;
    double_bar: written (expr || g), which lme4 reads differently where expr has a factor (design.py
    refuses that)."""

    expr: str
    group: tuple[str, ...]
    correlated: bool
    double_bar: bool = False

    @property
    def group_name(self) -> str:
        return ":".join(self.group)


@dataclass(frozen=True)
class MixedFormula:
    """A parsed mixed-model formula: response, fixed-effects right-hand side, the bar terms and the
    offset terms, each expression in the formula engine's syntax (`to_engine`); `variables` the data
    columns the formula names."""

    text: str
    response: str
    fixed: str
    random: tuple[RandomTerm, ...]
    offsets: tuple[str, ...] = ()
    variables: tuple[str, ...] = ()

    def bars_by_group(self) -> list[list[int]]:
        """The positions in `random` of the bars on each grouping factor (a:b and b:a are the same),
        factors in order of first appearance: the bars one random-effects term merges (as MixedModels.jl)."""
        by_group: dict[frozenset[str], list[int]] = {}
        for i, bar in enumerate(self.random):
            by_group.setdefault(frozenset(bar.group), []).append(i)
        return list(by_group.values())


_ZEROCORR = re.compile(r"^zerocorr\s*\((.*)\)$", re.S)


def parse_formula(text: str) -> MixedFormula:
    """Parse an lme4 / MixedModels.jl formula string (see the module docstring for the syntax)."""
    if not isinstance(text, str):
        raise ValueError(f"formula must be a string like 'y ~ 1 + x + (1 | g)', got {type(text).__name__}")
    return _parse(text)


@functools.lru_cache(maxsize=128)
def _parse(text: str) -> MixedFormula:
    """parse_formula's work, once per formula string (a MixedFormula is immutable: sharing one is safe)."""
    if _depth_balance(text) != 0:
        raise ValueError(f"formula {text!r} has unbalanced parentheses")
    parts = _split_top(r_powers(text), "~")
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
        raise ValueError(f"formula {text!r} must have the form 'response ~ terms'")
    response, rhs = parts[0].strip(), parts[1].strip()
    names: set[str] = set()
    response = to_engine(response, names)
    fixed_terms: list[str] = []
    offsets: list[str] = []
    random: list[RandomTerm] = []
    for sign, term in _signed_terms(rhs):
        bar = _bar_term(term)
        offset = _OFFSET.match(term)
        if offset and sign == "-":
            raise ValueError(f"offset term {term!r} cannot be subtracted in formula {text!r}")
        if offset:
            offsets.append(to_engine(offset.group(1), names))
        elif bar is None:
            fixed_terms.append(f"{sign} {to_engine(term, names)}")
        elif sign == "-":
            raise ValueError(f"random-effects term {term!r} cannot be subtracted in formula {text!r}")
        else:
            for t in bar:
                if re.search(r"\boffset\s*\(", t.expr):
                    raise ValueError(
                        f"offset in random-effects term {term!r} is not supported; write it as a fixed term"
                    )
                names.update(t.group)
                random.append(RandomTerm(to_engine(t.expr, names), t.group, t.correlated, t.double_bar))
    if not random:
        raise ValueError(
            f"formula {text!r} has no random-effects term such as (1 | g); "
            "for a model without random effects use a linear model"
        )
    fixed = " ".join(fixed_terms).strip().lstrip("+").strip()
    if not fixed or fixed.startswith("-"):
        fixed = f"1 {fixed}".strip()
    return MixedFormula(
        text=text,
        response=response,
        fixed=fixed,
        random=tuple(random),
        offsets=tuple(offsets),
        variables=tuple(sorted(names)),
    )


_OFFSET = re.compile(r"^offset\s*\((.*)\)$", re.S)
_CBIND = re.compile(r"^cbind\s*\((.*)\)$", re.S)
_TOKEN = re.compile(
    r"""(?P<quoted>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    |(?P<backticked>`[^`]*`)
    |(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?L?)
    |(?P<name>[A-Za-z.][A-Za-z0-9._]*)
    |(?P<operator>%[^%]*%)
    |(?P<other>.)""",
    re.X | re.S,
)
# R's dotted calls and the names the formula engine knows them by (see R_FUNCTIONS)
_R_CALLS = {"as.factor": "as_factor"}
_REFUSED_CALLS = {"ns": "spline bases (ns, bs)", "bs": "spline bases (ns, bs)", "offset": "offset(...) inside a term"}


def to_engine(expr: str, names: set[str] | None = None) -> str:
    """An R expression (a term, a response) in the formula engine's syntax: dotted and non-syntactic
    column names backticked, TRUE / FALSE as Python's, R's dotted calls renamed (`_R_CALLS`), ^ a power
    inside calls (`r_powers`); the data columns it names are added to `names`. What would mean something
    else than in R is refused (see the module docstring)."""
    out = []
    for match in _TOKEN.finditer(expr):
        kind, token = match.lastgroup, match.group()
        rest = expr[match.end() :].lstrip()
        if kind == "operator":
            raise ValueError(f"operator {token!r} in {expr!r} is not supported")
        if kind == "number":
            token = token.removesuffix("L")
        elif kind == "backticked":
            if names is not None:
                names.add(token[1:-1])
        elif kind == "name" and rest.startswith("("):
            if token in _REFUSED_CALLS:
                raise ValueError(f"{_REFUSED_CALLS[token]} in {expr!r}: not supported")
            if "." in token and token not in _R_CALLS and not token.startswith("np."):
                raise ValueError(f"function {token!r} in {expr!r} is not supported (known: {', '.join(R_FUNCTIONS)})")
            token = _R_CALLS.get(token, token)
        elif kind == "name" and rest.startswith("=") and not rest.startswith("=="):
            pass  # a keyword argument, raw = TRUE
        elif kind == "name" and token in ("TRUE", "FALSE"):
            token = token.title()
        elif kind == "name" and token == ".":
            raise ValueError(f"'.' (all other columns) in {expr!r} is not supported; name the columns")
        elif kind == "name" and token not in ("True", "False", "None"):
            if names is not None:
                names.add(token)
            if not token.isidentifier() or keyword.iskeyword(token):
                token = f"`{token}`"
        out.append(token)
    return r_powers("".join(out))


def binomial_pair(response: str) -> tuple[str, str] | None:
    """The two expressions of a ``cbind(successes, failures)`` response (engine syntax), else None."""
    match = _CBIND.match(response)
    if match is None:
        return None
    pair = [piece.strip() for piece in _split_top(match.group(1), ",")]
    if len(pair) != 2 or not all(pair):
        raise ValueError(f"response {response!r} must be cbind(successes, failures)")
    return pair[0], pair[1]


def column_name(expr: str) -> str | None:
    """The column an engine expression names when it is a single (possibly backticked) name, else None."""
    if re.fullmatch(r"`[^`]*`", expr):
        return expr[1:-1]
    return expr if expr.isidentifier() else None


# ---- the R functions formulas may call, with R's semantics ----------------------------------


def factor(x) -> pd.Series:
    """R's factor(x): categorical, levels the sorted distinct values (a categorical's own levels, the
    unused dropped), numbers labelled as R prints them (1, not 1.0)."""
    x = pd.Series(x)
    if isinstance(x.dtype, pd.CategoricalDtype):
        return x.cat.remove_unused_categories()
    levels = sorted(x.dropna().unique())
    labels = [_r_label(v) for v in levels]
    codes = pd.Categorical(x, categories=levels).codes
    return pd.Series(pd.Categorical.from_codes(codes, categories=labels), index=x.index)


def _r_label(value) -> str:
    """A value as R's as.character prints it: TRUE, 1 (not 1.0), 0.5, b."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).upper()
    if isinstance(value, (int, float, np.integer, np.floating)):
        return format(value, ".15g")
    return str(value)


@stateful_transform
def poly(x, degree: int = 1, raw: bool = False, _state=None) -> dict[str, np.ndarray]:
    """R's poly(x, degree): the columns 1..degree of the QR-orthogonalised powers of x - mean(x), each
    of unit length and sign that of Q_j R_jj (R's construction); raw = TRUE: x, x^2, ..., x^degree.

    As R's, the basis is kept as its three-term recurrence (R's coefs alpha, norm2) from the data it
    was first made on, so new data (predict) is evaluated in the fitted data's basis:
    P_0 = 1, P_1 = x - alpha_1, P_(j+1) = (x - alpha_(j+1)) P_j - (norm2_(j+1) / norm2_j) P_(j-1),
    column j = P_j / sqrt(norm2_j), norm2_j = sum of P_j^2 over the fitted data."""
    x = np.asarray(x, dtype=np.float64)
    if raw:
        return {str(k): x**k for k in range(1, degree + 1)}
    if "alpha" not in _state:
        if degree >= len(np.unique(x)):
            raise ValueError(f"poly: degree {degree} must be less than the number of unique points")
        centred = x - x.mean()
        q, r = np.linalg.qr(np.vander(centred, degree + 1, increasing=True))
        p = q * np.diagonal(r)
        norm2 = np.sum(p**2, axis=0)
        _state["alpha"] = list(np.sum(centred[:, None] * p**2, axis=0)[:degree] / norm2[:degree] + x.mean())
        _state["norm2"] = [1.0] + list(norm2)
    alpha, norm2 = _state["alpha"], _state["norm2"]
    p = [np.ones_like(x), x - alpha[0]]
    for j in range(1, degree):
        p.append((x - alpha[j]) * p[j] - (norm2[j + 1] / norm2[j]) * p[j - 1])
    return {str(k): p[k] / np.sqrt(norm2[k + 1]) for k in range(1, degree + 1)}


@stateful_transform
def scale(x, center: bool = True, scale: bool = True, _state=None) -> np.ndarray:
    """R's scale(x): (x - c) / s with c = mean(x) and s the standard deviation (n - 1);
    scale(x, scale = FALSE) centres; center = FALSE: s = sqrt(sum x^2 / (n - 1)). c and s are those of
    the data it was first evaluated on, so new data (predict) is centred and scaled as the fitted data."""
    x = np.asarray(x, dtype=np.float64)
    if "center" not in _state:
        c = x.mean() if center else 0.0
        _state["center"] = float(c)
        _state["scale"] = float(np.sqrt(np.sum((x - c) ** 2) / (len(x) - 1))) if scale else 1.0
    return (x - _state["center"]) / _state["scale"]


R_FUNCTIONS = {
    "factor": factor,
    "as_factor": factor,
    "poly": poly,
    "scale": scale,
    "log": np.log,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "abs": np.abs,
}


# ---- coefficient names as lme4 prints them ---------------------------------------------------

_R_PRECEDENCE = {ast.Add: 1, ast.Sub: 1, ast.Mult: 2, ast.Div: 2, ast.Mod: 2, ast.Pow: 4}
_R_OPERATORS = {ast.Add: " + ", ast.Sub: " - ", ast.Mult: " * ", ast.Div: "/", ast.Mod: "%%", ast.Pow: "^"}


@functools.lru_cache(maxsize=4096)
def coefficient_name(column: str) -> str:
    """A formulaic column name as a coefficient name: a call's columns as R names them (``factor(x)[T.1]``
    -> ``factor(x)1``, ``poly(x, 2)[1]`` -> ``poly(x, 2)1``, ``I(x ** 2)`` -> ``I(x^2)``), a column's levels
    as MixedModels.jl names them (``x[T.b]`` -> ``x: b``), interactions joined by `` & ``. Cached: every
    model built from a formula names the same columns again."""
    if column == "Intercept":
        return "(Intercept)"
    parts = []
    for piece in _split_top(column, ":"):
        level = None
        if piece.endswith("]") and "[" in piece and not piece.endswith("`]"):
            piece, level = piece[:-1].rsplit("[", 1)
            level = level.removeprefix("T.")
        if re.match(r"^[\w.]+\s*\(", piece) and piece.endswith(")"):
            parts.append(_r_deparse(piece) + (level or ""))
        else:
            parts.append(piece if level is None else f"{piece}: {level}")
    return " & ".join(parts)


def _r_deparse(expr: str) -> str:
    """An engine expression as R's deparse prints it (backticked names restored); as it is if it is not
    plain Python."""
    quoted = {}

    def placeholder(match):
        quoted[f"_q{len(quoted)}_"] = match.group()[1:-1]
        return f"_q{len(quoted) - 1}_"

    try:
        tree = ast.parse(re.sub(r"`[^`]*`", placeholder, expr), mode="eval").body
        return _r_render(tree, quoted)
    except (SyntaxError, ValueError):
        return expr


def _r_render(node, quoted: dict[str, str]) -> str:
    def child(sub, parent_precedence: int, right: bool) -> str:
        text = _r_render(sub, quoted)
        p = _R_PRECEDENCE.get(type(sub.op), 3) if isinstance(sub, (ast.BinOp, ast.UnaryOp)) else 5
        if isinstance(sub, ast.UnaryOp):
            p = 3
        pow_parent = parent_precedence == 4
        if p < parent_precedence or (p == parent_precedence and (right != pow_parent)):
            return f"({text})"
        return text

    if isinstance(node, ast.Name):
        name = quoted.get(node.id, node.id)
        name = {"as_factor": "as.factor", "True": "TRUE", "False": "FALSE"}.get(name, name)
        return name if re.fullmatch(r"[A-Za-z.][\w.]*", name) else f"`{name}`"
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool):
            return str(node.value).upper()
        if isinstance(node.value, (int, float)):
            return format(node.value, ".15g")
        if isinstance(node.value, str):
            return '"' + node.value + '"'
    if isinstance(node, ast.BinOp) and type(node.op) in _R_OPERATORS:
        p = _R_PRECEDENCE[type(node.op)]
        return child(node.left, p, False) + _R_OPERATORS[type(node.op)] + child(node.right, p, True)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return "-" + child(node.operand, 3, True)
    if isinstance(node, ast.Call):
        args = [_r_render(a, quoted) for a in node.args]
        args += [f"{k.arg} = {_r_render(k.value, quoted)}" for k in node.keywords]
        return f"{_r_render(node.func, quoted)}({', '.join(args)})"
    if isinstance(node, ast.Attribute):
        return f"{_r_render(node.value, quoted)}.{node.attr}"
    return ast.unparse(node)


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
    double_bar = len(double) == 2
    return [RandomTerm(expr, group, correlated, double_bar) for group in _grouping_factors(grouping, term)]


def _unquoted(name: str) -> str:
    return name[1:-1] if name.startswith("`") and name.endswith("`") else name


def _grouping_factors(grouping: str, term: str) -> list[tuple[str, ...]]:
    """'a/b/c' -> [(a,), (a,b), (a,b,c)]; 'a:b' -> [(a,b)]."""
    nested = [g.strip() for g in grouping.split("/")]
    factors, prefix = [], ()
    for piece in nested:
        # a:a is a (the interaction of a factor with itself), as in lme4
        names = tuple(dict.fromkeys(_unquoted(name.strip()) for name in piece.split(":")))
        if not all(re.fullmatch(r"[A-Za-z_.][\w.]*|`[^`]+`", name.strip()) for name in piece.split(":")):
            raise ValueError(f"grouping factor {grouping!r} in {term!r} must be column names joined by ':' or '/'")
        prefix = prefix + tuple(name for name in names if name not in prefix)
        factors.append(prefix)
    return factors
