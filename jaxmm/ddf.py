"""Inference on the fixed effects of a linear mixed model: t and F tests of contrasts L beta with
Satterthwaite's or Kenward-Roger's denominator degrees of freedom, as lmerTest and pbkrtest compute
them, with the derivatives of the covariance parameters by automatic differentiation (theirs are
numerical).

Satterthwaite (lmerTest). With varpar = (theta, sigma) and C(varpar) = sigma^2 (X'V(theta)^-1 X)^-1,
the covariance of beta-hat, A = 2 H^+ (H the Hessian of the deviance in varpar, lmerTest's
`devfun_vp`: log|L_Z|^2 + r^2(theta) / sigma^2 + n log(2 pi sigma^2), for REML plus
log|L_X|^2 - p log(2 pi sigma^2)), and a contrast lmat,

    df = 2 (l'C lmat)^2 / (g' A g),   g_k = l' (dC / dvarpar_k) lmat.

F tests of several rows (lmerTest's contestMD): with L C L' = P D P', the q rows of P'L are
independent t statistics with df nu_m; F = sum_m (P'L beta)_m^2 / (q d_m) on (q, nu) df,
nu = 2 E / (E - q), E = sum_m nu_m / (nu_m - 2) (2 if some nu_m <= 2; their mean if all equal).

Kenward-Roger (pbkrtest's vcovAdj and Lb_ddf). Sigma(gamma) = sum_r gamma_r G_r, gamma the random
effects' variances and covariances and sigma^2 (linear, so KR's R_rs = 0), M = X'Sigma^-1 X,
Phi = M^-1, P_r = dM / dgamma_r, W = (expected REML information)^-1 = -2 (d^2 f / dgamma^2)^-1 with
f = log|Sigma| + log|M| (whose Hessian is -tr(P G_r P G_s)), and

    Phi_A = Phi + 2 Phi (sum_rs W_rs (Q_rs - P_r Phi P_s)) Phi = Phi - sum_rs W_rs d^2 Phi / dgamma_r dgamma_s.

The denominator df of L (q rows): Theta = L'(L Phi L')^-1 L, A1 = sum_rs W_rs tr(Theta Phi P_r Phi)
tr(Theta Phi P_s Phi), A2 = sum_rs W_rs tr(Theta Phi P_r Phi Theta Phi P_s Phi), B = (A1 + 6 A2) / (2q),
g = ((q+1) A1 - (q+4) A2) / ((q+2) A2), c1..c3, rho = (1 - A2/q)^2 (1 + c1 B) / (q (1 - c2 B)^2 (1 - c3 B)),
df = 4 + (q+2) / (q rho - 1); the F statistic uses Phi_A, scaled by df (1 - A2/q) / (df - 2).

Units. The fit runs on X_s = X A^-1 and on rescaled random-effects columns; everything here is
computed on them, of the response y_c = (y - o - X beta-hat) / sigma-hat (whose profiled criterion
differs from y's by a constant), and returned for beta of X as given by back = sigma-hat A^-1: a
contrast L of beta is the contrast L back of the fit's coefficients. The Satterthwaite df is
invariant under such linear changes of (theta, sigma) and beta; Kenward-Roger's under every
linear change of gamma (pbkrtest's gamma is a linear function of the fit's).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax import Array

from ._compile import computing, jit
from ._warn import warn
from .design import Blocks, Structure, SuffStats, suffstats
from .deviance import factorize, fixed_effects, profiled_terms

METHODS = ("satterthwaite", "kenward-roger")


# ---- Satterthwaite -----------------------------------------------------------------------


def varpar_deviance(varpar: Array, blocks: Blocks, stats: SuffStats, structure: Structure, reml: Array) -> Array:
    """lmerTest's devfun_vp at varpar = (theta, sigma): log|L_Z|^2 + r^2 / sigma^2 + n log(2 pi sigma^2),
    plus log|L_X|^2 - p log(2 pi sigma^2) for REML (the criterion before sigma is profiled out)."""
    theta, s2 = varpar[:-1], varpar[-1] ** 2
    terms = profiled_terms(factorize(theta, blocks, stats, structure), structure)
    log2pis2 = jnp.log(2.0 * jnp.pi * s2)
    reml = jnp.asarray(reml, varpar.dtype)
    return terms.logdet_z + terms.pwrss / s2 + structure.n * log2pis2 + reml * (terms.logdet_x - structure.p * log2pis2)


def beta_covariance(varpar: Array, blocks: Blocks, stats: SuffStats, structure: Structure, back: Array) -> Array:
    """C(theta, sigma) = sigma^2 back (L_X L_X')^-1 back': Cov(beta-hat) for X = X_s A, back = s A^-1."""
    theta, sigma = varpar[:-1], varpar[-1]
    vcov = fixed_effects(factorize(theta, blocks, stats, structure), structure).vcov
    return sigma**2 * back @ vcov @ back.T


class Satterthwaite(NamedTuple):
    """C = Cov(beta-hat) (p, p), its Jacobian dC / dvarpar (p, p, k) and A = 2 H^+ (k, k), lmerTest's
    vcov_beta, Jac_list and vcov_varpar."""

    vcov: np.ndarray
    jacobian: np.ndarray
    vcov_varpar: np.ndarray


@partial(jit, static_argnames=("structure",))
def _satterthwaite_derivatives(varpar, blocks, stats, structure, reml, back):
    cov = partial(beta_covariance, blocks=blocks, stats=stats, structure=structure, back=back)
    dev = partial(varpar_deviance, blocks=blocks, stats=stats, structure=structure, reml=reml)
    return cov(varpar), jax.jacfwd(cov)(varpar), jax.hessian(dev)(varpar)


def pseudo_inverse(h: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """The Moore-Penrose inverse of a symmetric h over its eigenvalues above tol (lmerTest's)."""
    values, vectors = np.linalg.eigh(h)
    keep = values > tol
    return (vectors[:, keep] / values[keep]) @ vectors[:, keep].T


# ---- Kenward-Roger ------------------------------------------------------------------------


class CrossProducts(NamedTuple):
    """Z'Z, Z'X and X'X dense (the blocks' weighted cross-products, on the fit's columns), the
    random effects level-major within each term as the blocks order them."""

    ztz: Array  # (q, q)
    ztx: Array  # (q, p)
    xtx: Array  # (p, p)


def cross_products(blocks: Blocks, structure: Structure) -> CrossProducts:
    """The dense Z'Z, Z'X, X'X assembled from the blocks (NumPy)."""
    t1 = structure.terms[0]
    q1, qr = t1.nranef, structure.qrest
    z1z1 = np.asarray(blocks.z1z1)
    ztz = np.zeros((q1 + qr, q1 + qr))
    for j in range(t1.nlevels):
        ztz[j * t1.k : (j + 1) * t1.k, j * t1.k : (j + 1) * t1.k] = z1z1[j]
    if blocks.dense_z1zr:
        ztz[:q1, q1:] = np.asarray(blocks.z1zr).reshape(q1, qr)
    else:
        rows = np.asarray(blocks.nz_level)[:, None] * t1.k + np.arange(t1.k)[None, :]
        cols = q1 + np.broadcast_to(np.asarray(blocks.nz_col)[:, None], rows.shape)
        ztz[rows, cols] = np.asarray(blocks.nz_vec)
    ztz[q1:, :q1] = ztz[:q1, q1:].T
    ztz[q1:, q1:] = np.asarray(blocks.zrzr)
    ztx = np.concatenate([np.asarray(blocks.z1x).reshape(q1, -1), np.asarray(blocks.zrx)])
    return CrossProducts(ztz, ztx, np.asarray(blocks.xx))


def covariance_elements(structure: Structure) -> tuple[tuple[int, int, int], ...]:
    """pbkrtest's gamma without the residual variance: (term, row, column) of each free element
    (row >= column) of each term's covariance lambda_t lambda_t' (its nonzero pattern)."""
    out = []
    for i, t in enumerate(structure.terms):
        lam = np.zeros((t.k, t.k), dtype=int)
        lam[list(t.theta_rows), list(t.theta_cols)] = 1
        pattern = lam @ lam.T
        out += [(i, r, c) for c in range(t.k) for r in range(c, t.k) if pattern[r, c]]
    return tuple(out)


def gamma_at(theta: np.ndarray, sigma: float, structure: Structure) -> np.ndarray:
    """gamma = (the covariance elements of sigma^2 lambda_t lambda_t', sigma^2) at (theta, sigma)."""
    from .covariance import covariances

    covs = covariances(np.asarray(theta)[None], np.array([sigma]), structure.terms)
    return np.array([covs[i][0, r, c] for i, r, c in covariance_elements(structure)] + [sigma**2])


def _random_effects_covariance(gamma: Array, structure: Structure) -> Array:
    """D(gamma) = blockdiag_t(I_{m_t} kron C_t(gamma)) (q, q)."""
    elements = covariance_elements(structure)
    blocks = []
    for i, t in enumerate(structure.terms):
        c = jnp.zeros((t.k, t.k), gamma.dtype)
        for g, (term, r, col) in enumerate(elements):
            if term == i:
                c = c.at[r, col].set(gamma[g]).at[col, r].set(gamma[g])
        blocks.append(jnp.kron(jnp.eye(t.nlevels, dtype=gamma.dtype), c))
    return jax.scipy.linalg.block_diag(*blocks)


def information_and_logdet(gamma: Array, cp: CrossProducts, structure: Structure) -> tuple[Array, Array]:
    """M = X'Sigma^-1 X and log|Sigma| (up to a constant) for Sigma = s2 W^-1 + Z D Z', s2 = gamma[-1]:

    M = (X'X - X'Z (s2 I + D Z'Z)^-1 D Z'X) / s2,   log|Sigma| = (n - q) log s2 + log|s2 I + D Z'Z|,

    exact for a singular D (a variance at 0) and for prior weights (the cross-products are weighted)."""
    s2 = gamma[-1]
    d = _random_effects_covariance(gamma, structure)
    a = s2 * jnp.eye(d.shape[0], dtype=gamma.dtype) + d @ cp.ztz
    m = (cp.xtx - cp.ztx.T @ jnp.linalg.solve(a, d @ cp.ztx)) / s2
    return m, (structure.n - d.shape[0]) * jnp.log(s2) + jnp.linalg.slogdet(a)[1]


@partial(jit, static_argnames=("structure",))
def _kenward_roger_derivatives(gamma, cp, structure):
    """Phi, P_r = dM/dgamma_r, the Hessian of f = log|Sigma| + log|M| and d^2 Phi / dgamma^2."""

    def info(g):
        return information_and_logdet(g, cp, structure)[0]

    def f(g):
        m, logdet = information_and_logdet(g, cp, structure)
        return logdet + jnp.linalg.slogdet(m)[1]

    def phi(g):
        return jnp.linalg.inv(info(g))

    return phi(gamma), jax.jacfwd(info)(gamma), jax.hessian(f)(gamma), jax.hessian(phi)(gamma)


class KenwardRoger(NamedTuple):
    """pbkrtest's vcovAdj on the fit's coefficients: Phi (unadjusted), Phi_A, P (r, p, p), W (r, r)."""

    vcov: np.ndarray
    vcov_adjusted: np.ndarray
    p_mats: np.ndarray
    w: np.ndarray


def kr_df(lmat: np.ndarray, kr: KenwardRoger) -> float:
    """pbkrtest's Lb_ddf: the Kenward-Roger denominator df of the q x p contrast lmat (module docstring)."""
    lmat = np.atleast_2d(lmat)
    phi = kr.vcov
    q = lmat.shape[0]
    theta = lmat.T @ np.linalg.solve(lmat @ phi @ lmat.T, lmat)
    u = np.einsum("ab,rbc,cd->rad", theta @ phi, kr.p_mats, phi)
    tr = np.einsum("raa->r", u)
    a1 = tr @ kr.w @ tr
    a2 = np.einsum("rs,rab,sba->", kr.w, u, u)
    b = (a1 + 6.0 * a2) / (2.0 * q)
    g = ((q + 1) * a1 - (q + 4) * a2) / ((q + 2) * a2)
    denom = 3.0 * q + 2.0 * (1.0 - g)
    c1, c2, c3 = g / denom, (q - g) / denom, (q + 2 - g) / denom
    v0, v1, v2 = 1.0 + c1 * b, 1.0 - c2 * b, 1.0 - c3 * b
    v0 = 0.0 if abs(v0) < 1e-10 else v0
    e = 1.0 - a2 / q
    ratio = 1.0 if abs(e) < 1e-14 and abs(v1) < 1e-14 else e / v1  # pbkrtest's .divZero
    rho = ratio**2 * v0 / (q * v2)
    return float(4.0 + (q + 2) / (q * rho - 1.0)), float(a2)


# ---- per model -----------------------------------------------------------------------------


def _checked_method(ddf: str) -> str:
    method = str(ddf).lower().replace("_", "-").replace(" ", "-")
    method = {"kr": "kenward-roger", "kenward-roger": "kenward-roger", "satterthwaite": "satterthwaite"}.get(method)
    if method is None:
        raise ValueError(f"ddf must be 'satterthwaite' or 'kenward-roger' (or None for Wald z), got {ddf!r}")
    return method


class Inference:
    """What the tests of one fitted linear mixed model need, computed once (`inference(m, method)`)."""

    def __init__(self, m, method: str):
        self.method = _checked_method(method)
        if m.has_dispersion is False:
            raise ValueError(
                f"ddf={method!r} applies to linear mixed models; a {type(m).__name__} has Wald z tests (ddf=None)"
            )
        state = m._require_fit()
        if not m.REML:
            if self.method == "kenward-roger":
                raise ValueError(
                    "ddf='kenward-roger' needs a REML fit (as pbkrtest's and lmerTest's); refit with REML=True"
                )
            warn(
                "Satterthwaite's df of a maximum-likelihood fit (lmerTest's, from the ML deviance); "
                "the usual ones are of a REML fit",
            )
        design, structure = m.design, m.structure
        self.beta, self.sigma = state.beta, state.sigma
        self.back = state.sigma * design.beta_back
        with computing():
            blocks = jax.tree.map(jnp.asarray, design.blocks)
            if self.method == "satterthwaite":
                y = design.y if design.matrices.offset is None else design.y - np.asarray(design.matrices.offset)
                y_c = (y - design.x @ state.beta) / state.sigma
                stats = suffstats(design.matrices, structure, jnp.asarray(y_c))
                varpar = jnp.asarray(np.append(state.theta_fit, 1.0))
                cov, jac, hess = _satterthwaite_derivatives(
                    varpar, blocks, stats, structure=structure, reml=jnp.asarray(m.REML), back=jnp.asarray(self.back)
                )
                self.satterthwaite = Satterthwaite(
                    np.asarray(cov), np.asarray(jac), 2.0 * pseudo_inverse(np.asarray(hess))
                )
                self.vcov = self.satterthwaite.vcov
            else:
                cp = CrossProducts(*(jnp.asarray(a) for a in cross_products(design.blocks, structure)))
                gamma = jnp.asarray(gamma_at(state.theta_fit, 1.0, structure))
                phi, p_mats, hess_f, hess_phi = (
                    np.asarray(a) for a in _kenward_roger_derivatives(gamma, cp, structure=structure)
                )
                info = -hess_f  # pbkrtest's IE2 = tr(P G_r P G_s)
                small = np.min(np.abs(np.linalg.eigvalsh(info))) <= 1e-10
                w = 2.0 * (np.linalg.pinv(info) if small else np.linalg.inv(info))
                adjusted = phi - np.einsum("rs,abrs->ab", w, hess_phi)
                self.kr = KenwardRoger(phi, adjusted, np.moveaxis(p_mats, -1, 0), w)
                self.vcov = self.back @ adjusted @ self.back.T

    def contrast_1d(self, lmat: np.ndarray) -> tuple[float, float, float]:
        """(estimate, standard error, df) of l' beta: lmerTest's contest1D."""
        estimate = float(lmat @ self.beta)
        if self.method == "satterthwaite":
            s = self.satterthwaite
            var = float(lmat @ s.vcov @ lmat)
            grad = np.einsum("a,abk,b->k", lmat, s.jacobian, lmat)
            return estimate, np.sqrt(var), 2.0 * var**2 / float(grad @ s.vcov_varpar @ grad)
        l_fit = lmat @ self.back
        return estimate, float(np.sqrt(l_fit @ self.kr.vcov_adjusted @ l_fit)), kr_df(l_fit, self.kr)[0]

    def contrast_md(self, lmat: np.ndarray, eps: float = np.sqrt(np.finfo(float).eps)) -> dict:
        """The F test of L beta = 0: lmerTest's contestMD (Kenward-Roger: pbkrtest's KRmodcomp)."""
        lmat = np.atleast_2d(lmat)
        if self.method == "kenward-roger":
            l_fit = lmat @ self.back
            q = np.linalg.matrix_rank(l_fit)
            lb = lmat @ self.beta
            wald = float(lb @ np.linalg.solve(l_fit @ self.kr.vcov_adjusted @ l_fit.T, lb))
            df, a2 = kr_df(l_fit, self.kr)
            scaling = 1.0 if abs(df - 2.0) < 1e-2 else df * (1.0 - a2 / q) / (df - 2.0)
            return _f_row(wald / q, q, df, self.sigma, scaling)
        if lmat.shape[0] == 1:
            estimate, se, df = self.contrast_1d(lmat[0])
            return _f_row((estimate / se) ** 2, 1, df, self.sigma)
        values, vectors = np.linalg.eigh(lmat @ self.vcov @ lmat.T)
        values, vectors = values[::-1], vectors[:, ::-1]
        q = int(np.sum(values > max(eps * values[0], 0.0)))
        ptl = (vectors.T @ lmat)[:q]
        if q == 1:
            estimate, se, df = self.contrast_1d(ptl[0])
            return _f_row((estimate / se) ** 2, 1, df, self.sigma)
        f = float(np.sum((ptl @ self.beta) ** 2 / values[:q]) / q)
        s = self.satterthwaite
        grads = np.einsum("ma,abk,mb->mk", ptl, s.jacobian, ptl)
        nu = 2.0 * values[:q] ** 2 / np.einsum("mk,kl,ml->m", grads, s.vcov_varpar, grads)
        return _f_row(f, q, f_df(nu), self.sigma)


def f_df(nu: np.ndarray, tol: float = 1e-8) -> float:
    """The df of the mean of q independent squared t statistics of df nu_m (lmerTest's get_Fstat_ddf)."""
    if len(nu) == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(np.mean(nu))
    if np.any(nu <= 2):
        return 2.0
    e = np.sum(nu / (nu - 2.0))
    return float(2.0 * e / (e - len(nu)))


def _f_row(f: float, q: int, df: float, sigma: float, scaling: float = 1.0) -> dict:
    """lmerTest's F table row: Sum Sq, Mean Sq (of the unscaled F), NumDF, DenDF, F value, Pr(>F)."""
    from scipy import stats as sps

    return {
        "Sum Sq": f * sigma**2 * q,
        "Mean Sq": f * sigma**2,
        "NumDF": q,
        "DenDF": df,
        "F value": f * scaling,
        "Pr(>F)": float(sps.f.sf(f * scaling, q, df)),
    }


def inference(m, ddf: str) -> Inference:
    """The model's `Inference` for method `ddf`, computed once per fit."""
    method = _checked_method(ddf)
    state = m._require_fit()
    cache = m.__dict__.get("_inference")
    if cache is None or cache[0] is not state:
        cache = (state, {})
        m.__dict__["_inference"] = cache
    if method not in cache[1]:
        cache[1][method] = Inference(m, method)
    return cache[1][method]


def _contrast_matrix(m, lmat) -> np.ndarray:
    """L as a float matrix over the estimable coefficients: rows, or a DataFrame / Series by coefficient name."""
    names = [n for n, e in zip(m.coefnames, m.design.estimable) if e]
    if isinstance(lmat, pd.Series):
        lmat = lmat.to_frame().T
    if isinstance(lmat, pd.DataFrame):
        unknown = [c for c in lmat.columns if c not in names]
        if unknown:
            raise ValueError(
                f"L has a column {unknown[0]!r} that is no estimable coefficient; they are {', '.join(names)}"
            )
        lmat = lmat.reindex(columns=names, fill_value=0.0).to_numpy(dtype=np.float64)
    lmat = np.atleast_2d(np.asarray(lmat, dtype=np.float64))
    if lmat.ndim != 2 or lmat.shape[1] != len(names) or lmat.shape[0] == 0:
        raise ValueError(
            f"L must have {len(names)} columns (one per estimable coefficient: {', '.join(names)}), "
            f"got shape {lmat.shape}"
        )
    if not np.all(np.isfinite(lmat)):
        raise ValueError("L must be finite")
    return lmat


def coeftable(m, ddf: str) -> pd.DataFrame:
    """lmerTest's summary table: Estimate, Std. Error, df, t value, Pr(>|t|) per estimable coefficient."""
    from scipy import stats as sps

    inf = inference(m, ddf)
    names = [n for n, e in zip(m.coefnames, m.design.estimable) if e]
    rows = [inf.contrast_1d(row) for row in np.eye(len(names))]
    est, se, df = (np.array(c) for c in zip(*rows))
    t = est / se
    return pd.DataFrame(
        {"Estimate": est, "Std. Error": se, "df": df, "t value": t, "Pr(>|t|)": 2.0 * sps.t.sf(np.abs(t), df)},
        index=names,
    )


def contest(m, lmat, ddf: str = "satterthwaite", joint: bool | None = None) -> pd.DataFrame:
    """Test L beta = 0: a t test per row (one row, or joint=False; lmerTest's contest1D) or one F test
    of all rows (several rows, or joint=True; contestMD)."""
    from scipy import stats as sps

    lmat = _contrast_matrix(m, lmat)
    inf = inference(m, ddf)
    if joint is None:
        joint = lmat.shape[0] > 1
    if joint:
        return pd.DataFrame([inf.contrast_md(lmat)])
    est, se, df = (np.array(c) for c in zip(*(inf.contrast_1d(row) for row in lmat)))
    t = est / se
    return pd.DataFrame(
        {"Estimate": est, "Std. Error": se, "df": df, "t value": t, "Pr(>|t|)": 2.0 * sps.t.sf(np.abs(t), df)}
    )


# ---- anova: each term's hypothesis ------------------------------------------------------------


def _fixed_model_matrix(design):
    """formulaic's model matrix of the fixed effects on the fitted rows (its spec names the terms)."""
    from formulaic import model_matrix

    from .formula import R_FUNCTIONS

    return model_matrix(design.formula.fixed, design.data, na_action="ignore", context=R_FUNCTIONS)


def _zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    """R's zapsmall: x rounded to `digits` significant digits of its largest element."""
    big = np.max(np.abs(x)) if x.size else 0.0
    return np.round(x, max(0, digits - int(np.ceil(np.log10(big)))) if big > 0 else digits)


def _terms(mm) -> list[tuple[str, slice, tuple[str, ...], tuple[str, ...]]]:
    """(label, columns of X, factors, numeric factors) of each term but the intercept, in R's order."""
    spec = mm.model_spec
    out = []
    for term, cols in spec.term_slices.items():
        factors = tuple(str(f.expr) for f in term.factors if str(f.expr) != "1")
        if not factors:
            continue
        numeric = tuple(f for f in factors if getattr(spec.encoder_state[f][0], "value", "") != "categorical")
        out.append((str(term), cols, factors, numeric))
    return out


def type1_hypotheses(design, mm) -> dict[str, np.ndarray]:
    """lmerTest's type I (sequential) hypotheses: each term's rows of the unit upper-triangular U
    with X'X = U' D U (Doolittle's factor, its elements below 1e-6 zeroed as lmerTest's)."""
    x = design.x
    r = np.linalg.cholesky(x.T @ x).T
    u = r / np.diagonal(r)[:, None]
    u[np.abs(u) < 1e-6] = 0.0
    return {label: u[cols] for label, cols, _, _ in _terms(mm)}


def type3_hypotheses(design, mm) -> dict[str, np.ndarray]:
    """lmerTest's type III hypotheses for treatment contrasts (extract_contrasts_type3).

    Each term's full dummy coding (all levels of its factors, times its numeric factors) is
    expressed in X's columns, L = (X^+ rdX)'; then, from the highest-order terms down, the columns
    of a term are replaced by their residuals on those of the terms containing it (more factors,
    the same numeric ones). A term's hypothesis is its columns of L at the rows of the dummies
    that are X's own columns."""
    from formulaic import model_matrix

    from .formula import R_FUNCTIONS

    terms = _terms(mm)
    if design.x.shape[1] <= 1 or len(terms) <= 1:
        return type1_hypotheses(design, mm)
    x, data = design.x, design.data
    blocks, owner = [np.ones((x.shape[0], 1))], [None]
    for label, _, _, _ in terms:
        block = np.asarray(model_matrix(f"0 + {label}", data, na_action="ignore", context=R_FUNCTIONS), dtype=float)
        blocks.append(block)
        owner += [label] * block.shape[1]
    rdx = np.column_stack(blocks)
    owner = np.array(owner, dtype=object)
    lmat = _zapsmall((np.linalg.pinv(x) @ rdx).T)
    for label, cols, factors, numeric in sorted(terms, key=lambda t: -len(t[2])):
        containing = [
            c for lab, c, f, num in terms if set(factors) < set(f) and set(numeric) == set(num) and lab != label
        ]
        if containing:
            basis = lmat[:, np.concatenate([np.arange(x.shape[1])[c] for c in containing])]
            fitted = basis @ np.linalg.lstsq(basis, lmat[:, cols], rcond=None)[0]
            lmat[:, cols] = _zapsmall(lmat[:, cols] - fitted)
    # the dummy (row of lmat) that is X's own column j: the intercept, or an equal column of j's term
    owners = {j: None for j in range(x.shape[1]) if j == design.intercept}
    owners |= {j: label for label, cols, _, _ in terms for j in np.arange(x.shape[1])[cols]}
    dummy = []
    for j in range(x.shape[1]):
        same = [c for c in np.flatnonzero(owner == owners.get(j, "")) if np.array_equal(rdx[:, c], x[:, j])]
        if j not in owners or not same:
            raise ValueError(
                f"type III hypotheses need treatment contrasts; coefficient {design.coefnames[j]!r} is no dummy "
                "column of its term (use type=1)"
            )
        dummy.append(same[0])
    rows = lmat[dummy]
    out = {}
    for label, cols, _, _ in terms:
        h = rows[:, cols].T
        out[label] = h[np.sum(np.abs(h), axis=1) > 1e-8]
    return out


def anova(m, type: int | str = 3, ddf: str = "satterthwaite") -> pd.DataFrame:
    """lmerTest's anova(m, type, ddf): per fixed-effects term, the F test of its hypothesis (type III
    or I, as `type3_hypotheses` / `type1_hypotheses` build them): Sum Sq, Mean Sq, NumDF, DenDF,
    F value, Pr(>F)."""
    kind = {3: 3, "3": 3, "III": 3, 1: 1, "1": 1, "I": 1}.get(type)
    if kind is None:
        raise ValueError(f"type must be 3 ('III') or 1 ('I'), got {type!r}")
    design = m.design
    if not design.estimable.all():
        dropped = [n for n, e in zip(m.coefnames, design.estimable) if not e]
        raise ValueError(f"anova needs a full-rank fixed-effects design; {dropped[0]!r} is aliased (m.estimable)")
    inf = inference(m, ddf)
    mm = _fixed_model_matrix(design)
    hypotheses = type3_hypotheses(design, mm) if kind == 3 else type1_hypotheses(design, mm)
    rows = {label: inf.contrast_md(h) for label, h in hypotheses.items() if h.shape[0] > 0}
    table = pd.DataFrame.from_dict(
        rows, orient="index", columns=["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]
    )
    table.attrs["heading"] = (
        f"Type {'III' if kind == 3 else 'I'} Analysis of Variance Table with "
        f"{'Satterthwaite' if inf.method == 'satterthwaite' else 'Kenward-Roger'}'s method"
    )
    return table
