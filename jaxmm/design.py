"""From a formula and a data frame to the model's blocks of sufficient statistics.

For y = X beta + Z b + e, everything the profiled deviance needs is in the cross-products

    Z'Z, Z'X, X'X      (fixed by the design, shared by every response)
    Z'y, X'y, y'y      (the response's sufficient statistics)

Z is split by random-effects term. Terms are ordered as lme4 orders them (`lme4_order`), so that
theta, the conditional modes and the bootstrap's columns line up with lme4's. The first term's
Z1'Z1 is block diagonal (one k1 x k1 block per level) and is stored as an array of shape
(m1, k1, k1); every other block is stored dense.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import scipy.sparse as sp
from formulaic import Formula, model_matrix
from jax import Array

from ._compile import computing
from ._warn import warn
from .covariance import TermSpec, column_diag, lowerbd, theta_pattern, transform_theta
from .formula import R_FUNCTIONS, MixedFormula, RandomTerm, coefficient_name, column_name, parse_formula


@dataclass(frozen=True)
class Structure:
    """Static shape of a model: what jit specialises on (hashable)."""

    terms: tuple[TermSpec, ...]
    n: int
    p: int

    @property
    def ntheta(self) -> int:
        return sum(t.ntheta for t in self.terms)

    @property
    def lowerbd(self) -> np.ndarray:
        return lowerbd(self.terms)

    @property
    def column_diag(self) -> np.ndarray:
        return column_diag(self.terms)

    @property
    def qrest(self) -> int:
        return sum(t.nranef for t in self.terms[1:])


class Blocks(NamedTuple):
    """Response-independent cross-products (see the module docstring); r = terms 2..T.

    Eliminating term 1 needs Z1'Zr and the products sum_j (Z1'Zr)_j' M_j (Z1'Zr)_j, and Z1'Zr is
    stored in whichever of two forms costs less to use (`_dense_is_cheaper`):
    - dense, `z1zr` (m1, k1, qr), in fully crossed designs (every subject sees every item), where the
      products are small matrix products;
    - sparse, as its nonzero (level j, column a) k1-vectors and the list of (level, column a, column b)
      triples whose k1 x k1 outer products are nonzero (a <= b), in designs where a level of term 1
      meets few columns of Zr (a student rates a few of the lecturers). For insteval this is 1.8
      million triples where the dense product has 3.9 billion multiply-adds.
    The unused form has length 0 (z1zr (m1, k1, 0); E = P = 0).
    """

    z1z1: Array  # (m1, k1, k1)
    z1x: Array  # (m1, k1, p)
    zrzr: Array  # (qr, qr)
    zrx: Array  # (qr, p)
    xx: Array  # (p, p)
    z1zr: Array  # (m1, k1, qr) dense Z1'Zr, or (m1, k1, 0)
    nz_level: Array  # (E,) level j of each nonzero column block of Z1'Zr
    nz_col: Array  # (E,) its column a in Zr
    nz_vec: Array  # (E, k1) the k1-vector (Z1'Zr)_j[:, a]
    pair_level: Array  # (P,) level j
    pair_target: Array  # (P,) a * qr + b, with a <= b, sorted
    pair_outer: Array  # (P, k1, k1) (Z1'Zr)_j[:, a] (Z1'Zr)_j[:, b]'

    @property
    def dense_z1zr(self) -> bool:
        """Whether Z1'Zr is stored dense (`z1zr`) rather than as its nonzero blocks: static (a shape)."""
        return self.z1zr.shape[-1] > 0


class SuffStats(NamedTuple):
    """The response's sufficient statistics Z1'y, Zr'y, X'y and y'y."""

    z1y: Array  # (m1, k1)
    zry: Array  # (qr,)
    xy: Array  # (p,)
    yy: Array  # ()


class ModelMatrices(NamedTuple):
    """X (estimable columns only, standardised: see `Design.beta_scaling`) and each term's Z in compact
    form: level index and k columns; the offset o and prior weights w, if given.

    The linear predictor is X beta + o + Z b. An LMM's residual variances are sigma^2 / w_i: its
    blocks and sufficient statistics are the weighted sums X'WX, Z'WX, Z'WZ, X'Wy, Z'Wy, y'Wy
    (W = diag(w)); a binomial GLMM's w are the numbers of trials."""

    x: Array  # (n, p)
    refs: tuple[Array, ...]  # per term, (n,) int level index
    z: tuple[Array, ...]  # per term, (n, k)
    offset: Array | None = None  # (n,)
    weights: Array | None = None  # (n,)


@dataclass
class Design:
    """Everything derived from (formula, data): names, matrices and blocks."""

    formula: MixedFormula
    structure: Structure
    response: str  # the response column's name (the expression, where it is not a single column)
    y: np.ndarray
    coefnames: tuple[str, ...]  # all fixed-effects columns, estimable or not
    estimable: np.ndarray  # bool mask over coefnames
    levels: tuple[tuple[str, ...], ...]  # per term, the grouping factor's levels
    x: np.ndarray  # (n, p) the estimable columns of X as the formula gives them
    beta_scaling: np.ndarray  # (p, p) A with x = matrices.x @ A: the fit's beta is A beta (see `standardise`)
    intercept: int | None  # the column of matrices.x that is all ones, if any
    z_transforms: tuple[np.ndarray, ...]  # per term, T_t with z_t = matrices.z[t] @ T_t (see `column_transform`)
    z_back: tuple[np.ndarray, ...]  # per term, T_t^-1
    matrices: ModelMatrices
    blocks: Blocks
    ndropped: int
    data: pd.DataFrame | None = None  # the rows fitted (complete cases): what new data is encoded like
    offset_column: str | None = None  # the column of data holding offset= ("(offset)": given as an array)

    def to_fit_theta(self, theta: np.ndarray) -> np.ndarray:
        """theta in the fit's parametrisation (of matrices.z, whose random effects are b_fit = T_t b):
        lambda_fit = T_t lambda_t (covariance.transform_theta)."""
        return self._transform_theta(theta, self.z_transforms)

    def from_fit_theta(self, theta_fit: np.ndarray) -> np.ndarray:
        """theta back from the fit's parametrisation: lambda_t = T_t^-1 lambda_fit (covariance.transform_theta)."""
        return self._transform_theta(theta_fit, self.z_back)

    def _transform_theta(self, theta: np.ndarray, maps: tuple[np.ndarray, ...]) -> np.ndarray:
        theta = np.asarray(theta, dtype=np.float64)
        terms = self.structure.terms
        if all(np.array_equal(m, np.diag(np.diagonal(m))) for m in maps):  # lambda_t's elements scaled by rows
            return theta * np.concatenate([np.diagonal(m)[list(t.theta_rows)] for m, t in zip(maps, terms)])
        with computing():
            return np.asarray(_transform_theta(jnp.asarray(theta), maps, terms=terms))

    @property
    def weights(self) -> np.ndarray | None:
        """The prior weights w (see `ModelMatrices`), if given."""
        return self.matrices.weights

    @property
    def offset(self) -> np.ndarray:
        """The offset o of the linear predictor X beta + o + Z b (zeros if none was given)."""
        return np.zeros(self.structure.n) if self.matrices.offset is None else self.matrices.offset

    def to_fit_beta(self, beta: np.ndarray) -> np.ndarray:
        """Estimable coefficients in the fit's parametrisation (of matrices.x): A beta."""
        return self.beta_scaling @ np.asarray(beta, dtype=np.float64)

    @property
    def beta_back(self) -> np.ndarray:
        """A^-1: beta = A^-1 beta_fit."""
        return np.linalg.inv(self.beta_scaling)

    def from_fit_beta(self, beta_fit: np.ndarray, vcov_fit: np.ndarray | None = None):
        """Coefficients (and their covariance) back from the fit's parametrisation: A^-1 b (A^-1 V A^-T)."""
        back = self.beta_back
        beta = back @ np.asarray(beta_fit, dtype=np.float64)
        return beta if vcov_fit is None else (beta, back @ np.asarray(vcov_fit, dtype=np.float64) @ back.T)


def column_transform(
    z: np.ndarray, full: bool, low: float = 1e-2, high: float = 1e2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z_fit, T, T^-1) with z = z_fit T: the columns of a random-effects term as the fit takes them,
    in ordinary units and origin. A reparametrisation of the term's random effects (b_fit = T b,
    lambda_fit = T lambda: covariance.transform_theta) that leaves the model as it is.

    A column far from 0 relative to its spread (|mean| > high sd: a slope in years AD, a Unix time)
    is centred, z_fit_j = (z_j - m_j) / s_j (T_jj = s_j, T_cj = m_j for the intercept column c),
    where the term has an intercept and a `full` lower-triangular lambda_t, whose family of
    covariances a change of origin keeps (a zerocorr term's does not: there the origin is part of
    the model). Every other column is only scaled, z_fit_j = z_j / s_j. s_j is the column's spread
    (root mean square; sd once centred) where that is outside [low, high], else 1: columns in
    ordinary units are left exactly as they are."""
    n, k = z.shape
    z_fit, transform, back = np.array(z, dtype=np.float64), np.eye(k), np.eye(k)
    ones = np.flatnonzero(np.all(z == 1.0, axis=0)) if n else ()
    for j in range(k):
        m, sd = (z[:, j].mean(), z[:, j].std()) if n else (0.0, 0.0)
        centre = full and len(ones) > 0 and j != ones[0] and sd > 0 and abs(m) > high * sd
        spread = sd if centre else (np.sqrt(np.mean(z[:, j] ** 2)) if n else 0.0)
        s = spread if spread > 0 and (spread < low or spread > high) else 1.0
        if centre:
            z_fit[:, j] -= m
            transform[ones[0], j], back[ones[0], j] = m, -m / s
        z_fit[:, j] /= s
        transform[j, j], back[j, j] = s, 1.0 / s
    return z_fit, transform, back


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x = xs A with columns of xs of unit scale: a reparametrisation of the fixed effects (x beta =
    xs (A beta)) that keeps the fit well conditioned whatever the columns' units and offsets (a Unix
    time, a response in the millions).

    Where x has a constant column c, every other column is centred and scaled, xs_j = (x_j - m_j) / s_j
    (mean, standard deviation), and xs_c = 1: A_jj = s_j, A_cj = m_j, A_cc = x_c. Without one, the span
    of x need not hold 1, so columns are only scaled by their root mean square."""
    n, p = x.shape
    ptp = np.ptp(x, axis=0) if n else np.zeros(p)
    constant = np.flatnonzero((ptp == 0) & (x[0] != 0)) if n else np.array([], dtype=int)
    a = np.zeros((p, p))
    xs = np.array(x, dtype=np.float64)
    if len(constant):
        c = int(constant[0])
        for j in range(p):
            if j == c:
                a[c, c] = x[0, c]
                xs[:, c] = 1.0
            else:
                m, s = x[:, j].mean(), x[:, j].std()
                s = s if s > 0 else 1.0
                xs[:, j] = (x[:, j] - m) / s
                a[j, j], a[c, j] = s, m
    else:
        for j in range(p):
            s = np.sqrt(np.mean(x[:, j] ** 2))
            s = s if s > 0 else 1.0
            xs[:, j] = x[:, j] / s
            a[j, j] = s
    return xs, a


_transform_theta = jax.jit(transform_theta, static_argnames="terms")


def fixed_predictor(mats: ModelMatrices, beta: Array) -> Array:
    """X beta + o, o the offset where the model has one. Pure (NumPy or JAX)."""
    return mats.x @ beta if mats.offset is None else mats.x @ beta + mats.offset


def suffstats(mats: ModelMatrices, structure: Structure, y: Array) -> SuffStats:
    """Z1'Wy, Zr'Wy, X'Wy, y'Wy for one response y (n,), W the prior weights (I if none: see
    `ModelMatrices`). Pure JAX: vmap it over a batch of responses."""
    wy = y if mats.weights is None else mats.weights * y
    per_term = [
        jax.ops.segment_sum(z * wy[:, None], refs, num_segments=t.nlevels)
        for refs, z, t in zip(mats.refs, mats.z, structure.terms)
    ]
    zry = jnp.concatenate([s.reshape(-1) for s in per_term[1:]]) if len(per_term) > 1 else jnp.zeros((0,), y.dtype)
    return SuffStats(per_term[0], zry, mats.x.T @ wy, y @ wy)


def modes_by_term(u, structure: Structure) -> tuple:
    """The spherical modes u (all terms, level-major within each; NumPy or JAX) as one
    (levels x k) array per term."""
    out, offset = [], 0
    for t in structure.terms:
        out.append(u[offset : offset + t.nranef].reshape(t.nlevels, t.k))
        offset += t.nranef
    return tuple(out)


def build_design(
    formula: str | MixedFormula, data: pd.DataFrame, residual: bool = True, weights=None, offset=None
) -> Design:
    """Parse `formula`, check it against `data`, drop incomplete rows (with a warning) and form the blocks.

    residual=False (a generalized linear mixed model, which has no residual variance) skips the
    checks that a residual variance be identifiable: there a random effect per observation is
    an identifiable overdispersion term. `weights` (prior weights) and `offset` are each a column
    name or one value per row of `data`; rows where either is missing are dropped with the others.
    The offset is `offset` plus the formula's offset() terms (see `ModelMatrices`)."""
    mf = formula if isinstance(formula, MixedFormula) else parse_formula(formula)
    data = as_data_frame(data)
    data, weights = _given_column(data, weights, "weights")
    data, offset = _given_column(data, offset, "offset")
    data, frame, ndropped = _complete_rows(mf, data, tuple(c for c in (weights, offset) if c is not None))
    y = frame.response
    _require_finite("response", (mf.response,), y[:, None])
    offsets = list(frame.offsets) + ([] if offset is None else [_numeric_column(data[offset], "offset")])
    offset_values = np.sum(offsets, axis=0) if offsets else None
    if offset_values is not None:
        _require_finite("offset", ("offset",), offset_values[:, None])
    w = None if weights is None else _weights(data[weights])
    x_all, coefnames = frame.x, frame.coefnames
    _require_finite("fixed-effects", coefnames, x_all)
    xs_all, _ = standardise(x_all)
    estimable = _estimable_columns(xs_all)
    if not estimable.all():
        dropped = [name for name, keep in zip(coefnames, estimable) if not keep]
        warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} column(s) / coefficient(s): "
            f"{', '.join(map(repr, dropped))} (each a linear combination of the columns before it; "
            "m.estimable says which, m.beta shows them as -0.0)",
        )
    x = x_all[:, estimable]
    xs, a = standardise(x)
    n, p = x.shape
    if p >= n:
        raise ValueError(
            f"the fixed effects have rank {p} for {n} observations; "
            "nothing is left to estimate the variance components from"
        )
    # exactly: relative to the response's spread about its mean, whatever its location, when X has an intercept
    ones = np.flatnonzero(np.all(xs == 1.0, axis=0))
    intercept = int(ones[0]) if len(ones) else None
    y_o = y if offset_values is None else y - offset_values
    spread = np.linalg.norm(y_o - y_o.mean()) if intercept is not None else np.linalg.norm(y_o)
    exact = np.linalg.norm(y_o - xs @ np.linalg.lstsq(xs, y_o, rcond=None)[0]) <= 1e-12 * spread
    if residual and (exact or (intercept is not None and np.ptp(y_o) == 0)):
        raise ValueError(
            f"response {mf.response!r} is fitted exactly by the fixed effects "
            f"({', '.join(np.array(coefnames)[estimable])}): "
            "its residual variance would be 0"
        )
    terms, refs, zs, levels = _random_terms(mf, data, frame, residual)
    for t in terms:
        if residual and t.nranef >= n:
            raise ValueError(
                f"random-effects term for {t.group!r} has {t.nranef} random effects for {n} observations; "
                "its variance and the residual variance are unidentifiable"
            )
    structure = Structure(terms=terms, n=n, p=p)
    zs, transforms, backs = zip(*(column_transform(z, t.ntheta == t.k * (t.k + 1) // 2) for z, t in zip(zs, terms)))
    return Design(
        formula=mf,
        structure=structure,
        response=column_name(mf.response) or mf.response,
        y=y,
        coefnames=coefnames,
        estimable=estimable,
        levels=levels,
        x=x,
        beta_scaling=a,
        intercept=intercept,
        z_transforms=transforms,
        z_back=backs,
        matrices=ModelMatrices(xs, refs, zs, offset_values, w),
        blocks=_blocks(structure, refs, zs, xs) if w is None else _weighted_blocks(structure, refs, zs, xs, w),
        ndropped=ndropped,
        data=data,
        offset_column=offset,
    )


def as_data_frame(data) -> pd.DataFrame:
    """data as a pandas DataFrame: itself, or converted by its to_pandas() (pyarrow and polars tables).

    Column names must be unique: a formula names columns, and a repeated name would be ambiguous."""
    if not isinstance(data, pd.DataFrame):
        convert = getattr(data, "to_pandas", None)
        converted = None
        if callable(convert):
            try:
                converted = convert()
            except Exception as err:
                raise ValueError(
                    f"data of type {type(data).__name__} could not be converted to pandas: {err}"
                ) from None
        if not isinstance(converted, pd.DataFrame):
            raise ValueError(
                "data must be a pandas DataFrame (or a table with .to_pandas(), such as pyarrow's or polars'), "
                f"got {type(data).__name__}"
            )
        data = converted
    if not data.columns.is_unique:
        repeated = data.columns[data.columns.duplicated()].unique().tolist()
        raise ValueError(f"data has more than one column named {repeated[0]!r}; column names must be unique")
    return data


def _given_column(data: pd.DataFrame, value, what: str) -> tuple[pd.DataFrame, str | None]:
    """`value` (weights=, offset=) as the name of a column of `data`: a name must be one, an array
    (one value per row) becomes the column "(what)"."""
    if value is None:
        return data, None
    if isinstance(value, str):
        if value not in data.columns:
            raise ValueError(f"{what} {value!r} is not a column of the data")
        return data, value
    values = np.asarray(value)
    if values.shape != (len(data),):
        raise ValueError(
            f"{what} must be a column name or have one value per row of data ({len(data)}), got shape {values.shape}"
        )
    return data.assign(**{f"({what})": values}), f"({what})"


def _numeric_column(column: pd.Series, what: str) -> np.ndarray:
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        raise ValueError(f"{what} must be numeric, got dtype {column.dtype}")
    return column.to_numpy(dtype=np.float64)


def _weights(column: pd.Series) -> np.ndarray:
    w = _numeric_column(column, "weights")
    if not np.all(np.isfinite(w) & (w > 0)):
        raise ValueError(f"weights must be finite and positive, got {w[~(np.isfinite(w) & (w > 0))][0]}")
    return w


def _formulaic(what: str, expr: str, call):
    """Run a formulaic call; its errors (multi-line, coloured) become one-line ValueErrors naming `expr`."""
    try:
        return call()
    except ValueError:
        raise
    except Exception as err:
        first = (
            re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        )
        raise ValueError(f"cannot evaluate {what} {expr!r}: {first}") from None


class _Frame(NamedTuple):
    """The formula evaluated on the rows of a data frame (`_evaluate`): the response, each offset() term,
    the fixed-effects columns and their coefficient names, and per bar term (`MixedFormula.random`) its
    columns, their names and the categorical variables among them."""

    response: np.ndarray  # (n,)
    offsets: tuple[np.ndarray, ...]  # per offset() term, (n,)
    x: np.ndarray  # (n, p) every fixed-effects column
    coefnames: tuple[str, ...]
    bars: tuple[tuple[np.ndarray, tuple[str, ...], tuple[str, ...]], ...]  # per bar: z (n, k), names, factors


@functools.lru_cache(maxsize=128)
def _engine_formula(mf: MixedFormula) -> Formula:
    """The whole model as one formulaic formula, parsed once per formula: left-hand side the response and each
    offset() term (I(expr): `-` is arithmetic there), right-hand side the fixed part and each bar's expression,
    so that one model_matrix call evaluates every column (`_evaluate`). Each part is parsed by itself, so a
    syntax error names it. formulaic's formulas are not changed by evaluating them: sharing one is safe."""
    fixed = f"{mf.response} ~ {mf.fixed}"
    whole = _formulaic("formula", fixed, lambda: Formula(fixed))
    lhs = {"response": whole.lhs}
    for i, e in enumerate(mf.offsets):
        lhs[f"offset{i}"] = _formulaic(f"offset({e})", f"I({e})", lambda e=e: Formula(f"I({e}) ~ 1").lhs)
    rhs = {"fixed": whole.rhs}
    for i, term in enumerate(mf.random):
        rhs[f"bar{i}"] = _formulaic("random-effects expression", term.expr, lambda e=term.expr: Formula(e))
    return Formula(lhs=Formula(lhs), rhs=Formula(rhs))


def _required_columns(mf: MixedFormula) -> list[str]:
    """The columns the formula names (formula.py finds them); the formula engine checks the syntax."""
    _engine_formula(mf)
    names = set(mf.variables)
    if "Intercept" in names:
        raise ValueError(
            f"formula {mf.text!r} uses a variable named 'Intercept', which the formula engine would merge with the "
            "intercept; rename that column"
        )
    return sorted(names)


def _complete_rows(
    mf: MixedFormula, data: pd.DataFrame, extra: tuple[str, ...] = ()
) -> tuple[pd.DataFrame, _Frame, int]:
    """Keep the rows on which the model is defined, as lme4's na.omit does, warning with the count:
    rows complete in every column the formula uses (and the `extra` ones), and where no transformation gives NaN (the
    log of a negative value). An infinite value is not missing: it is an error, later. Returns the rows kept
    and the formula evaluated on them: on the complete rows, and again only where a transformation gave NaN
    (stateful transformations, scale(x) and poly(x), then see only the rows kept)."""
    if len(data) == 0:
        raise ValueError("data has no rows")
    columns = sorted(set(_required_columns(mf)) | set(extra))
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise ValueError(
            f"{missing[0]!r} in formula {mf.text!r} is neither a column of the data nor a known function; "
            f"columns are: {', '.join(map(str, data.columns))}"
        )
    keep = ~np.logical_or.reduce([np.asarray(data[c].array.isna()) for c in columns])
    if not keep.any():
        raise ValueError(f"every row has missing values in {columns}")
    complete = data.loc[keep].reset_index(drop=True)
    frame = _evaluate(mf, complete)
    undefined = []
    rows = np.flatnonzero(keep)
    for name, values in _evaluated_columns(mf, frame):
        nan = np.isnan(values)
        if nan.any():
            undefined.append(name)
            keep[rows[nan]] = False
    ndropped = int((~keep).sum())
    reason = f"missing values in {columns}" + (f" or NaN values of {', '.join(undefined)}" if undefined else "")
    if ndropped == len(data):
        raise ValueError(f"every row has {reason}")
    if ndropped:
        warn(f"dropped {ndropped} of {len(data)} rows with {reason}")
    if undefined:
        complete = data.loc[keep].reset_index(drop=True)
        frame = _evaluate(mf, complete)
    return complete, frame, ndropped


def _evaluate(mf: MixedFormula, data: pd.DataFrame) -> _Frame:
    """Every column of the formula on the rows of `data`, in one formulaic call (`_engine_formula`)."""
    _require_numeric_column("response", mf.response, data)
    mm = _formulaic(
        "formula",
        mf.text,
        lambda: model_matrix(_engine_formula(mf), data, na_action="ignore", context=R_FUNCTIONS, output="numpy"),
    )
    response = _single_numeric("response", mf.response, mm.lhs.response)
    offsets = tuple(_single_numeric(f"offset({e})", f"I({e})", mm.lhs[f"offset{i}"]) for i, e in enumerate(mf.offsets))
    x, coefnames = _numeric_matrix(mm.rhs.fixed)
    bars = []
    for i in range(len(mf.random)):
        part = mm.rhs[f"bar{i}"]
        factors = tuple(k for k, (kind, _) in part.model_spec.encoder_state.items() if kind.value == "categorical")
        bars.append((*_numeric_matrix(part), factors))
    return _Frame(response, offsets, x, coefnames, tuple(bars))


def _evaluated_columns(mf: MixedFormula, frame: _Frame):
    """(name, values) of the response and of every model-matrix column the formula evaluates to."""
    yield mf.response, frame.response
    for expr, values in zip(mf.offsets, frame.offsets):
        yield f"offset({expr})", values
    yield from zip(frame.coefnames, frame.x.T)
    for z, names, _ in frame.bars:
        yield from zip(names, z.T)


def _require_finite(what: str, names, mat: np.ndarray) -> None:
    """Infinite values (after the NaN rows were dropped) have no sensible fit: name the column."""
    finite = np.isfinite(mat).all(axis=0)
    if not finite.all():
        raise ValueError(f"{what} column {names[int(np.argmin(finite))]!r} has infinite values")


def expression_values(what: str, expr: str, data: pd.DataFrame) -> np.ndarray:
    """The values of one numeric expression on the rows of `data`: a response, or, wrapped in I() (where
    `-` is arithmetic, not the removal of a term), an offset or a count of successes or failures."""
    _require_numeric_column(what, expr, data)
    lhs = _formulaic(
        what,
        expr,
        lambda: model_matrix(f"{expr} ~ 1", data, na_action="ignore", context=R_FUNCTIONS, output="numpy").lhs,
    )
    return _single_numeric(what, expr, lhs)


def _require_numeric_column(what: str, expr: str, data: pd.DataFrame) -> None:
    """Where `expr` names a column of `data`, that column must be numeric (not boolean)."""
    column = column_name(expr)
    if column in data.columns and not (
        pd.api.types.is_numeric_dtype(data[column]) and not pd.api.types.is_bool_dtype(data[column])
    ):
        raise ValueError(f"{what} column {column!r} is not numeric (dtype {data[column].dtype})")


def _single_numeric(what: str, expr: str, lhs) -> np.ndarray:
    """The one numeric column of an evaluated left-hand side (formulaic's numpy output), as float64."""
    if not np.issubdtype(lhs.dtype, np.number):
        raise ValueError(f"{what} {expr!r} is not numeric")
    if lhs.shape[1] != 1:
        raise ValueError(f"{what} {expr!r} must be a single numeric column")
    return np.asarray(lhs, dtype=np.float64)[:, 0]


def _numeric_matrix(mm) -> tuple[np.ndarray, tuple[str, ...]]:
    """An evaluated right-hand side (formulaic's numpy output) as float64 columns and their coefficient names."""
    return np.asarray(mm, dtype=np.float64), tuple(coefficient_name(c) for c in mm.model_spec.column_names)


def _estimable_columns(x: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Columns of X that are not linear combinations of earlier ones (later duplicates are dropped)."""
    keep = np.zeros(x.shape[1], dtype=bool)
    basis = np.zeros((x.shape[0], 0))
    for j in range(x.shape[1]):
        col = x[:, j]
        resid = col - basis @ (basis.T @ col)
        norm = np.linalg.norm(resid)
        if norm > tol * max(np.linalg.norm(col), 1.0):
            keep[j] = True
            basis = np.column_stack([basis, resid / norm])
    return keep


def _grouping_factor(data: pd.DataFrame, group: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Level index per row and the observed levels of the interaction of the grouping columns."""
    # the columns' codes as one integer key, whose order is the lexicographic order of the codes
    key, labels, sizes = np.zeros(len(data), dtype=np.int64), [], []
    for col in group:
        values = data[col].array
        cat = values if isinstance(values, pd.Categorical) else pd.Categorical(values)
        key = key * len(cat.categories) + cat.codes
        labels.append(np.asarray(cat.categories.astype(str)))
        sizes.append(len(cat.categories))
    uniq, refs = np.unique(key, return_inverse=True)
    codes = np.unravel_index(uniq, sizes)
    names = tuple(":".join(labels[i][c] for i, c in enumerate(u)) for u in zip(*codes))
    return refs.astype(np.int32), names


def _random_terms(mf: MixedFormula, data: pd.DataFrame, frame: _Frame, residual: bool):
    """Merge bar terms on the same grouping factor (as MixedModels.jl does) and order them as lme4 does;
    each bar's columns are those of `frame` (the formula evaluated on `data`)."""
    built = []
    for positions in mf.bars_by_group():
        bars = [(mf.random[i], frame.bars[i]) for i in positions]
        group, name = bars[0][0].group, bars[0][0].group_name
        spellings = list(dict.fromkeys(bar.group_name for bar, _ in bars))
        refs, levels = _grouping_factor(data, group)
        if len(levels) < 2:
            raise ValueError(f"grouping factor {name!r} has a single level; it needs at least two")
        if residual and len(levels) >= len(data):
            raise ValueError(
                f"grouping factor {name!r} has {len(levels)} levels for {len(data)} observations; "
                "a random effect per observation is unidentifiable from the residual"
            )
        mats, columns, pattern = [], [], []
        for bar, (z, cols, factors) in bars:
            what = f"random-effects term for {name!r}:"
            if bar.double_bar:
                _require_no_factor(bar, factors)
            _require_finite(what, cols, z)
            offset = len(columns)
            pattern += [(offset + r, offset + c) for r, c in theta_pattern(len(cols), bar.correlated)]
            mats.append(z)
            columns += cols
        if len(set(columns)) != len(columns):
            written = f" (written {' and '.join(map(repr, spellings))})" if len(spellings) > 1 else ""
            raise ValueError(f"random-effects terms for {name!r}{written} repeat a column: {columns}")
        if not columns:
            raise ValueError(f"random-effects term for {name!r} has no columns")
        pattern.sort(key=lambda rc: (rc[1], rc[0]))
        spec = TermSpec(
            group=name,
            columns=tuple(columns),
            nlevels=len(levels),
            theta_rows=tuple(r for r, _ in pattern),
            theta_cols=tuple(c for _, c in pattern),
        )
        built.append((spec, refs, np.column_stack(mats), levels))
    specs, refs, zs, levels = zip(*lme4_order(built, [spec.nlevels for spec, *_ in built]))
    return tuple(specs), tuple(refs), tuple(zs), tuple(levels)


def _weighted_blocks(structure: Structure, refs, zs, x: np.ndarray, w: np.ndarray) -> Blocks:
    """The blocks X'WX, Z'WX, Z'WZ: the cross-products of W^1/2 X and W^1/2 Z."""
    root = np.sqrt(w)[:, None]
    return _blocks(structure, refs, tuple(z * root for z in zs), x * root)


def _require_no_factor(bar: RandomTerm, factors: tuple[str, ...]) -> None:
    """lme4 reads (1 + f || g), f a factor (one of `factors`, the categorical variables of bar.expr), as
    (1 | g) + (0 + f | g): f's levels correlated, another model than the uncorrelated one (expr || g) is
    otherwise; refused, naming both ways to write it."""
    if factors:
        raise ValueError(
            f"({bar.expr} || {bar.group_name}) has the factor {factors[0]!r}, whose levels lme4 keeps correlated: "
            f"write (1 | {bar.group_name}) + (0 + {factors[0]} | {bar.group_name}) for lme4's model, "
            f"zerocorr({bar.expr} | {bar.group_name}) for uncorrelated levels"
        )


def lme4_order(terms: list, nlevels: list[int]) -> list:
    """The terms in lme4's order (mkReTrms): as written where their numbers of levels do not increase,
    else by decreasing number of levels, ties in reverse order of appearance (R's rev(order(nl)))."""
    if all(b <= a for a, b in zip(nlevels, nlevels[1:])):
        return list(terms)
    ascending = sorted(range(len(terms)), key=lambda i: nlevels[i])  # stable, as R's order
    return [terms[i] for i in reversed(ascending)]


def _sparse_z(t: TermSpec, refs: np.ndarray, z: np.ndarray) -> sp.csr_matrix:
    """The n x (m k) model matrix of one term; column j*k + c holds z[:, c] on rows of level j."""
    n, k = z.shape
    cols = refs[:, None] * k + np.arange(k)[None, :]  # each row's k columns, ascending: CSR as it is
    return sp.csr_matrix((z.reshape(-1), cols.reshape(-1), np.arange(0, n * k + 1, k)), shape=(n, t.nranef))


def _blocks(structure: Structure, refs, zs, x: np.ndarray) -> Blocks:
    """The blocks from each term's level index and columns. Term 1's Z1'Z1 and Z1'X are sums over its
    levels, (Z1'V)_j[a, b] = sum_{i in level j} z1_ia v_ib, one column pair at a time (np.bincount: in
    the order of the rows, as a sparse product sums them, to the same bits; no n x k1 x p temporary); the
    other terms' blocks are sparse products, formed only where there are other terms."""
    t1, z1 = structure.terms[0], zs[0]
    p = x.shape[1]

    def level_sums(v: np.ndarray) -> np.ndarray:
        out = np.zeros((t1.nlevels, t1.k, v.shape[1]))
        for a in range(t1.k):
            for b in range(v.shape[1]):
                out[:, a, b] = np.bincount(refs[0], z1[:, a] * v[:, b], t1.nlevels)
        return out

    z1z1, z1x = level_sums(z1), level_sums(x)
    none, k1 = np.zeros(0, dtype=np.int32), t1.k
    if len(structure.terms) == 1:
        return Blocks(z1z1, z1x, np.zeros((0, 0)), np.zeros((0, p)), x.T @ x, np.zeros((t1.nlevels, k1, 0)),
                      none, none, np.zeros((0, k1)), none, none, np.zeros((0, k1, k1)))  # fmt: skip
    zr = sp.hstack([_sparse_z(t, r, z) for t, r, z in zip(structure.terms[1:], refs[1:], zs[1:])]).tocsr()
    z1zr = _sparse_z(t1, refs[0], z1).T @ zr
    nz_level, nz_col, nz_vec = _level_blocks(z1zr, t1)
    qr = zr.shape[1]
    if _dense_is_cheaper(nz_level, t1, qr):
        dense = z1zr.toarray().reshape(t1.nlevels, k1, qr)
        nz_level, nz_col, nz_vec = none, none, np.zeros((0, k1))
    else:
        dense = np.zeros((t1.nlevels, k1, 0))
    pair_level, pair_target, pair_outer = _pairs(nz_level, nz_col, nz_vec, qr)
    return Blocks(
        z1z1=z1z1,
        z1x=z1x,
        zrzr=(zr.T @ zr).toarray(),
        zrx=np.asarray(zr.T @ x),
        xx=x.T @ x,
        z1zr=dense,
        nz_level=nz_level,
        nz_col=nz_col,
        nz_vec=nz_vec,
        pair_level=pair_level,
        pair_target=pair_target,
        pair_outer=pair_outer,
    )


# A scattered multiply-add (segment_sum on a CPU, and its derivatives) costs about as much as this
# many multiply-adds of a dense matrix product.
SCATTER_COST = 8


def _dense_is_cheaper(nz_level: np.ndarray, t1: TermSpec, qr: int) -> bool:
    """Whether sum_j (Z1'Zr)_j' M_j (Z1'Zr)_j costs less as dense products, m1 k1 qr (qr + k1)
    multiply-adds, than as scattered outer products over the P nonzero pairs, SCATTER_COST P k1^2."""
    per_level = np.bincount(nz_level, minlength=t1.nlevels).astype(np.int64)
    npairs = int(np.sum(per_level * (per_level + 1) // 2))
    return t1.nlevels * t1.k * qr * (qr + t1.k) <= SCATTER_COST * npairs * t1.k**2


def _level_blocks(z1zr: sp.spmatrix, t1: TermSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nonzero (level j, column a) blocks of Z1'Zr, each a k1-vector, sorted by level then column."""
    coo = z1zr.tocoo()  # each (row, column) once: row j k1 + c is component c of level j
    level, comp = np.divmod(coo.row, t1.k)
    key = level.astype(np.int64) * max(z1zr.shape[1], 1) + coo.col
    order = np.argsort(key, kind="stable")
    key = key[order]
    first = np.diff(key, prepend=-1) != 0  # keys are >= 0
    nz_level, nz_col = np.divmod(key[first], max(z1zr.shape[1], 1))
    vec = np.zeros((len(nz_level), t1.k))
    vec[np.cumsum(first) - 1, comp[order]] += coo.data[order]
    return nz_level.astype(np.int32), nz_col.astype(np.int32), vec


def level_pairs(level: np.ndarray, col: np.ndarray, qr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (e, e') of the nonzero (level, column) entries of Z1'Zr at one level, e <= e', given the
    entries' levels and columns sorted by level, then column (so the pair's columns are a <= b); sorted
    by their target a * qr + b: (e, e', target)."""
    # entry e (sorted by level) pairs with itself and the later entries of its level, e..end(e) - 1
    end = np.searchsorted(level, level, side="right")
    count = end - np.arange(len(level))
    ea = np.repeat(np.arange(len(level)), count)
    eb = ea + np.arange(len(ea)) - np.repeat(np.cumsum(count) - count, count)
    target = col[ea].astype(np.int64) * qr + col[eb]
    order = np.argsort(target, kind="stable")
    return ea[order], eb[order], target[order]


def _pairs(nz_level, nz_col, nz_vec, qr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (j, a, b), a <= b, with both (j, a) and (j, b) nonzero, with their k1 x k1 outer products."""
    ea, eb, target = level_pairs(nz_level, nz_col, qr)
    outer = nz_vec[ea][:, :, None] * nz_vec[eb][:, None, :]
    return nz_level[ea], target.astype(np.int32), outer
