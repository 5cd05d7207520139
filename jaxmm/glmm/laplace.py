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

Blocked formulation, as deviance.py's for the LMM: with u = (u1, ur), u1 term 1's random effects
(lme4's order puts the term with most levels first), the Hessian of half the penalised deviance

    H = [H11 H12]   H11 = Lambda1'Z1'WZ1 Lambda1 + I: block diagonal, k1 x k1 per level j of term 1
        [H21 H22]   H22 over [ur, beta]: Lambda_r'Z_r'WZ_r Lambda_r + I, Lambda_r'Z_r'WX, X'WX

is eliminated level by level: L11_j = chol(H11_j), W = L11^-1 H12, and the Schur complement
S = H22 - W'W over [ur, beta] is factored densely (the terms of a nested chain after term 1, each
within one level of the next, are first eliminated from S level by level too: `Pattern.parents`).
W changes with the weights every PIRLS iteration, so H12's blocks are summed from the rows each
time (`segment_sum` over the fixed sparsity pattern of Z1'Zr: `Pattern`), as is W'W, by pairs of
nonzero entries at one level. Then log|Lambda'Z'WZ Lambda + I| = sum_j log|L11_j|^2 + log det S_rr
(S's leading block), and a Newton step solves H by block substitution. The work per iteration is
O(n K^2) sums over the rows, O(P) over the pairs and O(qd^3) for the dense rest of S (qd = its
random effects); memory grows with the nonzeros of the blocks and with qr^2 (S is formed densely
over terms 2..T), not with q^2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax
from jax.scipy.special import logsumexp

from .._compile import jit
from ..covariance import TermSpec, lambdas
from ..design import Design, Structure, level_pairs
from ..linalg import (
    cho_solve,
    chol_small,
    cholesky,
    leading_logdets,
    solve_lower_small,
    solve_triangular,
    solve_upper_small,
    spd_inverse,
)
from ..solver import SolverOptions, SolverResult, finish_evaluated, init, run
from .family import Family


class Pattern(NamedTuple):
    """Where each row's products land in the blocked penalised system (see the module docstring), from the
    level indices alone: term 1's level per row, the nonzero entries (level j of term 1, column a of Zr)
    of Z1'Zr, and the pairs of entries at one level, whose products make the Schur complement's fill."""

    level: Array  # (n,) term 1's level j of each row
    entry: Array  # (n, Kr) the entry each of the row's Zr columns adds to (Kr = the other terms' columns)
    entry_level: Array  # (E,) the entry's level j
    entry_col: Array  # (E,) the entry's column a of Zr
    pair_a: Array  # (P,) entry e of a pair (e, e') at one level, e <= e' (so a <= b)
    pair_b: Array  # (P,) entry e'
    pair_target: Array  # (P,) a * qr + b, sorted
    parents: tuple[Array, ...] = ()  # the chain of nested terms after term 1 (see `blocked_pattern`)


class GlmmData(NamedTuple):
    """The response, prior weights and model matrices; `index[i, c]` is the random effect (of q)
    that column c of the concatenated per-term z matrices multiplies on row i; `pattern` places
    the rows' products in PIRLS's system (only simulation goes without it)."""

    y: Array  # (n,)
    weights: Array  # (n,) prior weights: the binomial trials; ones otherwise
    x: Array  # (n, p)
    z: tuple[Array, ...]  # per term, (n, k)
    index: Array  # (n, K), K = sum of the terms' k
    offset: Array | float = 0.0  # (n,) added to the linear predictor
    shape: Array | float = 1.0  # the family's shape alpha (Family.has_shape); unused by the others
    pattern: Pattern | None = None


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


def blocked_pattern(refs, terms) -> Pattern:
    """GlmmData.pattern from each term's level index (host NumPy): the entries of Z1'Zr sorted by
    level, then column, and all pairs of entries (e, e'), e <= e', at one level, sorted by target."""
    t1, qr = terms[0], sum(t.nranef for t in terms[1:])
    cols = random_effect_index(refs, terms)[:, t1.k :].astype(np.int64) - t1.nranef
    uniq, entry = np.unique(np.asarray(refs[0], dtype=np.int64)[:, None] * qr + cols, return_inverse=True)
    entry_level, entry_col = np.divmod(uniq, max(qr, 1))
    pair_a, pair_b, target = level_pairs(entry_level, entry_col, qr)
    arrays = (refs[0], entry.reshape(cols.shape), entry_level, entry_col, pair_a, pair_b, target)
    return Pattern(*(np.asarray(a, dtype=np.int32) for a in arrays), parents=nested_chain(refs, terms))


def nested_chain(refs, terms) -> tuple[np.ndarray, ...]:
    """Pattern.parents: for t = 1, 2, ... while term t is nested in term t + 1 (each of its levels
    within one level of term t + 1), the level of term t + 1 holding each level of term t. Along
    such a chain the Schur complement's next block stays block diagonal (no level of the terms
    eliminated so far meets two of its levels), so it is eliminated level by level too."""
    parents = []
    for t, (child, parent) in enumerate(zip(refs[:-1], refs[1:])):
        holder = np.full(terms[t].nlevels, -1, dtype=np.int64)
        holder[child] = parent
        if np.any(holder[child] != parent):
            break
        parents.append(holder.astype(np.int32))
    return tuple(parents)


def glmm_data(design: Design, pattern: Pattern | None = None) -> GlmmData:
    """The design's GlmmData (host NumPy); `pattern`: its blocked_pattern where already computed."""
    mats, structure = design.matrices, design.structure
    weights = np.ones(structure.n) if design.weights is None else design.weights
    offset = 0.0 if mats.offset is None else mats.offset
    index = random_effect_index(mats.refs, structure.terms)
    pattern = blocked_pattern(mats.refs, structure.terms) if pattern is None else pattern
    return GlmmData(design.y, weights, mats.x, mats.z, index, offset, pattern=pattern)


def z_lambda(theta: Array, data: GlmmData, structure: Structure) -> Array:
    """The nonzero entries of Z Lambda, (n, K): each term's z_t lambda_t."""
    return jnp.concatenate([z @ lam for z, lam in zip(data.z, lambdas(theta, structure.terms))], axis=1)


def linear_predictor(mode: Mode, zl: Array, data: GlmmData) -> Array:
    """eta = X beta + o + Z Lambda u, o the offset."""
    return data.x @ mode.beta + data.offset + jnp.sum(zl * mode.u[data.index], axis=1)


def _penalised_deviance(mode: Mode, zl: Array, data: GlmmData, fam: Family) -> Array:
    eta = linear_predictor(mode, zl, data)
    return jnp.sum(fam.deviance(data.y, data.weights, eta, data.shape)) + mode.u @ mode.u


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


class System(NamedTuple):
    """The penalised Hessian H in (u1, ur[, beta]) with term 1 eliminated (module docstring): L11_j,
    W1r = L11^-1 H1r (one k1-vector per entry of Z1'Zr), W1x = L11^-1 H1x; then the terms of the
    nested chain (Pattern.parents) eliminated in turn from the Schur complement S = H22 - W'W, each
    as (L_t, W_t): L_t per level the factor of S's block diagonal, W_t = L_t^-1 S[term t, rest] (its
    block at the next term's level holding each level, and its columns after that term:
    `_eliminate_chain`); and what is left of S, over the remaining terms [and beta], to be factored densely."""

    l11: Array  # (m1, k1, k1)
    w1r: Array  # (E, k1)
    w1x: Array  # (m1, k1, p), p = 0 without beta
    chain: tuple[tuple[Array, Array, Array], ...]  # per nested term: L_t, and W_t held and after
    schur: Array  # the rest: (qd [+ p], qd [+ p]), qd = the random effects of the terms after the chain


def penalised_system(
    mode: Mode, zl: Array, data: GlmmData, structure: Structure, fam: Family, vary_beta: bool, fisher: bool
) -> System:
    """H, the Hessian of half the penalised deviance in u (and beta, when vary_beta),

        [Lambda'Z'CZ Lambda + I   Lambda'Z'CX]
        [X'CZ Lambda              X'CX       ]

    with C the Fisher weights (fisher=True: PIRLS's scoring) or the exact curvature d^2(d_i/2)/deta^2
    (fisher=False: Newton; for the canonical links they agree), eliminated blockwise: each block is
    summed over the rows (`segment_sum` into the places `data.pattern` gives), H11 level by level.
    Its cost is O(n K^2 + P k1 + qr^2), and the Schur complement's factor O((qr + p)^3)."""
    t1, qr = structure.terms[0], structure.qrest
    k1, pat = t1.k, data.pattern
    eta, _, curvature = _half_deviance_derivatives(mode, zl, data, fam)
    c = fam.fisher_weights(data.weights, eta, data.shape) if fisher else curvature
    zl1, zlr = zl[:, :k1], zl[:, k1:]
    czl1 = c[:, None] * zl1
    h11 = jax.ops.segment_sum(czl1[:, :, None] * zl1[:, None, :], pat.level, num_segments=t1.nlevels)
    l11 = chol_small(h11 + jnp.eye(k1, dtype=zl.dtype))
    h1r = jax.ops.segment_sum(
        (zlr[:, :, None] * czl1[:, None, :]).reshape(-1, k1), pat.entry.reshape(-1), num_segments=len(pat.entry_level)
    )
    w1r = solve_lower_small(l11[pat.entry_level], h1r[..., None])[..., 0]
    cols = data.index[:, k1:] - t1.nranef  # each row's columns of Zr
    czlr = c[:, None] * zlr
    hrr = jax.ops.segment_sum(
        (czlr[:, :, None] * zlr[:, None, :]).reshape(-1), (cols[:, :, None] * qr + cols[:, None, :]).reshape(-1),
        num_segments=qr * qr,
    )  # fmt: skip
    fill = jax.ops.segment_sum(
        jnp.sum(w1r[pat.pair_a] * w1r[pat.pair_b], axis=-1), pat.pair_target, num_segments=qr * qr,
        indices_are_sorted=True,
    ).reshape(qr, qr)  # fmt: skip
    s_rr = hrr.reshape(qr, qr) - (fill + fill.T - jnp.diag(jnp.diagonal(fill))) + jnp.eye(qr, dtype=zl.dtype)
    if not vary_beta:
        return System(l11, w1r, jnp.zeros((t1.nlevels, k1, 0), zl.dtype), *_eliminate_chain(s_rr, structure, pat))
    p = data.x.shape[1]
    cx = c[:, None] * data.x
    w1x = solve_lower_small(l11, jax.ops.segment_sum(zl1[:, :, None] * cx[:, None, :], pat.level, t1.nlevels))
    s_rx = jax.ops.segment_sum((zlr[:, :, None] * cx[:, None, :]).reshape(-1, p), cols.reshape(-1), qr)
    s_rx = s_rx - jax.ops.segment_sum(jnp.einsum("ek,ekp->ep", w1r, w1x[pat.entry_level]), pat.entry_col, qr)
    s_xx = data.x.T @ cx - jnp.einsum("jkp,jkq->pq", w1x, w1x)
    schur = jnp.block([[s_rr, s_rx], [s_rx.T, s_xx]])
    return System(l11, w1r, w1x, *_eliminate_chain(schur, structure, pat))


def _eliminate_chain(schur: Array, structure: Structure, pattern: Pattern) -> tuple[tuple, Array]:
    """The nested chain's terms eliminated level by level from S (see System): per term t, L_t from
    S's k_t x k_t diagonal blocks, W_t = L_t^-1 S[term t, rest] and S <- S[rest, rest] - W_t'W_t.

    Where term t + 1 holds each level j of term t (Pattern.parents), W_t's row j is zero in term t + 1's
    columns but at its holder's block (no level of the terms eliminated so far meets two of its levels):
    W_t is kept as that block, `held` (m_t, k_t, k_t+1), and its columns after term t + 1, `after`, and
    the held part of W_t'W_t is summed per level, block diagonal (grouseticks: brood's 118 levels, each
    one location's, rather than a dense 118 x 63 W_t and a 63 x 63 product each PIRLS iteration)."""
    chain = []
    for c, holder in enumerate(_holders(pattern), start=1):
        t = structure.terms[c]
        m, k, q = t.nlevels, t.k, t.nranef
        level = jnp.arange(m)
        el = chol_small(schur[:q, :q].reshape(m, k, m, k)[level, :, level, :])
        rows = schur[:q, q:].reshape(m, k, -1)
        if holder is None:
            parent, held, after = None, rows[:, :, :0], rows
        else:
            parent = structure.terms[c + 1]
            held = rows[:, :, : parent.nranef].reshape(m, k, parent.nlevels, parent.k)[level, :, holder, :]
            after = rows[:, :, parent.nranef :]
        held, after = solve_lower_small(el, held), solve_lower_small(el, after)
        chain.append((el, held, after))
        schur = schur[q:, q:] - _chain_gram(held, after, holder, parent)
    return tuple(chain), schur


def _holders(pattern: Pattern) -> tuple[Array | None, ...]:
    """Per term of the nested chain, the level of the next term holding each of its levels (None for the
    last, whose next term, if any, is not nested)."""
    return (*pattern.parents[1:], None) if pattern.parents else ()


def _chain_gram(held: Array, after: Array, holder: Array | None, parent: TermSpec | None) -> Array:
    """W_t'W_t from W_t's held blocks and its columns after the holding term (see `_eliminate_chain`)."""
    gram_after = jnp.einsum("jkr,jks->rs", after, after)
    if holder is None:
        return gram_after
    mp, kp, qp = parent.nlevels, parent.k, parent.nranef
    diagonal = jax.ops.segment_sum(jnp.einsum("jka,jkb->jab", held, held), holder, mp)
    across = jax.ops.segment_sum(jnp.einsum("jka,jkr->jar", held, after), holder, mp).reshape(qp, -1)
    levels = jnp.arange(mp)
    block = jnp.zeros((mp, kp, mp, kp), held.dtype).at[levels, :, levels, :].set(diagonal).reshape(qp, qp)
    return jnp.block([[block, across], [across.T, gram_after]])


def schur_factor(system: System) -> Array:
    """The lower Cholesky factor L22 of the Schur complement (0 x 0 when it is empty)."""
    return cholesky(system.schur) if system.schur.shape[-1] else system.schur


def penalised_logdet(system: System, structure: Structure) -> Array:
    """log|Lambda'Z'CZ Lambda + I| = sum_j log|L11_j|^2 + the chain's sum_j log|L_tj|^2 + log det of the
    rest's leading qd x qd block (the Schur complement in the u block alone)."""
    logdet = sum(_logdet_small(el) for el in (system.l11, *(step[0] for step in system.chain)))
    qd = structure.qrest - sum(t.nranef for t in structure.terms[1 : 1 + len(system.chain)])
    return logdet + leading_logdets(system.schur, (qd,))[0] if qd else logdet


def _logdet_small(el: Array) -> Array:
    """sum_j log|L_j|^2 over a stack of small lower factors L_j."""
    eye = np.eye(el.shape[-1], dtype=bool)
    return 2.0 * jnp.sum(jnp.log(jnp.where(eye, el, 1.0)))  # elementwise: no gather to differentiate


def _step(mode: Mode, system: System, l22: Array, grad: Array, data: GlmmData, vary_beta: bool) -> Mode:
    """mode - H^-1 grad by block elimination: with z1 = L11^-1 g1 and [dr; dx] = -S^-1 (g2 - W'z1),
    d1 = -L11^-T (z1 + W1r dr + W1x dx)."""
    m1, k1 = system.l11.shape[:2]
    q1, pat = m1 * k1, data.pattern
    qr = mode.u.shape[0] - q1
    z1 = solve_lower_small(system.l11, grad[:q1].reshape(m1, k1, 1))[..., 0]
    wz = jax.ops.segment_sum(jnp.sum(system.w1r * z1[pat.entry_level], axis=-1), pat.entry_col, num_segments=qr)
    g2 = grad[q1:] - jnp.concatenate([wz, jnp.einsum("jkp,jk->p", system.w1x, z1)])
    d2 = _solve_chain(system.chain, _holders(pat), l22, g2)
    dr, dx = d2[:qr], d2[qr:]
    y1 = z1 + jax.ops.segment_sum(system.w1r * dr[pat.entry_col][:, None], pat.entry_level, num_segments=m1)
    d1 = -solve_upper_small(system.l11, (y1 + system.w1x @ dx)[..., None])[..., 0]
    return Mode(mode.u + jnp.concatenate([d1.reshape(-1), dr]), mode.beta + dx if vary_beta else mode.beta)


def _solve_chain(chain: tuple, holders: tuple, l22: Array, g: Array) -> Array:
    """-S^-1 g for the Schur complement S over [ur, beta], eliminated along the chain as term 1 is
    (`_step`): z = L_t^-1 g_t, d_rest = -S_rest^-1 (g_rest - W_t'z), d_t = -L_t^-T (z + W_t d_rest), with
    W_t held per level of the next term where it holds term t's (`_eliminate_chain`)."""
    if not chain:
        return -cho_solve(l22, g)
    (el, held, after), rest, holder = chain[0], chain[1:], holders[0]
    m, k = el.shape[:2]
    z = solve_lower_small(el, g[: m * k].reshape(m, k, 1))[..., 0]
    mp, kp = (0, 0) if holder is None else rest[0][0].shape[:2]
    wz = jax.ops.segment_sum(jnp.einsum("jka,jk->ja", held, z), holder, mp).reshape(-1) if mp else g[:0]
    wz = jnp.concatenate([wz, jnp.einsum("jkr,jk->r", after, z)])
    d_rest = _solve_chain(rest, holders[1:], l22, g[m * k :] - wz)
    wd = after @ d_rest[mp * kp :]
    if mp:
        wd = wd + jnp.einsum("jka,ja->jk", held, d_rest[: mp * kp].reshape(mp, kp)[holder])
    return jnp.concatenate([-solve_upper_small(el, (z + wd)[..., None]).reshape(-1), d_rest])


_HALVINGS = 0.5 ** np.arange(11)


def pirls(
    zl: Array,
    beta: Array,
    data: GlmmData,
    structure: Structure,
    fam: Family,
    vary_beta: bool,
    tol: float = 1e-12,
    maxiter: int = 100,
) -> Mode:
    """The conditional mode of u (and of beta, when vary_beta) by Fisher scoring (`scoring`) from u = 0."""

    def target(mode: Mode) -> Mode:
        system = penalised_system(mode, zl, data, structure, fam, vary_beta, fisher=True)
        grad = _penalised_gradient(mode, zl, data, fam, vary_beta)
        return _step(mode, system, schur_factor(system), grad, data, vary_beta)

    start = Mode(jnp.zeros(sum(t.nranef for t in structure.terms), zl.dtype), beta)
    return scoring(start, target, lambda mode: _penalised_deviance(mode, zl, data, fam), tol, maxiter)


def scoring(
    start: Mode, target: Callable[[Mode], Mode], deviance: Callable[[Mode], Array], tol: float, maxiter: int
) -> Mode:
    """Minimise `deviance` from `start` by the steps towards `target(mode)` (the full Fisher scoring step).

    Each iteration takes the largest of 1, 1/2, ..., 1/1024 of the step that does not raise the
    deviance, trying them in that order (the full step almost always: one pass over eta); it stops
    when the decrease is below tol relative, or no fraction decreases it."""
    halvings = jnp.asarray(_HALVINGS, start.beta.dtype)

    def trial(mode: Mode, aim: Mode, k: Array) -> tuple[Mode, Array]:
        moved = Mode(*(a + halvings[k] * (b - a) for a, b in zip(mode, aim)))
        return moved, deviance(moved)

    def body(state):
        mode, pdev, niter, _ = state
        aim = target(mode)
        _, moved, moved_pdev = lax.while_loop(
            lambda s: (s[0] < len(_HALVINGS) - 1) & ~(s[2] <= pdev),
            lambda s: (s[0] + 1, *trial(mode, aim, s[0] + 1)),
            (jnp.array(0), *trial(mode, aim, jnp.array(0))),
        )
        ok = moved_pdev <= pdev
        new_pdev = jnp.where(ok, moved_pdev, pdev)
        new_mode = jax.tree.map(lambda t, old: jnp.where(ok, t, old), moved, mode)
        done = ~ok | (pdev - new_pdev <= tol * jnp.abs(new_pdev)) | (niter + 1 >= maxiter)
        return new_mode, new_pdev, niter + 1, done

    init = (start, deviance(start), jnp.array(0), jnp.array(False))
    return lax.while_loop(lambda s: ~s[3], body, init)[0]


def laplace(theta: Array, beta: Array, data: GlmmData, structure: Structure, fam: Family, fast: bool) -> Laplace:
    """f(theta, beta) of the module docstring, with the mode it is evaluated at. Pure: jit, vmap,
    differentiate twice.

    fast=False: beta is the fixed effects. fast=True: beta is only PIRLS's start for them (the
    mode's beta is the joint mode's), and f is a function of theta alone."""
    zl = z_lambda(theta, data, structure)
    fixed_zl = lax.stop_gradient(zl)
    mode = lax.stop_gradient(pirls(fixed_zl, lax.stop_gradient(beta), data, structure, fam, fast))
    # Two chord steps, with the exact Hessian at the mode held constant: at the mode they move
    # nothing, but carry the mode's first and second derivatives (see the module docstring).
    system = penalised_system(mode, fixed_zl, data, structure, fam, fast, fisher=False)
    l22 = schur_factor(system)
    if not fast:
        mode = Mode(mode.u, beta)  # beta's derivatives come from the argument itself
    for _ in range(2):
        mode = _step(mode, system, l22, _penalised_gradient(mode, zl, data, fam, fast), data, fast)
    eta = linear_predictor(mode, zl, data)
    logdet = penalised_logdet(penalised_system(mode, zl, data, structure, fam, False, fisher=True), structure)
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
) -> tuple[Callable[[Array], Laplace], np.ndarray]:
    """The Laplace (or quadrature) evaluation a fit minimises the objective of, as a function of the solver's x,
    and x's `column_diag` (see solver.py).

    fast=True: x = theta, beta found by PIRLS from beta0. fast=False: x = (theta, beta); the fixed
    effects have no bound and no sign symmetry (column_diag -1), and beta0 gives only their count.
    A family with a shape alpha (Family.has_shape) has log alpha after theta, unbounded too."""
    free = int(fam.has_shape) + (0 if fast else beta0.shape[0])
    column_diag = np.concatenate([structure.column_diag, np.full(free, -1, dtype=np.int32)])

    def evaluate(x: Array) -> Laplace:
        theta, beta, data_x = _parameters(x, beta0, data, structure, fam, fast)
        return adaptive_quadrature(theta, beta, data_x, structure, fam, fast, nAGQ)

    return evaluate, column_diag


def objective_of(evaluate: Callable[[Array], Laplace]) -> Callable[[Array], Array]:
    """The function of the solver's x that a fit minimises: f of `solver_problem`'s evaluation."""
    return lambda x: evaluate(x).objective


def glmm_result(
    res: SolverResult, at: Laplace, beta0: Array, data: GlmmData, structure: Structure, fam: Family, fast: bool
) -> GlmmFit:
    """The fit at the solver's optimum, from the Laplace evaluation `at` there (solver.finish_evaluated):
    objective, mode and Cov(beta-hat), as lme4 computes it:
    fast=False, the beta block of 2 H^-1 with H the Hessian of f in (theta, beta) at the optimum
    (exact, lme4's is by finite differences; after BFGS iterations, BFGS's approximation of it);
    fast=True, the beta block of the inverse of PIRLS's Fisher system in (u, beta) at the mode
    (lme4's RX-based one, which it uses for nAGQ = 0). With a shape alpha, fast=False's H includes
    log alpha (glmmTMB's joint Hessian; glmer.nb's holds k fixed), fast=True's holds it fixed."""
    theta, _, data = _parameters(res.theta, beta0, data, structure, fam, fast)
    if fast:
        vcov = fisher_vcov(theta, at.mode, data, structure, fam)
    else:
        free = structure.ntheta + fam.has_shape
        vcov = 2.0 * spd_inverse(res.hessian)[free:, free:]
    shape = jnp.asarray(data.shape, dtype=theta.dtype)
    return GlmmFit(at.objective, theta, at.mode.beta, at.mode.u, vcov, res.converged, res.niter, res.hessian, shape)


def fit_glmm(
    theta0: Array,
    beta0: Array | None,
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

    beta0 None: the GLM's (`glm_start`), computed in the same program (one compile, one load).

    h0 as in `minimize`: given h0, a Hessian of f near the start in the solver's x, the iterations
    need first derivatives of f only. A family's shape alpha starts at data.shape."""
    beta0 = glm_start(data, structure, fam) if beta0 is None else beta0
    evaluate, column_diag = solver_problem(beta0, data, structure, fam, fast, nAGQ)
    log_shape0 = jnp.log(jnp.asarray(data.shape, dtype=theta0.dtype)).reshape(-1)[: int(fam.has_shape)]
    x0 = jnp.concatenate([theta0, log_shape0, *([] if fast else [beta0])])
    s = run(objective_of(evaluate), init(x0, column_diag, h0), column_diag, opts, exact=h0 is None)
    res, _, f, mode = finish_evaluated(evaluate, s, column_diag, opts)
    return glmm_result(res, Laplace(f, mode), beta0, data, structure, fam, fast)


def fisher_vcov(theta: Array, mode: Mode, data: GlmmData, structure: Structure, fam: Family) -> Array:
    """Cov(beta-hat) given theta (and data.shape): the beta block of the inverse of PIRLS's Fisher system
    in (u, beta) at `mode` (lme4's vcov(m, use.hessian = FALSE), and its only one for nAGQ = 0). Pure."""
    system = penalised_system(mode, z_lambda(theta, data, structure), data, structure, fam, True, fisher=True)
    qd = system.schur.shape[0] - structure.p
    lx_inv = solve_triangular(schur_factor(system)[qd:, qd:], jnp.eye(structure.p, dtype=theta.dtype))
    return lx_inv.T @ lx_inv


_fit_glmm = jit(fit_glmm, static_argnames=("structure", "fam", "fast", "opts", "nAGQ"), once=True)


def glm_start(data: GlmmData, structure: Structure, fam: Family) -> Array:
    """beta of the GLM without random effects (theta = 0, u = 0): Fisher scoring in beta (`scoring`),
    beta <- beta - (X'CX)^-1 X'g with C the Fisher weights and g = d(d_i/2)/deta, from beta = 0, or for the
    inverse link (mu = 1/eta, eta = 0 outside its domain) from the least-squares fit of eta = 1/mean(y)
    (every mu the mean where X has an intercept; step halving keeps eta > 0). PIRLS in (u, beta) at
    theta = 0, where u stays 0, without its random effects' blocks (which are 0 and I there)."""
    zl = jnp.zeros((structure.n, data.index.shape[1]), data.x.dtype)

    def target(mode: Mode) -> Mode:
        eta, g, _ = _half_deviance_derivatives(mode, zl, data, fam)
        cx = fam.fisher_weights(data.weights, eta, data.shape)[:, None] * data.x
        return Mode(mode.u, mode.beta - cho_solve(cholesky(data.x.T @ cx), data.x.T @ g))

    if fam.link == "inverse":
        beta0 = jnp.linalg.lstsq(data.x, jnp.full_like(data.y, 1.0 / jnp.mean(data.y)))[0]
    else:
        beta0 = jnp.zeros(structure.p)
    start = Mode(jnp.zeros(sum(t.nranef for t in structure.terms), data.x.dtype), beta0)
    return scoring(start, target, lambda mode: _penalised_deviance(mode, zl, data, fam), 1e-12, 100).beta
