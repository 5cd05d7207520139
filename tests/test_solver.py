"""The solver on its own (jaxmm/solver.py): init / step / done on functions whose minimum is known,
continuation of a state across rounds, the sign symmetry and the boundary rules, the options."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm import solver
from jaxmm.solver import SolverOptions

NO_SYMMETRY = np.array([-1, -1], dtype=np.int32)


def rosenbrock(x):
    return (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2


def quadratic(x):
    a = jnp.array([[3.0, 1.0], [1.0, 2.0]])
    d = x - jnp.array([0.5, -1.5])
    return 0.5 * d @ a @ d + 7.0


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def test_newton_steps_by_hand_reach_the_minimum_of_a_quadratic():
    state = solver.init(jnp.zeros(2), NO_SYMMETRY)
    assert not solver.done(state)
    step = jax.jit(lambda s: solver.step(quadratic, s, NO_SYMMETRY, SolverOptions(), exact=True))
    steps = 0
    while not solver.done(state):
        state = step(state)
        steps += 1
    # evaluate the start, one Newton step to the minimum, one polishing step
    assert steps <= 4
    assert bool(state.converged)
    np.testing.assert_allclose(state.theta, [0.5, -1.5], rtol=0, atol=1e-12)
    np.testing.assert_allclose(state.f, 7.0, rtol=1e-15)


@pytest.mark.parametrize("exact", [True, False])
def test_minimize_finds_rosenbrocks_minimum(exact):
    x0 = jnp.array([-1.2, 1.0])
    h0 = None if exact else jnp.asarray(solver.floor_eigenvalues(jax.hessian(rosenbrock)(x0)))
    res = jax.jit(lambda x: solver.minimize(rosenbrock, x, NO_SYMMETRY, SolverOptions(), h0))(x0)
    assert bool(res.converged)
    np.testing.assert_allclose(res.theta, [1.0, 1.0], atol=1e-7)
    assert float(res.fmin) < 1e-14
    assert 5 < int(res.niter) < 200


def test_rounds_continue_the_state_exactly():
    """run(until=...) in rounds of 3 iterations, state carried over, equals one uninterrupted run."""
    x0 = jnp.array([-1.2, 1.0])
    h0 = jnp.asarray(solver.floor_eigenvalues(jax.hessian(rosenbrock)(x0)))
    opts = SolverOptions()
    whole = solver.run(rosenbrock, solver.init(x0, NO_SYMMETRY, h0), NO_SYMMETRY, opts, exact=False)
    run_round = jax.jit(lambda s: solver.run(rosenbrock, s, NO_SYMMETRY, opts, exact=False, until=s.niter + 3))
    state, rounds = solver.init(x0, NO_SYMMETRY, h0), 0
    while not solver.done(state):
        state = run_round(state)
        rounds += 1
    assert rounds > 3
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, b)


def test_vmapped_lanes_equal_single_fits():
    starts = jnp.array([[-1.2, 1.0], [2.0, 2.0], [0.0, 0.0]])
    batched = jax.vmap(lambda x: solver.minimize(rosenbrock, x, NO_SYMMETRY))(starts)
    for i, x0 in enumerate(starts):
        one = solver.minimize(rosenbrock, x0, NO_SYMMETRY)
        np.testing.assert_allclose(batched.theta[i], one.theta, rtol=1e-12)
        assert int(batched.niter[i]) == int(one.niter)


def test_sign_symmetry_keeps_the_diagonal_element_non_negative():
    """f(theta) = (theta^2 - 4)^2 has minima at +-2; from a negative start the canonical one, +2."""
    f = lambda t: (t[0] ** 2 - 4.0) ** 2
    res = solver.minimize(f, jnp.array([-0.7]), np.array([0], dtype=np.int32))
    assert bool(res.converged)
    np.testing.assert_allclose(res.theta, [2.0], rtol=1e-12)


def test_a_minimum_at_the_boundary_is_reached_exactly():
    """f(theta) = theta^2 + theta^4 has its minimum at theta = 0: the fit lands on 0 exactly."""
    f = lambda t: t[0] ** 2 + t[0] ** 4 + 3.0
    res = solver.minimize(f, jnp.array([0.8]), np.array([0], dtype=np.int32))
    assert bool(res.converged)
    assert float(res.theta[0]) == 0.0
    assert float(res.fmin) == 3.0


def test_a_maximum_at_the_boundary_is_not_taken_for_a_minimum():
    """f(theta) = -theta^2 + theta^4 has a maximum at 0 (gradient 0 by symmetry) and minima at +-1/sqrt(2).
    A state that stopped at 0 as converged is reported unconverged by `finish`, whose probe at 0.1 is
    lower, and the state to continue from starts there; continued, it converges to the minimum."""
    f = lambda t: -(t[0] ** 2) + t[0] ** 4
    cd = np.array([0], dtype=np.int32)
    opts = SolverOptions()
    stopped = solver.init(jnp.array([0.0]), cd, jnp.eye(1))._replace(
        f=jnp.array(0.0), done=jnp.array(True), converged=jnp.array(True), niter=jnp.array(5)
    )
    res, restart = solver.finish(f, stopped, cd, opts)
    assert not bool(res.converged)
    assert float(res.theta[0]) == pytest.approx(0.1)
    assert not bool(restart.done) and int(restart.niter) == 5
    assert float(restart.candidate[0]) == pytest.approx(0.1)
    final, _ = solver.finish(f, solver.run(f, restart, cd, opts, exact=False), cd, opts)
    assert bool(final.converged)
    np.testing.assert_allclose(final.theta, [2**-0.5], rtol=1e-8)


def test_a_non_finite_objective_stops_unconverged():
    f = lambda t: jnp.where(t[0] > 0.5, jnp.nan, (t[0] - 1.0) ** 2)
    res = solver.minimize(f, jnp.array([0.0]), np.array([-1], dtype=np.int32))
    assert not bool(res.converged)


def test_maxiter_stops_the_fit_unconverged():
    res = solver.minimize(rosenbrock, jnp.array([-1.2, 1.0]), NO_SYMMETRY, SolverOptions(maxiter=3))
    assert not bool(res.converged)
    assert int(res.niter) == 3


def test_floor_eigenvalues_gives_a_positive_definite_matrix_close_to_a_positive_definite_input():
    h = np.array([[2.0, 3.0], [3.0, 1.0]])  # eigenvalues 4.54, -1.54
    floored = solver.floor_eigenvalues(h)
    assert np.all(np.linalg.eigvalsh(floored) > 0)
    pd = np.array([[2.0, 0.5], [0.5, 1.0]])
    np.testing.assert_allclose(solver.floor_eigenvalues(pd), pd, rtol=1e-12)


def test_solver_options_take_mixedmodels_names_and_refuse_unknown_or_negative_ones():
    opts = solver.solver_options({"maxfeval": 50, "ftol_rel": 1e-8})
    assert opts.maxiter == 50 and opts.ftol_rel == 1e-8 and isinstance(opts.maxiter, int)
    assert solver.solver_options(None, np.float32).ftol_rel == 1e-6
    with pytest.raises(ValueError, match="unknown solver option 'tol'"):
        solver.solver_options({"tol": 1.0})
    with pytest.raises(ValueError, match="solver option 'xtol_abs' must be a finite non-negative number"):
        solver.solver_options({"xtol_abs": -1.0})
