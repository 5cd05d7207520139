"""The covariance of the random effects: theta <-> Lambda, and the variance components it implies.

Each random-effects term t has k_t columns and a k_t x k_t lower-triangular relative covariance
factor lambda_t; the random effects of one level are b_j ~ N(0, sigma^2 lambda_t lambda_t') (a
GLMM has no sigma: scale 1). theta lists the free elements of every lambda_t, term by term, each
term's column by column (lme4's and MixedModels.jl's order): all of the lower triangle for a
correlated term, the diagonal only for a `zerocorr` one. Diagonal elements have lower bound 0,
off-diagonal ones none. Lambda = blockdiag(I_{m_t} kron lambda_t) is never formed.

From lambda_t the variance components of the term are

    Cov(b_j) = s^2 lambda_t lambda_t',  sd_c = sqrt(Cov_cc),  rho_cd = Cov_cd / (sd_c sd_d)

with s = sigma (an LMM) or 1. This module is the one place these maps are written.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from jax import Array


@dataclass(frozen=True)
class TermSpec:
    """Static description of one random-effects term (after merging the bars on the same factor).

    `theta_rows`/`theta_cols` are the positions in lambda_t of the term's elements of theta, in
    column-major order (lme4's order)."""

    group: str
    columns: tuple[str, ...]
    nlevels: int
    theta_rows: tuple[int, ...]
    theta_cols: tuple[int, ...]

    @property
    def k(self) -> int:
        return len(self.columns)

    @property
    def nranef(self) -> int:
        return self.nlevels * self.k

    @property
    def ntheta(self) -> int:
        return len(self.theta_rows)

    @property
    def correlated(self) -> bool:
        """Whether lambda_t has free elements below the diagonal (the columns' correlations are estimated)."""
        return any(r != c for r, c in zip(self.theta_rows, self.theta_cols))

    @property
    def lowerbd(self) -> tuple[float, ...]:
        return tuple(0.0 if r == c else -np.inf for r, c in zip(self.theta_rows, self.theta_cols))


def theta_pattern(k: int, correlated: bool) -> list[tuple[int, int]]:
    """(row, column) of each free element of a k x k lambda_t, column-major: the lower triangle, or the diagonal."""
    return [(r, c) for c in range(k) for r in range(c, k) if correlated or r == c]


def lowerbd(terms: tuple[TermSpec, ...]) -> np.ndarray:
    """Lower bound of each component of theta: 0 for diagonal elements of lambda_t, -inf below the diagonal."""
    return np.array([b for t in terms for b in t.lowerbd])


def initial_theta(terms: tuple[TermSpec, ...]) -> np.ndarray:
    """lme4's start: 1 for the diagonal elements of each lambda_t, 0 below the diagonal."""
    return np.where(lowerbd(terms) == 0.0, 1.0, 0.0)


def column_diag(terms: tuple[TermSpec, ...]) -> np.ndarray:
    """For each theta component, the index (in theta) of the diagonal element of its lambda column.

    The deviance is unchanged when a column of lambda_t changes sign: the solver uses this map to
    keep the diagonal non-negative (see solver.py)."""
    out, offset = [], 0
    for t in terms:
        diag = {c: offset + i for i, (r, c) in enumerate(zip(t.theta_rows, t.theta_cols)) if r == c}
        out += [diag[c] for c in t.theta_cols]
        offset += t.ntheta
    return np.array(out, dtype=np.int32)


def lambdas(theta: Array, terms: tuple[TermSpec, ...]) -> tuple[Array, ...]:
    """The k x k lower-triangular factor lambda_t of each term, filled column-major from theta. Pure JAX;
    for a NumPy theta, NumPy (a fitted model's, on the host: no program to compile), the same numbers.

    vec(lambda_t) = P_t theta_t with P_t a constant 0/1 placement matrix: a product rather than a
    scatter, which XLA's CPU backend would turn into a loop (slower to compile and to differentiate)."""
    xp = np if isinstance(theta, np.ndarray) else jnp
    out, offset = [], 0
    for t in terms:
        place = np.zeros((t.k * t.k, t.ntheta))
        place[np.asarray(t.theta_rows) * t.k + np.asarray(t.theta_cols), np.arange(t.ntheta)] = 1.0
        out.append((xp.asarray(place, theta.dtype) @ theta[offset : offset + t.ntheta]).reshape(t.k, t.k))
        offset += t.ntheta
    return tuple(out)


def lower_factor(m: Array, deficiency: Array | int) -> Array:
    """The lower-triangular L with non-negative diagonal and L L' = m m' (m = L Q with Q orthogonal:
    the LQ decomposition), by Gram-Schmidt on m's rows from the top; a row in the span of the rows
    above it gets a zero diagonal. Pure JAX, unrolled over the k rows, so it vmaps without LAPACK.

    m m' of rank k - `deficiency` (known exactly where m comes from: see `transform_theta`) gives
    exactly `deficiency` zero diagonal elements: the rows whose component orthogonal to the rows
    above is smallest relative to the row's norm contribute no direction of their own, instead of
    one of rounding error, so that a singular covariance stays exactly on the boundary."""
    _, relative = _gram_schmidt(m, jnp.ones(m.shape[0], bool))
    position = jnp.argsort(jnp.argsort(relative, stable=True), stable=True)
    return _gram_schmidt(m, position >= deficiency)[0]


def _gram_schmidt(m: Array, own: Array) -> tuple[Array, Array]:
    """The rows' coordinates in the orthonormal basis built from the rows in order (each row's
    component orthogonal to the basis so far is a new basis vector where `own`, else dropped), and
    each row's orthogonal component relative to its norm. Modified Gram-Schmidt, twice."""
    k = m.shape[0]
    rows, basis, relative = [], [], []
    for i in range(k):
        residual, coefs = m[i], [jnp.zeros((), m.dtype) for _ in basis]
        for _ in range(2):
            for j, q in enumerate(basis):
                c = q @ residual
                residual, coefs[j] = residual - c * q, coefs[j] + c
        norm = jnp.sqrt(residual @ residual)
        row_norm = jnp.sqrt(m[i] @ m[i])
        relative.append(jnp.where(row_norm > 0, norm / jnp.where(row_norm > 0, row_norm, 1.0), 0.0))
        norm = jnp.where(own[i], norm, 0.0)
        basis.append(jnp.where(norm > 0, residual / jnp.where(norm > 0, norm, 1.0), 0.0))
        rows.append(jnp.concatenate([jnp.stack([*coefs, norm]), jnp.zeros(k - i - 1, m.dtype)]))
    return jnp.stack(rows), jnp.stack(relative)


def transform_theta(theta: Array, maps: tuple[Array, ...], terms: tuple[TermSpec, ...]) -> Array:
    """theta of the random effects M_t b of each term: lambda_t -> M_t lambda_t (Cov(M_t b) =
    s^2 M_t lambda_t lambda_t' M_t'), the columns' change of units and origin between the fit and
    the data (design.column_transform). Pure JAX.

    A diagonal M_t with positive elements keeps lambda_t lower triangular: M_t lambda_t is the new
    factor, elementwise. Otherwise its `lower_factor`, of the same rank as lambda_t: the number
    of zero diagonal elements of lambda_t's own canonical factor (a zero diagonal element of a
    triangular factor need not lower the rank: [[0, 0], [a, 0]] has rank 1)."""
    out = []
    for lam, m, t in zip(lambdas(theta, terms), maps, terms):
        moved = m @ lam
        deficiency = jnp.sum(jnp.diagonal(lower_factor(lam, 0)) == 0)
        diagonal = jnp.all(m == jnp.diag(jnp.diagonal(m)))
        new = jnp.where(diagonal, moved, lower_factor(moved, deficiency))
        out.append(new[np.asarray(t.theta_rows), np.asarray(t.theta_cols)])
    return jnp.concatenate(out) if out else theta


def rmul_lambda(m: Array, lams: tuple[Array, ...], terms: tuple[TermSpec, ...]) -> Array:
    """m @ blockdiag(I_{m_t} kron lambda_t) over the last axis of m, term by term (never forming Lambda)."""
    pieces, offset = [], 0
    lead = m.shape[:-1]
    for lam, t in zip(lams, terms):
        seg = m[..., offset : offset + t.nranef].reshape(*lead, t.nlevels, t.k) @ lam
        pieces.append(seg.reshape(*lead, t.nranef))
        offset += t.nranef
    return jnp.concatenate(pieces, axis=-1) if pieces else m


def covariances(theta: np.ndarray, scale: np.ndarray, terms: tuple[TermSpec, ...]) -> tuple[np.ndarray, ...]:
    """Cov(b_j) = (scale^2 lambda_t) lambda_t' of each term, for a stack of theta (N, ntheta) and
    scales (N,): one (N, k_t, k_t) array per term. NumPy, in float64."""
    theta = np.asarray(theta, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    out, offset = [], 0
    for t in terms:
        lam = np.zeros((len(theta), t.k, t.k))
        lam[:, t.theta_rows, t.theta_cols] = theta[:, offset : offset + t.ntheta]
        offset += t.ntheta
        out.append((scale[:, None, None] ** 2 * lam) @ lam.transpose(0, 2, 1))
    return tuple(out)


def sd_corr(cov: np.ndarray) -> tuple[np.ndarray, dict[tuple[int, int], np.ndarray]]:
    """Standard deviations (N, k) and the correlation of each pair (c, d), c < d, from Cov (N, k, k).

    A correlation with a zero standard deviation is undefined: NaN. Rounding can take |Cov_cd| a
    unit in the last place beyond sd_c sd_d (nearly perfect correlation): rho is kept in [-1, 1]."""
    sd = np.sqrt(np.einsum("nii->ni", cov))
    rho = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for c in range(cov.shape[-1]):
            for d in range(c + 1, cov.shape[-1]):
                denom = sd[:, c] * sd[:, d]
                rho[c, d] = np.where(denom > 0, np.clip(cov[:, c, d] / np.where(denom > 0, denom, 1.0), -1, 1), np.nan)
    return sd, rho


def covariance_pattern(term: TermSpec) -> set[tuple[str, str]]:
    """The pairs of the term's columns whose covariance is a free parameter (nonzero pattern of lambda lambda')."""
    lam = np.zeros((term.k, term.k), dtype=int)
    lam[list(term.theta_rows), list(term.theta_cols)] = 1
    cov = lam @ lam.T
    return {(term.columns[a], term.columns[b]) for a, b in zip(*np.nonzero(cov))}
