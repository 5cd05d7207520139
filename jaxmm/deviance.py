"""The profiled deviance of a linear mixed model: a pure JAX function of theta and the blocks.

With Lambda(theta) the block-diagonal relative covariance factor, the Cholesky factor L of

    [ Lambda'Z'Z Lambda + I   Lambda'Z'X   Lambda'Z'y ]
    [ X'Z Lambda              X'X          X'y        ]
    [ y'Z Lambda              y'X          y'y        ]

gives everything: with r^2 = L[-1,-1]^2 (the penalised residual sum of squares, pwrss),

    ML:    d(theta) = log|L_Z|^2 + n (1 + log(2 pi r^2 / n))
    REML:  d(theta) = log|L_Z|^2 + log|L_X|^2 + (n - p) (1 + log(2 pi r^2 / (n - p)))

The first term's block is block diagonal and is factored level by level with `chol_small`;
eliminating it leaves a dense Schur complement over [Z_2..Z_T, X, y], factored densely.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .covariance import TermSpec, lambdas, rmul_lambda
from .design import Blocks, Structure, SuffStats
from .linalg import (
    chol_small,
    cholesky,
    leading_logdets,
    solve_lower_small,
    solve_triangular,
    solve_upper_small,
    uses_lapack,
)


class Factor(NamedTuple):
    """Term 1's factor per level, and the dense Schur complement left after eliminating term 1."""

    l11: Array  # (m1, k1, k1)
    schur: Array  # (D, D) over [Zr, X, y], D = qr + p + 1; its Cholesky factor is L22


def _first_term(theta: Array, blocks: Blocks, structure: Structure) -> tuple[Array, Array]:
    """L11_j = chol(lambda1' Z1'Z1_j lambda1 + I) and M_j = lambda1 (L11_j L11_j')^-1 lambda1' per level."""
    lam1 = lambdas(theta, structure.terms)[0]
    k1 = lam1.shape[0]
    l11 = chol_small(jnp.einsum("ba,jbc,cd->jad", lam1, blocks.z1z1, lam1) + jnp.eye(k1, dtype=theta.dtype))
    v = solve_lower_small(l11, jnp.broadcast_to(lam1.T, l11.shape))  # L11^-1 lambda1'
    return l11, jnp.einsum("jra,jrb->jab", v, v)


def factorize(theta: Array, blocks: Blocks, stats: SuffStats, structure: Structure) -> Factor:
    """Blocked Cholesky factor of the augmented penalised system above, at theta.

    Eliminating term 1 leaves the Schur complement  M22 - sum_j B_j' M_j B_j  over [Zr, X, y],
    with B_j = (Z1'[Zr X y])_j (`_first_term_products`)."""
    l11, m = _first_term(theta, blocks, structure)
    rest, rest_lams = structure.terms[1:], lambdas(theta, structure.terms)[1:]
    qr = structure.qrest
    dense1 = jnp.concatenate([blocks.z1x, stats.z1y[..., None]], axis=-1)  # (m1, k1, p + 1)
    t = m @ dense1  # M_j [Z1'X Z1'y]_j
    c_rr, c_rd = _first_term_products(m, t, blocks, qr)
    c_dd = jnp.einsum("jrc,jrd->cd", dense1, t)
    cross_d = jnp.concatenate([blocks.zrx, stats.zry[:, None]], axis=-1) - c_rd
    dd = jnp.block([[blocks.xx, stats.xy[:, None]], [stats.xy[None, :], stats.yy[None, None]]]) - c_dd
    s_rr, s_rd = _lambda_sandwich(blocks.zrzr - c_rr, cross_d, rest_lams, rest)
    schur = jnp.block([[s_rr + jnp.eye(qr, dtype=theta.dtype), s_rd], [s_rd.T, dd]])
    return Factor(l11, schur)


def _lambda_sandwich(
    a_rr: Array, a_rd: Array, lams: tuple[Array, ...], terms: tuple[TermSpec, ...]
) -> tuple[Array, Array]:
    """Lambda_r' A_rr Lambda_r and Lambda_r' A_rd for terms 2..T, A_rd over [X, y].

    Where each of these terms has one column (k = 1), Lambda_r is diagonal and both are elementwise
    scalings, (A_rr)_ab lambda_b lambda_a and (A_rd)_ac lambda_a: one pass over the qr x qr block rather
    than products by 1 x 1 blocks between transposes (insteval's Schur complement with its gradient, measured:
    65 -> 45 ms). Done so where the dense part is factored by LAPACK; below, where the products cost little,
    they are kept (the gradient's sums would round differently: small models keep their numbers bit for bit)."""
    if terms and all(t.k == 1 for t in terms) and uses_lapack(a_rr.shape[0] + a_rd.shape[1]):
        diag = jnp.concatenate([jnp.broadcast_to(lam[0, 0], (t.nlevels,)) for lam, t in zip(lams, terms)])
        return a_rr * diag[None, :] * diag[:, None], a_rd * diag[:, None]
    return rmul_lambda(rmul_lambda(a_rr, lams, terms).T, lams, terms).T, rmul_lambda(a_rd.T, lams, terms).T


def _first_term_products(m: Array, t: Array, blocks: Blocks, qr: int) -> tuple[Array, Array]:
    """sum_j B_j' M_j B_j and sum_j B_j' T_j, B_j = (Z1'Zr)_j, T_j = M_j [Z1'X Z1'y]_j: matrix products
    when Z1'Zr is dense, else sums of the nonzero pairs' outer products (see `Blocks`)."""
    if blocks.dense_z1zr:
        b = blocks.z1zr
        return jnp.einsum("jar,jas->rs", b, m @ b), jnp.einsum("jar,jac->rc", b, t)
    c_rr = jax.ops.segment_sum(
        jnp.einsum("prs,prs->p", blocks.pair_outer, m[blocks.pair_level]),
        blocks.pair_target,
        num_segments=qr * qr,
        indices_are_sorted=True,
    ).reshape(qr, qr)
    c_rd = jax.ops.segment_sum(
        jnp.einsum("er,erc->ec", blocks.nz_vec, t[blocks.nz_level]), blocks.nz_col, num_segments=qr
    )  # (qr, p + 1)
    return c_rr + c_rr.T - jnp.diag(jnp.diagonal(c_rr)), c_rd


class Profiled(NamedTuple):
    """Terms of the profiled deviance at theta."""

    logdet_z: Array  # log|L_Z|^2
    logdet_x: Array  # log|L_X|^2
    pwrss: Array  # r^2


def profiled_terms(factor: Factor, structure: Structure) -> Profiled:
    """log|L_Z|^2, log|L_X|^2 and r^2 from log-determinants of the leading blocks of the Schur complement.

    With a_k = log det S[:k, :k]: log|L_Z|^2 = 2 sum log diag L11 + a_qr, log|L_X|^2 = a_(qr+p) - a_qr,
    log r^2 = a_D - a_(qr+p)."""
    qr, p = structure.qrest, structure.p
    a_r, a_x, a_all = leading_logdets(factor.schur, (qr, qr + p, qr + p + 1))
    eye = np.eye(factor.l11.shape[-1], dtype=bool)
    logdet_l11 = 2.0 * jnp.sum(jnp.log(jnp.where(eye, factor.l11, 1.0)))  # elementwise: no gather to differentiate
    return Profiled(logdet_l11 + a_r, a_x - a_r, jnp.exp(a_all - a_x))


def deviance_from_terms(terms: Profiled, structure: Structure, reml: Array | bool) -> Array:
    """The profiled deviance (ML) or REML criterion from its terms (see the module docstring).

    `reml` may be a traced boolean, so ML and REML fits share one compiled function."""
    reml = jnp.asarray(reml, dtype=terms.pwrss.dtype)
    dof = structure.n - reml * structure.p
    return terms.logdet_z + reml * terms.logdet_x + dof * (1.0 + jnp.log(2.0 * jnp.pi * terms.pwrss / dof))


def objective(theta: Array, blocks: Blocks, stats: SuffStats, structure: Structure, reml: Array | bool) -> Array:
    """Profiled deviance (ML) or REML criterion at theta. Pure: jit, grad and vmap it freely."""
    return deviance_from_terms(profiled_terms(factorize(theta, blocks, stats, structure), structure), structure, reml)


class FixedEffects(NamedTuple):
    """What the fixed-effects part of L gives at theta."""

    beta: Array  # (p,)
    pwrss: Array  # r^2
    vcov: Array  # (L_X L_X')^-1 = (X' V^-1 X)^-1 sigma^2, to be scaled by sigma^2
    l22: Array  # Cholesky factor of the Schur complement


def fixed_effects(factor: Factor, structure: Structure) -> FixedEffects:
    """beta-hat, r^2 and (L_X L_X')^-1 from one dense factor L22 of the Schur complement.

    L' is upper triangular, so the fixed-effects rows of L' [u; beta] = (last row of L) involve
    L_X alone: L_X' beta = l_Xy; and r = L[-1, -1]."""
    qr, p = structure.qrest, structure.p
    l22 = cholesky(factor.schur)
    lx = l22[qr : qr + p, qr : qr + p]
    lx_inv = solve_triangular(lx, jnp.eye(p, dtype=lx.dtype))
    beta = lx_inv.T @ l22[-1, qr : qr + p]
    return FixedEffects(beta, l22[-1, -1] ** 2, lx_inv.T @ lx_inv, l22)


class Solution(NamedTuple):
    """Penalised least-squares solution at theta: fixed effects and spherical random effects u."""

    beta: Array  # (p,)
    u1: Array  # (m1, k1)
    ur: Array  # (qr,)


def solve_pls(factor: Factor, theta: Array, blocks: Blocks, stats: SuffStats, structure: Structure) -> Solution:
    """beta-hat and the conditional modes u: back-substitute L' [u; beta] = (last row of L).

    u_r from the rows of L22 above X's (beta known); then per level of term 1
    u1_j = (L11_j L11_j')^-1 lambda1' (Z1'y - Z1'Zr Lambda_r u_r - Z1'X beta)_j."""
    fixed = fixed_effects(factor, structure)
    l22, beta, qr = fixed.l22, fixed.beta, structure.qrest
    ur = solve_triangular(l22[:qr, :qr], l22[-1, :qr] - l22[qr : qr + structure.p, :qr].T @ beta, trans=True)
    lams = lambdas(theta, structure.terms)
    br = rmul_lambda(ur[None, :], tuple(lam.T for lam in lams[1:]), structure.terms[1:])[0]  # Lambda_r u_r
    if blocks.dense_z1zr:
        zr_part = blocks.z1zr @ br
    else:
        zr_part = jax.ops.segment_sum(
            blocks.nz_vec * br[blocks.nz_col][:, None], blocks.nz_level, num_segments=blocks.z1z1.shape[0]
        )
    resid1 = stats.z1y - zr_part - blocks.z1x @ beta
    rhs = jnp.einsum("ba,jb->ja", lams[0], resid1)
    u1 = solve_upper_small(factor.l11, solve_lower_small(factor.l11, rhs[..., None]))[..., 0]
    return Solution(beta=beta, u1=u1, ur=ur)
