"""Generalized linear mixed models fitted by the Laplace approximation, as MixedModels.jl and lme4 do.

With eta = X beta + Z Lambda u, mu = g^-1(eta) and the spherical random effects u ~ N(0, I), the
Laplace approximation to -2 log L(theta, beta) (generalizedlinearmixedmodel.jl's deviance, plus
the normalising constants of the conditional densities, which lme4's -2 logLik includes) is

    f(theta, beta) = sum_i d_i(eta_i) + ||u~||^2 + log|Lambda'Z'W Z Lambda + I|

where d_i = -2 log p(y_i | mu_i) (family.py), u~ is the conditional mode of u, the minimiser
of the penalised deviance  sum_i d_i + ||u||^2  (found by PIRLS), and W holds the Fisher weights
at u~. `objective` is f at the optimum, the value lme4 reports as -2 logLik.

A family with a shape parameter alpha (the negative binomial's k, the Gamma's 1/phi:
Family.has_shape) makes d_i and W functions of alpha too, and f is minimised over log alpha as
well: the solver's x is (theta, log alpha, beta) (or (theta, log alpha) for fast=True). The
log-determinant keeps the Fisher weights (lme4's; glmmTMB's Laplace approximation takes the exact
curvature of d_i/2 instead, which differs for non-canonical links such as these families' log).

fast=False (the default: lme4's nAGQ = 1, MixedModels.jl's fast=false) minimises f over theta and
beta together; fast=True (lme4's nAGQ = 0) minimises over theta alone, with beta found by PIRLS
together with u (the joint mode of the penalised deviance in (u, beta)).

nAGQ > 1 (a model with a single scalar random-effects term only, as lme4 and MixedModels.jl
allow) replaces f by its adaptive Gauss-Hermite refinement (`adaptive_quadrature`), which is f
for nAGQ = 1 and tends to -2 log L as nAGQ grows; fast=True stays available, as in MixedModels.jl.

PIRLS (penalised iteratively reweighted least squares) is Fisher scoring on the penalised
deviance with step halving, in a `lax.while_loop`. The solver needs first and second derivatives
of f, and so of u~(theta, beta): the loop itself is not differentiated; from its (gradient-
stopped) result two exact Newton steps are taken, which leave u~ where it is but carry its exact
first and second derivatives (the implicit function theorem: at a root the Newton map's
derivative in u vanishes, so one step gives the first derivatives and a second the second).

Dense formulation: the q x q penalised system (q = all random effects) is formed densely, its
entries summed over the n rows by `segment_sum` (Z itself is never formed) and factored by a dense
Cholesky: O(q^3) per PIRLS iteration, fine for q in the hundreds (verbagg: q = 340). A model with
thousands of random effects would need the blocked factorisation of deviance.py.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax
from jax.scipy.special import logsumexp

from .._compile import jit
from ..covariance import lambdas
from ..design import Design, Structure
from ..linalg import cho_solve, cholesky, leading_logdets, spd_inverse
from ..solver import SolverOptions, SolverResult, minimize
from .family import Family


class GlmmData(NamedTuple):
    """The response, prior weights and model matrices; `index[i, c]` is the random effect (of q)
    that column c of the concatenated per-term z matrices multiplies on row i."""

    y: Array  # (n,)
    weights: Array  # (n,) prior weights: the binomial trials; ones otherwise
    x: Array  # (n, p)
    z: tuple[Array, ...]  # per term, (n, k)
    index: Array  # (n, K), K = sum of the terms' k
    offset: Array | float = 0.0  # (n,) added to the linear predictor
    shape: Array | float = 1.0  # the family's shape alpha (Family.has_shape); unused by the others


class Mode(NamedTuple):
    """A point of the penalised deviance: spherical random effects and fixed effects."""

    u: Array  # (q,)
    beta: Array  # (p,)


class Laplace(NamedTuple):
    objective: Array
    mode: Mode


def random_effect_index(refs, terms) -> np.ndarray:
    """GlmmData.index, (n, K) int32: for each row and each column of each term, the random effect (of
    all q: term by term, level-major) it multiplies, offset_t + level * k_t + column."""
    offsets = np.cumsum([0] + [t.nranef for t in terms])
    index = [off + np.asarray(r)[:, None] * t.k + np.arange(t.k) for off, r, t in zip(offsets, refs, terms)]
    return np.column_stack(index).astype(np.int32)


def glmm_data(design: Design) -> GlmmData:
    mats, structure = design.matrices, design.structure
    weights = np.ones(structure.n) if design.weights is None else design.weights
    offset = 0.0 if mats.offset is None else mats.offset
    index = random_effect_index(mats.refs, structure.terms)
    return GlmmData(design.y, weights, mats.x, mats.z, index, offset)


def z_lambda(theta: Array, data: GlmmData, structure: Structure) -> Array:
    """The nonzero entries of Z Lambda, (n, K): each term's z_t lambda_t."""
    return jnp.concatenate([z @ lam for z, lam in zip(data.z, lambdas(theta, structure.terms))], axis=1)


def linear_predictor(mode: Mode, zl: Array, data: GlmmData) -> Array:
    """eta = X beta + o + Z Lambda u, o the offset."""
    return data.x @ mode.beta + data.offset + jnp.sum(zl * mode.u[data.index], axis=1)


def _penalised_deviance(mode: Mode, zl: Array, data: GlmmData, fam: Family) -> Array:
    eta = linear_predictor(mode, zl, data)
    return jnp.sum(fam.deviance(data.y, data.weights, eta, data.shape)) + mode.u @ mode.u


def _z_gram(zl: Array, c: Array, index: Array, q: int) -> Array:
    """Lambda'Z' diag(c) Z Lambda (q x q), summed row by row over the K x K nonzero products."""
    values = c[:, None, None] * zl[:, :, None] * zl[:, None, :]
    return jax.ops.segment_sum(
        values.reshape(-1), (index[:, :, None] * q + index[:, None, :]).reshape(-1), num_segments=q * q
    ).reshape(q, q)


def _half_deviance_derivatives(mode: Mode, zl: Array, data: GlmmData, fam: Family) -> tuple[Array, Array, Array]:
    """eta, and the first and second derivatives of d_i/2 in eta_i."""
    eta = linear_predictor(mode, zl, data)
    half_deviance = jax.grad(lambda e: 0.5 * jnp.sum(fam.deviance(data.y, data.weights, e, data.shape)))
    g, curvature = jax.jvp(half_deviance, (eta,), (jnp.ones_like(eta),))
    return eta, g, curvature


def _penalised_gradient(mode: Mode, zl: Array, data: GlmmData, fam: Family, vary_beta: bool) -> Array:
    """Gradient of half the penalised deviance in u (and beta): [Lambda'Z'g + u; X'g], g = d(d_i/2)/deta."""
    q = mode.u.shape[0]
    _, g, _ = _half_deviance_derivatives(mode, zl, data, fam)
    grad = jax.ops.segment_sum((zl * g[:, None]).reshape(-1), data.index.reshape(-1), num_segments=q) + mode.u
    return jnp.concatenate([grad, data.x.T @ g]) if vary_beta else grad


def _penalised_hessian(mode: Mode, zl: Array, data: GlmmData, fam: Family, vary_beta: bool, fisher: bool) -> Array:
    """Hessian of half the penalised deviance in u (and beta, when vary_beta):

        [Lambda'Z'CZ Lambda + I   Lambda'Z'CX]
        [X'CZ Lambda              X'CX       ]

    with C the Fisher weights (fisher=True: PIRLS's scoring) or the exact curvature
    d^2(d_i/2)/deta^2 (fisher=False: Newton). For the canonical links they agree."""
    q, p = mode.u.shape[0], mode.beta.shape[0]
    eta, _, curvature = _half_deviance_derivatives(mode, zl, data, fam)
    c = fam.fisher_weights(data.weights, eta, data.shape) if fisher else curvature
    hess = _z_gram(zl, c, data.index, q) + jnp.eye(q, dtype=eta.dtype)
    if not vary_beta:
        return hess
    cx = c[:, None] * data.x
    zx = jax.ops.segment_sum((zl[:, :, None] * cx[:, None, :]).reshape(-1, p), data.index.reshape(-1), num_segments=q)
    return jnp.block([[hess, zx], [zx.T, data.x.T @ cx]])


def _step(mode: Mode, factor, grad: Array, vary_beta: bool) -> Mode:
    """mode - H^-1 grad, H given by its lower Cholesky factor."""
    step = cho_solve(factor, -grad)
    q = mode.u.shape[0]
    return Mode(mode.u + step[:q], mode.beta + step[q:] if vary_beta else mode.beta)


_HALVINGS = 0.5 ** np.arange(11)


def pirls(
    zl: Array, beta: Array, data: GlmmData, fam: Family, vary_beta: bool, q: int, tol: float = 1e-12, maxiter: int = 100
) -> Mode:
    """The conditional mode of u (and of beta, when vary_beta) by Fisher scoring from u = 0.

    Each iteration takes the largest of 1, 1/2, ..., 1/1024 of the scoring step that does not
    raise the penalised deviance, trying them in that order (the full step almost always: one
    pass over eta); it stops when the decrease is below tol relative, or no fraction decreases it."""
    halvings = jnp.asarray(_HALVINGS, zl.dtype)

    def trial(mode: Mode, target: Mode, k: Array) -> tuple[Mode, Array]:
        moved = Mode(*(a + halvings[k] * (b - a) for a, b in zip(mode, target)))
        return moved, _penalised_deviance(moved, zl, data, fam)

    def body(state):
        mode, pdev, niter, _ = state
        hess = _penalised_hessian(mode, zl, data, fam, vary_beta, fisher=True)
        target = _step(mode, cholesky(hess), _penalised_gradient(mode, zl, data, fam, vary_beta), vary_beta)
        _, moved, moved_pdev = lax.while_loop(
            lambda s: (s[0] < len(_HALVINGS) - 1) & ~(s[2] <= pdev),
            lambda s: (s[0] + 1, *trial(mode, target, s[0] + 1)),
            (jnp.array(0), *trial(mode, target, jnp.array(0))),
        )
        ok = moved_pdev <= pdev
        new_pdev = jnp.where(ok, moved_pdev, pdev)
        new_mode = jax.tree.map(lambda t, old: jnp.where(ok, t, old), moved, mode)
        done = ~ok | (pdev - new_pdev <= tol * jnp.abs(new_pdev)) | (niter + 1 >= maxiter)
        return new_mode, new_pdev, niter + 1, done

    start = Mode(jnp.zeros(q, zl.dtype), beta)
    init = (start, _penalised_deviance(start, zl, data, fam), jnp.array(0), jnp.array(False))
    return lax.while_loop(lambda s: ~s[3], body, init)[0]


def laplace(theta: Array, beta: Array, data: GlmmData, structure: Structure, fam: Family, fast: bool) -> Laplace:
    """f(theta, beta) of the module docstring, with the mode it is evaluated at. Pure: jit, vmap,
    differentiate twice.

    fast=False: beta is the fixed effects. fast=True: beta is only PIRLS's start for them (the
    mode's beta is the joint mode's), and f is a function of theta alone."""
    q = sum(t.nranef for t in structure.terms)
    zl = z_lambda(theta, data, structure)
    mode = lax.stop_gradient(pirls(lax.stop_gradient(zl), lax.stop_gradient(beta), data, fam, fast, q))
    # Two chord steps, with the exact Hessian at the mode held constant: at the mode they move
    # nothing, but carry the mode's first and second derivatives (see the module docstring).
    hess = _penalised_hessian(mode, lax.stop_gradient(zl), data, fam, fast, fisher=False)
    factor = cholesky(hess)
    if not fast:
        mode = Mode(mode.u, beta)  # beta's derivatives come from the argument itself
    for _ in range(2):
        mode = _step(mode, factor, _penalised_gradient(mode, zl, data, fam, fast), fast)
    eta = linear_predictor(mode, zl, data)
    gram = _z_gram(zl, fam.fisher_weights(data.weights, eta, data.shape), data.index, q) + jnp.eye(q, dtype=eta.dtype)
    logdet = leading_logdets(gram, (q,))[0]
    return Laplace(jnp.sum(fam.deviance(data.y, data.weights, eta, data.shape)) + mode.u @ mode.u + logdet, mode)


def gauss_hermite(nAGQ: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes z_k and weights w_k of the nAGQ-point Gauss-Hermite rule for the standard normal:
    E f(Z) ~ sum_k w_k f(z_k), exact for polynomials of degree < 2 nAGQ; the w_k sum to 1."""
    z, w = np.polynomial.hermite_e.hermegauss(nAGQ)
    return z, w / np.sqrt(2.0 * np.pi)


def require_scalar_term(structure: Structure) -> None:
    """The ValueError lme4 raises for nAGQ > 1 unless the model has one scalar random-effects term."""
    if len(structure.terms) != 1 or structure.terms[0].k != 1:
        terms = ", ".join(
            f"({' + '.join('1' if c == '(Intercept)' else c for c in t.columns)} | {t.group})" for t in structure.terms
        )
        raise ValueError(f"nAGQ > 1 needs a single scalar random-effects term (as lme4's glmer); the model has {terms}")


def adaptive_quadrature(
    theta: Array, beta: Array, data: GlmmData, structure: Structure, fam: Family, fast: bool, nAGQ: int
) -> Laplace:
    """-2 log L(theta, beta) by adaptive Gauss-Hermite quadrature with nAGQ nodes (lme4's glmerAGQ,
    MixedModels.jl's deviance(m, nAGQ)), for a model with a single scalar random-effects term:

        f(theta, beta) - 2 sum_j log sum_k w_k exp(z_k^2/2 - [D_j(u~_j + s_j z_k) - D_j(u~_j)]/2)

    with f the Laplace objective (`laplace`, evaluated at the same u~ and beta), D_j(u) =
    sum_{i in group j} d_i + u^2 group j's part of the penalised deviance, s_j = H_jj^-1/2 for
    H = Lambda'Z'WZ Lambda + I (diagonal: each row has one random effect) and (z_k, w_k) the
    `gauss_hermite` rule. It is the rule applied to each group's integral
    int p(y_j | u) phi(u) du = s_j exp(-D_j(u~_j)/2) E_Z exp(Z^2/2 - [D_j(u~_j + s_j Z) - D_j(u~_j)]/2)
    (u = u~_j + s_j Z), whose factors -2 log s_j sum to f's log|H|; nAGQ = 1 (z = 0, w = 1) is f.
    lme4 1.1-31 reports this less the saturated model's -2 log-likelihood for nAGQ > 1 (its
    issues #161, #567); the two have the same optimum. Pure: jit, vmap, differentiate twice."""
    at = laplace(theta, beta, data, structure, fam, fast)
    if nAGQ == 1:
        return at
    require_scalar_term(structure)
    q, group = structure.terms[0].nlevels, data.index[:, 0]
    zl = z_lambda(theta, data, structure)
    eta = linear_predictor(at.mode, zl, data)
    sd = lax.rsqrt(
        jax.ops.segment_sum(fam.fisher_weights(data.weights, eta, data.shape) * zl[:, 0] ** 2, group, num_segments=q)
        + 1.0
    )

    def devc(z: Array) -> Array:
        """D_j(u~_j + s_j z) for every group j."""
        shift = z * sd
        d = fam.deviance(data.y, data.weights, eta + zl[:, 0] * shift[group], data.shape)
        return jax.ops.segment_sum(d, group, num_segments=q) + (at.mode.u + shift) ** 2

    z, w = gauss_hermite(nAGQ)
    exponents = (
        np.log(w)[:, None] + 0.5 * z[:, None] ** 2 - 0.5 * (jax.vmap(devc)(jnp.asarray(z)) - devc(jnp.zeros(())))
    )
    return Laplace(at.objective - 2.0 * jnp.sum(logsumexp(exponents, axis=0)), at.mode)


class GlmmFit(NamedTuple):
    """Everything a fit yields (one lane of a future bootstrap batch)."""

    objective: Array
    theta: Array
    beta: Array
    u: Array
    vcov: Array  # of beta-hat
    converged: Array
    niter: Array
    hessian: Array  # of f in the solver's x (see solver_problem), exact or BFGS's: to continue from
    shape: Array  # the family's shape alpha at the optimum (Family.has_shape); 1 for the others


def _parameters(
    x: Array, beta0: Array, data: GlmmData, structure: Structure, fam: Family, fast: bool
) -> tuple[Array, Array, GlmmData]:
    """theta, beta (beta0 for fast=True) and the data at the shape alpha, from the solver's
    x = (theta, [log alpha,] [beta]) (see `solver_problem`)."""
    ntheta = structure.ntheta
    if fam.has_shape:
        data = data._replace(shape=jnp.exp(x[ntheta]))
    return x[:ntheta], beta0 if fast else x[ntheta + fam.has_shape :], data


def solver_problem(
    beta0: Array, data: GlmmData, structure: Structure, fam: Family, fast: bool, nAGQ: int
) -> tuple[Callable[[Array], Array], np.ndarray]:
    """The function of the solver's x that a fit minimises, and x's `column_diag` (see solver.py).

    fast=True: x = theta, beta found by PIRLS from beta0. fast=False: x = (theta, beta); the fixed
    effects have no bound and no sign symmetry (column_diag -1), and beta0 gives only their count.
    A family with a shape alpha (Family.has_shape) has log alpha after theta, unbounded too."""
    free = int(fam.has_shape) + (0 if fast else beta0.shape[0])
    column_diag = np.concatenate([structure.column_diag, np.full(free, -1, dtype=np.int32)])

    def objective(x: Array) -> Array:
        theta, beta, data_x = _parameters(x, beta0, data, structure, fam, fast)
        return adaptive_quadrature(theta, beta, data_x, structure, fam, fast, nAGQ).objective

    return objective, column_diag


def glmm_result(
    res: SolverResult, beta0: Array, data: GlmmData, structure: Structure, fam: Family, fast: bool, nAGQ: int
) -> GlmmFit:
    """The fit at the solver's optimum: objective, mode and Cov(beta-hat), as lme4 computes it:
    fast=False, the beta block of 2 H^-1 with H the Hessian of f in (theta, beta) at the optimum
    (exact, lme4's is by finite differences; after BFGS iterations, BFGS's approximation of it);
    fast=True, the beta block of the inverse of PIRLS's Fisher system in (u, beta) at the mode
    (lme4's RX-based one, which it uses for nAGQ = 0). With a shape alpha, fast=False's H includes
    log alpha (glmmTMB's joint Hessian; glmer.nb's holds k fixed), fast=True's holds it fixed."""
    theta, start, data = _parameters(res.theta, beta0, data, structure, fam, fast)
    at = adaptive_quadrature(theta, start, data, structure, fam, fast, nAGQ)
    if fast:
        vcov = fisher_vcov(theta, at.mode, data, structure, fam)
    else:
        free = structure.ntheta + fam.has_shape
        vcov = 2.0 * spd_inverse(res.hessian)[free:, free:]
    shape = jnp.asarray(data.shape, dtype=theta.dtype)
    return GlmmFit(at.objective, theta, at.mode.beta, at.mode.u, vcov, res.converged, res.niter, res.hessian, shape)


def fit_glmm(
    theta0: Array,
    beta0: Array,
    data: GlmmData,
    structure: Structure,
    fam: Family,
    fast: bool,
    opts: SolverOptions,
    nAGQ: int = 1,
    h0: Array | None = None,
) -> GlmmFit:
    """Minimise the Laplace objective (nAGQ = 1) or its adaptive Gauss-Hermite refinement
    (`adaptive_quadrature`) from (theta0, beta0) by the project's Newton solver. Pure.

    h0 as in `minimize`: given h0, a Hessian of f near the start in the solver's x, the iterations
    need first derivatives of f only. A family's shape alpha starts at data.shape."""
    fun, column_diag = solver_problem(beta0, data, structure, fam, fast, nAGQ)
    log_shape0 = jnp.log(jnp.asarray(data.shape, dtype=theta0.dtype)).reshape(-1)[: int(fam.has_shape)]
    x0 = jnp.concatenate([theta0, log_shape0, *([] if fast else [beta0])])
    return glmm_result(minimize(fun, x0, column_diag, opts, h0), beta0, data, structure, fam, fast, nAGQ)


def fisher_vcov(theta: Array, mode: Mode, data: GlmmData, structure: Structure, fam: Family) -> Array:
    """Cov(beta-hat) given theta (and data.shape): the beta block of the inverse of PIRLS's Fisher system
    in (u, beta) at `mode` (lme4's vcov(m, use.hessian = FALSE), and its only one for nAGQ = 0). Pure."""
    info = _penalised_hessian(mode, z_lambda(theta, data, structure), data, fam, True, fisher=True)
    return spd_inverse(info)[-mode.beta.shape[0] :, -mode.beta.shape[0] :]


_fit_glmm = jit(fit_glmm, static_argnames=("structure", "fam", "fast", "opts", "nAGQ"))


@partial(jit, static_argnames=("structure", "fam"))
def glm_start(data: GlmmData, structure: Structure, fam: Family) -> Array:
    """beta of the GLM without random effects: PIRLS in (u, beta) at theta = 0, where u stays 0, from
    beta = 0, or for the inverse link (mu = 1/eta, eta = 0 outside its domain) from the least-squares
    fit of eta = 1/mean(y) (every mu the mean where X has an intercept; step halving keeps eta > 0)."""
    zl = z_lambda(jnp.zeros(structure.ntheta), data, structure)
    if fam.link == "inverse":
        beta0 = jnp.linalg.lstsq(data.x, jnp.full_like(data.y, 1.0 / jnp.mean(data.y)))[0]
    else:
        beta0 = jnp.zeros(structure.p)
    return pirls(zl, beta0, data, fam, True, sum(t.nranef for t in structure.terms)).beta
