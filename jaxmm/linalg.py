"""Cholesky factor and triangular solves for stacks of tiny matrices, written out element by element.

The k x k blocks of a random-effects term (k = 1, 2, 3 typically) and the d x d Hessian of the
solver (d = len(theta)) are far too small for LAPACK: a batched LAPACK call loops over the stack
one matrix at a time, while these unrolled formulas are a handful of elementwise array operations
over the whole stack, which XLA fuses and vectorises (and which vmap batches for free).
The size k is static (known when tracing), so the Python loops below unroll at trace time. An
unrolled factor has about k^3 / 3 operations, so beyond STACK_UNROLL_MAX `chol_stack` and
`cho_solve_stack` loop instead (the solver's 20 x 20 Hessian of a kb07-size model was three quarters
of its program).

Dense matrices of moderate size (the dense part of a crossed LMM, a GLMM's PIRLS system) are
factored by the same column algorithms as a loop (lax.fori_loop) of vector operations: one
compact program that vmap batches like any other, where a batched LAPACK call on a CPU would
run the lanes one matrix at a time (and can deadlock jaxlib's thread pool: lanes.vectorisable).
Only larger matrices go to LAPACK (`uses_lapack`).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import Array, lax

# Up to UNROLL_MAX a dense factor is unrolled; up to LOOP_MAX it is a loop of vector operations;
# both vectorise under vmap. Above LOOP_MAX LAPACK wins.
UNROLL_MAX = 4
LOOP_MAX = 48
# A stack of matrices (the solver's Hessian in theta, or in theta and beta for a GLMM) is unrolled up
# to STACK_UNROLL_MAX (~1,700 operations for the solver's factors and solves at 8), looped beyond.
STACK_UNROLL_MAX = 8
# Above BLOCK_MAX rows a triangular inverse L^-1 and the product L^-T L^-1 are formed by halves
# (`_tril_inverse`, `_tril_gram`): matrix products that skip the zero triangle, which XLA runs faster than
# LAPACK's triangular solve of an identity (insteval's 1,145 rows, measured: L^-1 in 22 ms against 50,
# L^-T L^-1 in 26 against 47 by a second solve and 51 by one product).
BLOCK_MAX = 128


def uses_lapack(d: int) -> bool:
    """Whether a d x d factorisation or triangular solve here calls LAPACK (on a CPU)."""
    return d > LOOP_MAX


def chol_small(a: Array) -> Array:
    """Lower Cholesky factor L of each matrix in a stack a[..., k, k] (L L' = a).

    A matrix that is not positive definite yields NaN entries (sqrt of a negative pivot)."""
    k = a.shape[-1]
    el: dict[tuple[int, int], Array] = {}
    for j in range(k):
        pivot = a[..., j, j] - sum((el[j, c] ** 2 for c in range(j)), jnp.zeros_like(a[..., j, j]))
        el[j, j] = jnp.sqrt(pivot)
        for i in range(j + 1, k):
            off = a[..., i, j] - sum((el[i, c] * el[j, c] for c in range(j)), jnp.zeros_like(a[..., i, j]))
            el[i, j] = off / el[j, j]
    zero = jnp.zeros_like(a[..., 0, 0])
    rows = [jnp.stack([el.get((i, j), zero) for j in range(k)], axis=-1) for i in range(k)]
    return jnp.stack(rows, axis=-2)


def solve_lower_small(el: Array, b: Array) -> Array:
    """Solve L X = B for lower-triangular L[..., k, k] and B[..., k, m] by forward substitution."""
    k = el.shape[-1]
    x: list[Array] = []
    for i in range(k):
        acc = b[..., i, :]
        for c in range(i):
            acc = acc - el[..., i, c, None] * x[c]
        x.append(acc / el[..., i, i, None])
    return jnp.stack(x, axis=-2)


def solve_upper_small(el: Array, b: Array) -> Array:
    """Solve L' X = B for lower-triangular L[..., k, k] and B[..., k, m] by back substitution."""
    k = el.shape[-1]
    x: list[Array | None] = [None] * k
    for i in reversed(range(k)):
        acc = b[..., i, :]
        for c in range(i + 1, k):
            acc = acc - el[..., c, i, None] * x[c]
        x[i] = acc / el[..., i, i, None]
    return jnp.stack(x, axis=-2)


def cho_solve_small(el: Array, b: Array) -> Array:
    """Solve (L L') x = b for a vector b[..., k], given the Cholesky factor L[..., k, k]."""
    return solve_upper_small(el, solve_lower_small(el, b[..., None]))[..., 0]


def chol_loop(a: Array) -> Array:
    """Lower Cholesky factor L of one d x d matrix, column by column (left-looking):

        v = a[:, j] - L[:, :j] L[j, :j]',  L_jj = sqrt(v_j),  L_ij = v_i / L_jj (i > j),

    as d steps of a matrix-vector product (columns not yet computed are 0 and add nothing)."""
    d = a.shape[-1]
    rows = jnp.arange(d)

    def column(j, el):
        v = lax.dynamic_index_in_dim(a, j, axis=1, keepdims=False) - el @ lax.dynamic_index_in_dim(el, j, 0, False)
        pivot = jnp.sqrt(lax.dynamic_index_in_dim(v, j, keepdims=False))
        new = jnp.where(rows > j, v / pivot, jnp.where(rows == j, pivot, jnp.zeros_like(v)))
        return lax.dynamic_update_index_in_dim(el, new, j, axis=1)

    return lax.fori_loop(0, d, column, jnp.zeros_like(a))


def chol_stack(a: Array) -> Array:
    """Lower Cholesky factor of each matrix in a stack a[..., d, d] of any size, never by LAPACK (so
    that it vectorises under vmap): `chol_small` up to STACK_UNROLL_MAX, `chol_loop` per matrix beyond.
    A matrix that is not positive definite yields NaN entries."""
    if a.shape[-1] <= STACK_UNROLL_MAX:
        return chol_small(a)
    loop = chol_loop
    for _ in range(a.ndim - 2):
        loop = jax.vmap(loop)
    return loop(a)


def cho_solve_stack(el: Array, b: Array) -> Array:
    """Solve (L L') x = b for each factor L[..., d, d] and vector b[..., d] of a stack, never by LAPACK:
    `cho_solve_small` up to STACK_UNROLL_MAX, forward and back substitution loops (`_substitute`) beyond."""
    if el.shape[-1] <= STACK_UNROLL_MAX:
        return cho_solve_small(el, b)
    solve = lambda factor, v: _substitute(factor, _substitute(factor, v, False), True)
    for _ in range(el.ndim - 2):
        solve = jax.vmap(solve)
    return solve(el, b)


def _substitute(el: Array, b: Array, transpose: bool) -> Array:
    """Solve L X = B (forward substitution) or L' X = B (back substitution, `transpose`) for one
    lower-triangular L (d x d) and B (d,) or (d, m), row by row: x_i = (b_i - l_i x) / L_ii, where
    l_i is row i of L (column i for L') and x is 0 in the rows not yet solved."""
    d = el.shape[-1]

    def row(step, x):
        i = d - 1 - step if transpose else step
        li = lax.dynamic_index_in_dim(el, i, axis=1 if transpose else 0, keepdims=False)
        xi = (lax.dynamic_index_in_dim(b, i, keepdims=False) - li @ x) / li[i]
        return lax.dynamic_update_index_in_dim(x, xi, i, axis=0)

    return lax.fori_loop(0, d, row, jnp.zeros_like(b))


def cholesky(a: Array) -> Array:
    """Lower Cholesky factor of a dense symmetric positive-definite matrix: unrolled when tiny, a
    loop up to LOOP_MAX, LAPACK above."""
    d = a.shape[-1]
    if d <= UNROLL_MAX:
        return chol_small(a)
    return chol_loop(a) if d <= LOOP_MAX else jnp.linalg.cholesky(a)


def solve_triangular(el: Array, b: Array, trans: bool = False) -> Array:
    """Solve L X = B, or L' X = B with `trans`, for one lower-triangular L and B (d,) or (d, m)."""
    d = el.shape[-1]
    if d == 0:
        return b
    if d <= UNROLL_MAX:
        matrix = b if b.ndim == 2 else b[:, None]
        x = solve_upper_small(el, matrix) if trans else solve_lower_small(el, matrix)
        return x if b.ndim == 2 else x[:, 0]
    if d <= LOOP_MAX:
        return _substitute(el, b, trans)
    return jax.scipy.linalg.solve_triangular(el, b, lower=True, trans=int(trans))


def cho_solve(el: Array, b: Array) -> Array:
    """Solve (L L') x = b given the lower Cholesky factor L."""
    return solve_triangular(el, solve_triangular(el, b), trans=True)


def spd_inverse(a: Array) -> Array:
    """A^-1 of a symmetric positive-definite A, from its Cholesky factor: L^-T L^-1."""
    linv = _tril_inverse(cholesky(a))
    return linv.T @ linv


def _tril_inverse(el: Array) -> Array:
    """L^-1 of a lower-triangular L: by substitution up to BLOCK_MAX rows; above, by halves,
    [A 0; B C]^-1 = [A^-1 0; -C^-1 B A^-1  C^-1], two matrix products of half the size per level."""
    d = el.shape[-1]
    if d <= BLOCK_MAX:
        return solve_triangular(el, jnp.eye(d, dtype=el.dtype))
    h = d // 2
    a_inv, c_inv = _tril_inverse(el[:h, :h]), _tril_inverse(el[h:, h:])
    zero = jnp.zeros((h, d - h), dtype=el.dtype)
    return jnp.block([[a_inv, zero], [-c_inv @ (el[h:, :h] @ a_inv), c_inv]])


def _tril_gram(x: Array) -> Array:
    """X'X of a lower-triangular X, by halves above BLOCK_MAX rows (the zero block multiplies nothing):
    with X = [A 0; B C],  X'X = [A'A + B'B  B'C; C'B  C'C]."""
    d = x.shape[-1]
    if d <= BLOCK_MAX:
        return x.T @ x
    h = d // 2
    b, c = x[h:, :h], x[h:, h:]
    b_t = lax.optimization_barrier(b.T)  # copied: XLA's products read a transposed operand ~1.5x slower
    top, right = _tril_gram(x[:h, :h]) + b_t @ b, b_t @ c
    return jnp.block([[top, right], [right.T, _tril_gram(c)]])


@jax.custom_jvp
def cholesky_inverse(s: Array) -> Array:
    """L^-1 for the lower Cholesky factor L of a symmetric positive-definite S.

    S is one matrix (vmap for a stack). Its derivative is written out (custom JVP) for symmetric
    directions dS, the only ones a symmetric S moves in: with Phi(A) the lower triangle of A with
    the diagonal halved,  d(L^-1) = -Phi(L^-1 dS L^-T) L^-1.  Differentiating through the Cholesky
    algorithm instead, twice for the solver's Hessian, costs many more dense factorisations;
    this rule needs three matrix products per direction, at every order."""
    return _tril_inverse(cholesky(s))


@cholesky_inverse.defjvp
def _cholesky_inverse_jvp(primals, tangents):
    (s,), (ds,) = primals, tangents
    linv = cholesky_inverse(s)
    phi = linv @ ds @ linv.T
    phi = jnp.tril(phi) - 0.5 * jnp.diag(jnp.diagonal(phi))
    return linv, -phi @ linv


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def leading_logdets(s: Array, cuts: tuple[int, ...]) -> Array:
    """log det S[:k, :k] for each k in `cuts`, from one factor S = L L' (one matrix: vmap for a stack).

    The leading block of L is the factor of the leading block of S, so these are prefix sums of
    -2 log diag(L^-1), with diag(L^-1) = 1 / diag(L): the value alone needs no inverse. Their
    derivative (custom JVP, for symmetric dS) is tr(S_k^-1 dS_k) for each cut, the prefix sums of
    diag(L^-1 dS L^-T). Up to LOOP_MAX rows that is one matrix product per direction, and the value
    is taken from the diagonal of L^-1, which forward substitution computes as exactly 1 / L_ii (a
    value is the same number with or without its derivative). Above, where S is factored by LAPACK,
    it is  <S^-1, dS> - sum_{i >= k} l_i dS l_i'  (l_i row i of L^-1): S^-1 and the rows i >= min(cuts) are
    formed once (`inverse_and_rows`, by halves: under half the flops of L^-1 and L^-T (L^-1 dS), at XLA's product
    rate), after which a direction, and the reverse-mode gradient (the transpose, sum_c w_c (S^-1 -
    sum_{i >= k_c} l_i' l_i) for the cuts' weights w_c), costs elementwise work and products with those rows."""
    return _logdets(1.0 / jnp.diagonal(cholesky(s)), cuts)


@leading_logdets.defjvp
def _leading_logdets_jvp(cuts, primals, tangents):
    (s,), (ds,) = primals, tangents
    if not uses_lapack(s.shape[-1]):
        linv = cholesky_inverse(s)
        return _logdets(jnp.diagonal(linv), cuts), _at_cuts(jnp.cumsum(jnp.sum((linv @ ds) * linv, axis=-1)), cuts)
    first = min(cuts)
    sinv, rows = inverse_and_rows(s, first)
    # suffix[i - first] = sum over the rows r >= i of l_r dS l_r', so tr(S_k^-1 dS_k) = <S^-1, dS> - suffix[k - first]
    suffix = jnp.cumsum(jnp.sum((rows @ ds) * rows, axis=-1)[::-1])[::-1]
    suffix = jnp.concatenate([suffix, jnp.zeros((1,), suffix.dtype)])
    full = jnp.sum(sinv * ds)
    tangent = jnp.stack([full - suffix[k - first] if k > 0 else jnp.zeros((), s.dtype) for k in cuts])
    return leading_logdets(s, cuts), tangent


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def inverse_and_rows(s: Array, first: int) -> tuple[Array, Array]:
    """S^-1 = L^-T L^-1 and the rows `first`: of L^-1, for the lower Cholesky factor L of S (one matrix).

    Derivative (custom JVP, symmetric dS): d(S^-1) = -S^-1 dS S^-1, and the rows of
    d(L^-1) = -Phi(L^-1 dS L^-T) L^-1 (see `cholesky_inverse`), of which rows `first`: need only those
    rows of L^-1 dS L^-T."""
    linv = cholesky_inverse(s)
    return _tril_gram(linv), linv[first:]


@inverse_and_rows.defjvp
def _inverse_and_rows_jvp(first, primals, tangents):
    (s,), (ds,) = primals, tangents
    linv = cholesky_inverse(s)
    sinv, rows = _tril_gram(linv), linv[first:]
    d = s.shape[-1]
    phi = (rows @ ds) @ linv.T  # rows first: of L^-1 dS L^-T
    i, j = jnp.arange(first, d)[:, None], jnp.arange(d)[None, :]
    phi = jnp.where(j < i, phi, jnp.where(j == i, 0.5 * phi, 0.0))
    return (sinv, rows), (-(sinv @ ds) @ sinv, -phi @ linv)


def _logdets(linv_diagonal: Array, cuts: tuple[int, ...]) -> Array:
    return _at_cuts(jnp.cumsum(-2.0 * jnp.log(linv_diagonal)), cuts)


def _at_cuts(prefix: Array, cuts: tuple[int, ...]) -> Array:
    """prefix[k - 1] for each k in cuts, with 0 for k = 0 (the empty leading block)."""
    return jnp.stack([prefix[k - 1] if k > 0 else jnp.zeros((), prefix.dtype) for k in cuts])
