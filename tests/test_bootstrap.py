"""The parametric bootstrap: reproducibility, agreement with careful single fits, tables and files.

JAX compilation dominates the run time (each model structure, solver setting and batch shape
compiles the vmapped refit once), so the models and the main bootstraps are module fixtures, every
bootstrap has NSAMP replicates (one compiled shape per model), and models that need a table of
another shape (aliased columns) are built to share the random-effects structure and estimable
fixed effects of a model already compiled.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import scipy.optimize
from _helpers import assert_restores, same
from scipy import stats as sps

import jaxmm
from jaxmm.bootstrap import simulate_and_refit, simulated_responses
from jaxmm.design import suffstats
from jaxmm.deviance import objective

DY = "yield ~ 1 + (1|batch)"
SS = "reaction ~ 1 + days + (1 + days|subj)"
NSAMP = 40
DY_SEED = 10  # replicates 1, 2: optimum at theta ~0.08, negative curvature between it and theta = 0
DY_SEED2 = 3
SS_SEED = 4  # one replicate is singular with theta3 == 0


def _boot(m, seed, *args, **kwargs):
    return jaxmm.parametricbootstrap(seed, NSAMP, m, *args, progress=False, **kwargs)


def _diag(m) -> np.ndarray:
    return m.lowerbd == 0.0


# ---- module fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dy():
    return jaxmm.fit(DY, jaxmm.dataset("dyestuff"))


@pytest.fixture(scope="module")
def dy_reml():
    return jaxmm.fit(DY, jaxmm.dataset("dyestuff"), REML=True)


@pytest.fixture(scope="module")
def ss():
    return jaxmm.fit(SS, jaxmm.dataset("sleepstudy"))


@pytest.fixture(scope="module")
def dy_boot(dy):
    return _boot(dy, DY_SEED)


@pytest.fixture(scope="module")
def dy_boot2(dy):
    return _boot(dy, DY_SEED2)


@pytest.fixture(scope="module")
def ss_boot(ss):
    return _boot(ss, SS_SEED)


# ---- helpers for careful single fits -----------------------------------------------------------
class _Careful:
    """jaxmm.fit of a response (from lme4's start), and scipy L-BFGS-B from other starts on jaxmm.deviance.objective."""

    def __init__(self, m, data: pd.DataFrame, starts):
        self.m, self.data, self.starts = m, data, [np.asarray(s, dtype=np.float64) for s in starts]
        with jax.enable_x64(True):
            self.mats = jax.tree.map(jnp.asarray, m.design.matrices)
            blocks = jax.tree.map(jnp.asarray, m.design.blocks)
        structure, reml = m.structure, m.REML
        self._fg = jax.jit(jax.value_and_grad(lambda th, st: objective(th, blocks, st, structure, reml)))
        self.bounds = [(0.0, None) if lb == 0.0 else (None, None) for lb in m.lowerbd]

    def stats(self, y):
        with jax.enable_x64(True):
            return suffstats(self.mats, self.m.structure, jnp.asarray(y))

    def objective_at(self, theta, y) -> float:
        with jax.enable_x64(True):
            return float(self._fg(jnp.asarray(np.asarray(theta, dtype=np.float64)), self.stats(y))[0])

    def refit(self, y):
        df = self.data.copy()
        df[self.m.design.response] = y
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a non-converged careful fit is no reference
            return jaxmm.fit(self.m.formula, df, REML=self.m.REML)

    def scipy_best(self, y) -> float:
        with jax.enable_x64(True):
            st = self.stats(y)

            def fg(th):
                f, g = self._fg(jnp.asarray(th), st)
                return float(f), np.asarray(g, dtype=np.float64)

            best = math.inf
            for s in self.starts:
                res = scipy.optimize.minimize(
                    fg,
                    s,
                    jac=True,
                    method="L-BFGS-B",
                    bounds=self.bounds,
                    options={"ftol": 1e-13, "gtol": 1e-6, "maxiter": 1000},
                )
                best = min(best, float(res.fun))
        return best


def _check_against_careful_fits(m, samp, seed, data, starts):
    careful = _Careful(m, data, starts)
    ys = simulated_responses(m, seed, samp.nsamp)
    diag = _diag(m)
    r = samp.replicates
    assert r.objective.dtype == np.float64
    checked_estimates = 0
    for i, y in enumerate(ys):
        single = careful.refit(y)
        best = min(single.objective, careful.scipy_best(y))
        # at the optimum of this response, not above the best careful fit ...
        assert r.objective[i] <= best * (1 + 1e-6), (i, r.objective[i], best)
        # ... and not below it either (which would mean a different response was fitted)
        assert r.objective[i] >= best * (1 - 1e-6), (i, r.objective[i], best)
        # the stored objective is the objective at the stored theta
        np.testing.assert_allclose(careful.objective_at(r.theta[i], y), r.objective[i], rtol=1e-10)
        if np.all(r.theta[i, diag] > 0) and not single.issingular():
            np.testing.assert_allclose(r.beta[i], single.beta.to_numpy(), rtol=1e-5)
            np.testing.assert_allclose(r.sigma[i], single.sigma, rtol=1e-5)
            checked_estimates += 1
    assert checked_estimates >= samp.nsamp // 2


# ---- 1. reproducibility -------------------------------------------------------------------------
def test_batch_size_does_not_change_results(dy, dy_boot):
    base = dy_boot.tbl
    assert base.shape == (NSAMP, 5)
    for batch in (7, 3000):  # rounded up to one and to several calls of the lane width
        other = _boot(dy, DY_SEED, batch_size=batch)
        assert list(other.tbl.columns) == list(base.columns)
        assert same(other.tbl.to_numpy(), base.to_numpy()), batch
        assert same(other.replicates.niter, dy_boot.replicates.niter)
        assert same(other.converged, dy_boot.converged)
        assert same(other.se, dy_boot.se)


def test_same_seed_identical_different_seed_different(dy, dy_boot, dy_boot2):
    again = _boot(dy, DY_SEED)
    assert same(again.tbl.to_numpy(), dy_boot.tbl.to_numpy())
    a, b = dy_boot.tbl.to_numpy(), dy_boot2.tbl.to_numpy()
    assert not np.array_equal(a, b)
    assert np.all(dy_boot.objective != dy_boot2.objective)  # every replicate differs
    # a JAX key works as the rng and means the same as its seed
    with jax.enable_x64(True):
        key = jax.random.key(DY_SEED2)
    assert same(_boot(dy, key).tbl.to_numpy(), b)


def test_later_replicates_alone(dy, dy_boot):
    """Replicates f..f+k-1 alone (first=f): the same responses and fits as in a run from replicate 0."""
    assert same(simulated_responses(dy, DY_SEED, 3, first=4), simulated_responses(dy, DY_SEED, 7)[4:])
    # and the engine fits replicates first.. as they are fitted in a whole run
    sim = (dy.beta.to_numpy(), dy.sigma, dy.theta)
    (part,), _ = simulate_and_refit(DY_SEED, 3, dy, sim, (dy,), progress=False, first=4)
    for name in ("objective", "theta", "beta", "sigma"):
        assert same(getattr(part, name), getattr(dy_boot.replicates, name)[4:7]), name


# ---- 2. agreement with careful single fits --------------------------------------------------------
def test_dyestuff_replicates_match_careful_fits(dy, dy_boot):
    _check_against_careful_fits(dy, dy_boot, DY_SEED, jaxmm.dataset("dyestuff"), [dy.theta, [0.2], [3.0]])


def test_sleepstudy_replicates_match_careful_fits(ss, ss_boot):
    # (jaxmm.fit starts from [1, 0, 1].) The last start is on the boundary theta3 = 0, a stationary
    # point in theta3 by symmetry: from there L-BFGS-B finds the best singular fit.
    starts = [ss.theta, [0.3, 0.0, 0.05], [0.5, -0.2, 0.0]]
    _check_against_careful_fits(ss, ss_boot, SS_SEED, jaxmm.dataset("sleepstudy"), starts)


# ---- 3. convergence and singular replicates -------------------------------------------------------
def test_converged_and_singular_replicates_on_the_boundary(dy, ss, dy_boot, ss_boot):
    for m, samp in ((dy, dy_boot), (ss, ss_boot)):
        assert samp.converged.all()
        theta = samp.theta
        at_zero = np.any(theta[:, _diag(m)] == 0.0, axis=1)
        assert same(samp.issingular(), at_zero)
        assert 1 <= at_zero.sum() < NSAMP
        assert np.all(theta[:, _diag(m)] >= 0.0)
        assert same(samp.lowerbd, m.lowerbd)
        assert f"converged: {NSAMP} of {NSAMP}; singular: {at_zero.sum()}" in repr(samp)
    assert ss_boot.lowerbd.tolist() == [0.0, -np.inf, 0.0]
    # dyestuff: sigma1 = sigma * theta1, exactly 0 where singular
    tbl = dy_boot.tbl
    np.testing.assert_allclose(tbl["σ1"], tbl["σ"] * tbl["θ1"], rtol=1e-13)
    assert np.all((tbl["σ1"] == 0.0) == dy_boot.issingular())
    # sleepstudy: theta3 == 0 -> rho exactly +-1; otherwise |rho| < 1
    tbl = ss_boot.tbl
    t3 = tbl["θ3"].to_numpy() == 0.0
    assert t3.sum() >= 1
    assert set(np.abs(tbl.loc[t3, "ρ1"])) == {1.0}
    assert np.all(np.sign(tbl.loc[t3, "ρ1"]) == np.sign(tbl.loc[t3, "θ2"]))
    assert np.all(np.abs(tbl.loc[~t3, "ρ1"]) < 1.0)
    s1, s2 = tbl["θ1"], np.hypot(tbl["θ2"], tbl["θ3"])
    np.testing.assert_allclose(tbl["σ1"], tbl["σ"] * s1, rtol=1e-12)
    np.testing.assert_allclose(tbl["σ2"], tbl["σ"] * s2, rtol=1e-12)
    np.testing.assert_allclose(tbl.loc[~t3, "ρ1"], (tbl["θ2"] / s2)[~t3], rtol=1e-12)


# ---- 4. table names and long formats ------------------------------------------------------------
def test_tbl_columns(dy_boot, ss_boot):
    assert list(dy_boot.tbl.columns) == ["obj", "β1", "σ", "σ1", "θ1"]
    assert list(ss_boot.tbl.columns) == ["obj", "β1", "β2", "σ", "σ1", "σ2", "ρ1", "θ1", "θ2", "θ3"]
    assert same(ss_boot.tbl["obj"].to_numpy(), ss_boot.objective)
    assert same(ss_boot.tbl[["β1", "β2"]].to_numpy(), ss_boot.replicates.beta)
    assert same(ss_boot.tbl[["θ1", "θ2", "θ3"]].to_numpy(), ss_boot.theta)


def test_tbl_zero_pads_ten_or_more_coefficients(dy_boot):
    # dyestuff with 9 aliased (constant) columns: 10 coefficients, one estimable; the random
    # effects and the estimable column are dyestuff's, so the replicates are dy_boot's
    data = jaxmm.dataset("dyestuff")
    for j in range(1, 10):
        data[f"c{j}"] = float(j)
    m = jaxmm.fit("yield ~ 1 + " + " + ".join(f"c{j}" for j in range(1, 10)) + " + (1|batch)", data)
    assert len(m.coefnames) == 10 and m.design.estimable.sum() == 1
    samp = _boot(m, DY_SEED)
    names = ["β01", "β02", "β03", "β04", "β05", "β06", "β07", "β08", "β09", "β10"]
    assert list(samp.tbl.columns) == ["obj", *names, "σ", "σ1", "θ1"]
    assert same(samp.tbl["β01"].to_numpy(), dy_boot.tbl["β1"].to_numpy())
    assert np.all(np.signbit(samp.tbl[names[1:]].to_numpy())) and np.all(samp.tbl[names[1:]].to_numpy() == 0.0)
    assert same(samp.tbl[["obj", "σ", "σ1", "θ1"]].to_numpy(), dy_boot.tbl[["obj", "σ", "σ1", "θ1"]].to_numpy())
    assert len(samp.allpars) == NSAMP * (10 + 2)
    assert list(samp.coefpvalues["coefname"][:10]) == list(m.coefnames)


def test_allpars(dy_boot, ss_boot):
    for samp, npar in ((dy_boot, 3), (ss_boot, 6)):
        ap = samp.allpars
        assert list(ap.columns) == ["iter", "type", "group", "names", "value"]
        assert len(ap) == NSAMP * npar
        assert np.all(ap.groupby(["type", "group", "names"], dropna=False).size() == NSAMP)
        assert sorted(set(ap["iter"])) == list(range(1, NSAMP + 1))
    ap, tbl = ss_boot.allpars, ss_boot.tbl

    def pick(kind, group, names):
        sel = (ap["type"] == kind) & (ap["group"].isna() if group is None else ap["group"] == group)
        sel &= ap["names"].isna() if names is None else ap["names"] == names
        part = ap[sel].sort_values("iter")
        assert len(part) == NSAMP
        return part["value"].to_numpy()

    assert same(pick("β", None, "(Intercept)"), tbl["β1"].to_numpy())
    assert same(pick("β", None, "days"), tbl["β2"].to_numpy())
    assert same(pick("σ", "subj", "(Intercept)"), tbl["σ1"].to_numpy())
    assert same(pick("σ", "subj", "days"), tbl["σ2"].to_numpy())
    assert same(pick("ρ", "subj", "(Intercept), days"), tbl["ρ1"].to_numpy())
    assert same(pick("σ", "residual", None), tbl["σ"].to_numpy())


def test_coefpvalues_sigmas_fits(ss_boot):
    cp = ss_boot.coefpvalues
    assert list(cp.columns) == ["iter", "coefname", "β", "se", "z", "p"]
    assert len(cp) == NSAMP * 2
    assert same(cp["β"].to_numpy(), ss_boot.replicates.beta.reshape(-1))
    assert same(cp["se"].to_numpy(), ss_boot.se.reshape(-1))
    assert np.all(ss_boot.se > 0)
    np.testing.assert_allclose(cp["z"], cp["β"] / cp["se"], rtol=1e-15)
    np.testing.assert_allclose(cp["p"], 2 * sps.norm.sf(np.abs(cp["z"])), rtol=1e-12)
    assert list(cp["coefname"][:2]) == ["(Intercept)", "days"]
    assert same(ss_boot.beta.to_numpy(), cp[["iter", "coefname", "β"]].to_numpy())
    assert same(ss_boot.β.to_numpy(), ss_boot.beta.to_numpy())
    sg = ss_boot.sigmas
    assert list(sg.columns) == ["iter", "group", "column", "σ"] and len(sg) == 2 * NSAMP
    assert same(sg[sg["column"] == "days"]["σ"].to_numpy(), ss_boot.tbl["σ2"].to_numpy())
    assert same(ss_boot.σs.to_numpy(), sg.to_numpy())
    fits = ss_boot.fits
    assert len(fits) == NSAMP and fits["converged"].all()
    assert same(np.stack(fits["θ"]), ss_boot.theta)


# ---- 5. intervals -----------------------------------------------------------------------------------
def test_shortestcovint_function():
    v = np.random.default_rng(0).permutation(np.arange(1, 101))
    assert jaxmm.shortestcovint(v, 0.95) == (1, 95)
    assert jaxmm.shortestcovint(np.r_[np.arange(1.0, 10.0), 100.0, np.nan], 0.9) == (1.0, 9.0)
    for level in (0.0, 1.0, -0.5, 1.5):
        with pytest.raises(ValueError):
            jaxmm.shortestcovint(v, level)


def test_bootstrap_intervals(ss_boot):
    sci = ss_boot.shortestcovint()
    assert list(sci.columns) == ["type", "group", "names", "lower", "upper"]
    assert len(sci) == 6
    assert np.all(sci["lower"] <= sci["upper"])
    tbl = ss_boot.tbl
    row = sci[(sci["type"] == "β") & (sci["names"] == "days")].iloc[0]
    assert (row["lower"], row["upper"]) == jaxmm.shortestcovint(tbl["β2"], 0.95)
    et = ss_boot.confint(method="equaltail")
    assert list(et.columns) == ["par", "lower", "upper"]
    assert list(et["par"]) == ["β1", "β2", "σ", "σ1", "σ2", "ρ1"]
    for _, r in et.iterrows():
        lo, hi = np.quantile(tbl[r["par"]].to_numpy(), [0.025, 0.975])
        np.testing.assert_allclose([r["lower"], r["upper"]], [lo, hi], rtol=1e-14)
    sh = ss_boot.confint(0.9)
    for _, r in sh.iterrows():
        assert (r["lower"], r["upper"]) == jaxmm.shortestcovint(tbl[r["par"]], 0.9)
    with pytest.raises(ValueError):
        ss_boot.confint(method="bca")
    with pytest.raises(ValueError):
        ss_boot.confint(1.0)
    with pytest.raises(ValueError):
        ss_boot.shortestcovint(0.0)


# ---- 6. vcat -----------------------------------------------------------------------------------------
def test_vcat(dy_boot, dy_boot2, ss_boot, dy_reml_boot):
    expected = pd.concat([dy_boot.tbl, dy_boot2.tbl], ignore_index=True)
    for both in (jaxmm.vcat(dy_boot, dy_boot2), jaxmm.vcat([dy_boot, dy_boot2])):
        assert len(both) == 2 * NSAMP and len(both.tbl) == 2 * NSAMP
        pd.testing.assert_frame_equal(both.tbl, expected, check_exact=True)
        assert same(both.replicates.niter, np.r_[dy_boot.replicates.niter, dy_boot2.replicates.niter])
        assert len(both.allpars) == 2 * NSAMP * 3
    with pytest.raises(ValueError, match="different models"):
        jaxmm.vcat(dy_boot, ss_boot)
    with pytest.raises(ValueError, match="different models"):
        jaxmm.vcat([dy_boot, dy_reml_boot])


# ---- 7. files ------------------------------------------------------------------------------------------
def test_save_restore(tmp_path, dy, ss, dy_reml, dy_boot):
    path = tmp_path / "dy.parquet"
    assert_restores(dy_boot, dy, path)
    with pytest.raises(ValueError):
        jaxmm.restorereplicates(path, ss)
    with pytest.raises(ValueError):
        jaxmm.restorereplicates(path, dy_reml)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not a parquet file \x00\x01\x02" * 10)
    with pytest.raises(ValueError):
        jaxmm.restorereplicates(bad, dy)
    plain = tmp_path / "plain.parquet"
    dy_boot.tbl.to_parquet(plain)  # a parquet file, but not a saved bootstrap
    with pytest.raises(ValueError):
        jaxmm.restorereplicates(plain, dy)


# ---- 8. storage precision --------------------------------------------------------------------------
@pytest.mark.parametrize("ftype", [np.float32, np.float16])
def test_ftype_casts_float64_results(ftype, dy, ss, dy_boot, ss_boot, tmp_path):
    for m, seed, ref in ((dy, DY_SEED, dy_boot), (ss, SS_SEED, ss_boot)):
        samp = _boot(m, seed, ftype)
        for name in ("objective", "beta", "se", "sigma", "theta"):
            got = getattr(samp.replicates, name)
            assert got.dtype == ftype, name
            assert same(got, getattr(ref.replicates, name).astype(ftype)), name
        assert same(samp.converged, ref.converged) and same(samp.replicates.niter, ref.replicates.niter)
        tbl, reftbl = samp.tbl, ref.tbl
        raw = [c for c in tbl.columns if c == "obj" or c[0] in "βθ" or c == "σ"]
        for c in raw:
            assert tbl[c].dtype == ftype, c
            assert same(tbl[c].to_numpy(), reftbl[c].to_numpy().astype(ftype)), c
    path = tmp_path / "low.parquet"
    samp.save(path)
    back = jaxmm.restorereplicates(path, ss)
    assert back.objective.dtype == ftype and same(back.theta, samp.theta)


@pytest.mark.parametrize("ftype", [np.float32, np.float16])
def test_ftype_applies_to_derived_tbl_columns(ftype, ss, ss_boot):
    tbl, reftbl = _boot(ss, SS_SEED, ftype).tbl, ss_boot.tbl
    for c in ("σ1", "σ2", "ρ1"):
        assert tbl[c].dtype == ftype, (c, tbl[c].dtype)
        np.testing.assert_allclose(tbl[c], reftbl[c].astype(ftype), rtol=4 * np.finfo(ftype).eps)


# ---- 9. solver settings -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dy_loose(dy):
    return _boot(dy, DY_SEED, optsum_overrides={"ftol_rel": 1e-8})


def test_optsum_overrides(dy, dy_boot, dy_loose):
    assert dy_loose.converged.all()
    assert dy_loose.replicates.niter.sum() < dy_boot.replicates.niter.sum()  # the setting is used
    assert np.all(dy_loose.objective >= dy_boot.objective * (1 - 1e-9))  # never below the optimum
    with pytest.warns(RuntimeWarning, match="did not converge"):
        capped = _boot(dy, DY_SEED, optsum_overrides={"maxiter": 2})
    assert capped.converged.sum() < NSAMP
    assert np.all(capped.replicates.niter <= 2)
    assert np.all(np.isfinite(capped.objective))
    with pytest.raises(ValueError):
        _boot(dy, DY_SEED, optsum_overrides={"no_such_option": 1})
    with pytest.raises(ValueError):
        _boot(dy, DY_SEED, optsum_overrides={"maxiter": -1})


def test_looser_ftol_still_finds_the_optimum(dy_boot, dy_loose):
    np.testing.assert_allclose(dy_loose.objective, dy_boot.objective, rtol=1e-6)


def test_maxiter_is_a_cap(dy):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        samp = _boot(dy, DY_SEED, optsum_overrides={"maxiter": 10})
    assert np.all(samp.replicates.niter <= 10), np.bincount(samp.replicates.niter)


# ---- 10. simulation parameters and argument checks ------------------------------------------------
def test_simulation_parameters(dy, dy_boot2):
    n = dy.nobs
    # the fitted parameters, given explicitly, change nothing
    given = _boot(dy, DY_SEED2, beta=dy.beta.to_numpy(), sigma=dy.sigma, theta=dy.theta)
    assert same(given.tbl.to_numpy(), dy_boot2.tbl.to_numpy())
    ref = dy_boot2.tbl
    # shifting beta shifts every response, so every estimate of beta, and nothing else
    shifted = _boot(dy, DY_SEED2, beta=dy.beta.to_numpy() + 100.0).tbl
    np.testing.assert_allclose(shifted["β1"], ref["β1"] + 100.0, rtol=1e-12)
    np.testing.assert_allclose(shifted[["obj", "σ", "σ1"]], ref[["obj", "σ", "σ1"]], rtol=1e-7, atol=1e-7)
    # doubling sigma doubles every deviation from beta: same theta, sigma doubled, obj + 2 n log 2
    doubled = _boot(dy, DY_SEED2, sigma=2 * dy.sigma).tbl
    b0 = dy.beta.iloc[0]
    np.testing.assert_allclose(doubled["σ"], 2 * ref["σ"], rtol=1e-7)
    np.testing.assert_allclose(doubled["θ1"], ref["θ1"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(doubled["β1"] - b0, 2 * (ref["β1"] - b0), rtol=1e-7, atol=1e-8 * b0)
    np.testing.assert_allclose(doubled["obj"], ref["obj"] + 2 * n * np.log(2.0), rtol=1e-10)


def test_simulating_from_a_singular_theta(dy, dy_boot2):
    # no batch effect in the generating model: most replicates are singular
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        null = _boot(dy, DY_SEED2, theta=[0.0])
    assert null.sim[2].tolist() == [0.0]
    assert null.converged.all(), (
        f"{(~null.converged).sum()} unconverged, theta {np.unique(null.theta[~null.converged])}"
    )
    assert null.issingular().sum() >= NSAMP // 2
    assert null.issingular().sum() > 4 * dy_boot2.issingular().sum()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"theta": [1.0, 0.0]},
        {"theta": [-1.0]},
        {"theta": [np.nan]},
        {"beta": [1.0, 2.0]},
        {"beta": [np.inf]},
        {"sigma": -1.0},
        {"sigma": 0.0},
        {"sigma": np.nan},
        {"nsamp": 0},
        {"nsamp": -1},
        {"nsamp": 2.5},
        {"rng": "abc"},
        {"rng": 1.5},
        {"batch_size": 0},
        {"ftype": np.int32},
        {"precision": "float16"},
        {"precision": np.float32},
    ],
    ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()),
)
def test_bad_arguments(dy, kwargs):
    kwargs = dict(kwargs)
    args = {"rng": 1, "nsamp": 5, "ftype": np.float64}
    for k in list(args):
        if k in kwargs:
            args[k] = kwargs.pop(k)
    with pytest.raises(ValueError):
        jaxmm.parametricbootstrap(args["rng"], args["nsamp"], dy, args["ftype"], progress=False, **kwargs)


def test_float32_fits_the_same_responses_to_float32_resolution(ss, ss_boot):
    """precision="float32" fits the responses the float64 run simulates (drawn in float64 either
    way); put back into the float64 deviance, its optima are as good as float64's to about 1e-5
    relative (bench/bench_precision.py measures the tails on 10,000 replicates)."""
    samp = _boot(ss, SS_SEED, precision="float32")
    assert samp.converged.all()
    assert samp.objective.dtype == np.float64  # ftype, the storage, is separate from the fits' precision
    with jax.enable_x64(True):
        mats, blocks = (jax.tree.map(jnp.asarray, a) for a in (ss.design.matrices, ss.design.blocks))
        refit = jax.vmap(
            lambda y, th: objective(th, blocks, suffstats(mats, ss.structure, y), structure=ss.structure, reml=False)
        )
        at32 = np.asarray(refit(jnp.asarray(simulated_responses(ss, SS_SEED, NSAMP)), jnp.asarray(samp.theta)))
    excess = (at32 - ss_boot.objective) / ss_boot.objective
    assert np.all(excess > -1e-12) and np.median(excess) < 1e-7 and excess.max() < 1e-4
    assert np.max(np.abs(samp.objective - at32) / at32) < 1e-6  # float32's own rounding of the deviance
    np.testing.assert_allclose(samp.tbl[["β1", "β2"]], ss_boot.tbl[["β1", "β2"]], rtol=1e-4)
    assert not np.array_equal(samp.objective, ss_boot.objective)


def test_unfitted_model_rejected():
    m = jaxmm.LinearMixedModel(DY, jaxmm.dataset("dyestuff"))
    with pytest.raises(ValueError):
        jaxmm.parametricbootstrap(1, 5, m, progress=False)


# ---- 11. rank-deficient fixed effects -------------------------------------------------------------------
def test_rank_deficient_x(ss, ss_boot):
    data = jaxmm.dataset("sleepstudy")
    data["days2"] = 2 * data["days"]
    # same random effects as `ss`, so the same compiled refit serves both
    m = jaxmm.fit("reaction ~ 1 + days + days2 + (1 + days|subj)", data)
    assert list(m.coefnames) == ["(Intercept)", "days", "days2"]
    assert list(m.design.estimable) == [True, True, False]
    samp = _boot(m, SS_SEED)
    tbl = samp.tbl
    assert list(tbl.columns) == ["obj", "β1", "β2", "β3", "σ", "σ1", "σ2", "ρ1", "θ1", "θ2", "θ3"]
    assert np.all(tbl["β3"] == 0.0) and np.all(np.signbit(tbl["β3"]))
    assert np.all(np.isnan(samp.se[:, 2])) and np.all(np.isfinite(samp.se[:, :2]))
    # the aliased column changes nothing else: the same replicates as the full-rank model
    assert same(tbl.drop(columns="β3").to_numpy(), ss_boot.tbl.to_numpy())
    cp = samp.coefpvalues
    assert cp[cp["coefname"] == "days2"][["se", "z", "p"]].isna().all().all()
    # beta may be given for all coefficients or the estimable ones only
    assert same(_boot(m, SS_SEED, beta=m.beta.to_numpy()[:2]).tbl.to_numpy(), tbl.to_numpy())


# ---- 12. REML ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dy_reml_boot(dy_reml):
    return _boot(dy_reml, DY_SEED2)


def test_reml_bootstrap(dy, dy_reml, dy_reml_boot, dy_boot2):
    samp = dy_reml_boot
    assert samp.converged.all()
    assert not np.allclose(samp.objective, dy_boot2.objective, rtol=1e-3)  # not the ML criteria
    data = jaxmm.dataset("dyestuff")
    ys = simulated_responses(dy_reml, DY_SEED2, 10)
    careful = _Careful(dy_reml, data, [[1.0]])
    for i, y in enumerate(ys):
        reml_fit = careful.refit(y)
        assert reml_fit.REML
        np.testing.assert_allclose(samp.objective[i], reml_fit.objective, rtol=1e-6)
        np.testing.assert_allclose(careful.objective_at(samp.theta[i], y), samp.objective[i], rtol=1e-10)
        if not reml_fit.issingular():
            np.testing.assert_allclose(samp.replicates.sigma[i], reml_fit.sigma, rtol=1e-5)
        df = data.copy()
        df["yield"] = y
        ml_fit = jaxmm.fit(DY, df)
        assert abs(ml_fit.objective - samp.objective[i]) > 1.0


@pytest.mark.parametrize(
    "name,formula,columns",
    [
        ("penicillin", "diameter ~ 1 + (1|plate) + (1|sample)", ["obj", "β1", "σ", "σ1", "σ2", "θ1", "θ2"]),
        ("pastes", "strength ~ 1 + (1|batch/cask)", ["obj", "β1", "σ", "σ1", "σ2", "θ1", "θ2"]),
        (
            "sleepstudy",
            "reaction ~ 1 + days + zerocorr(1 + days|subj)",
            ["obj", "β1", "β2", "σ", "σ1", "σ2", "θ1", "θ2"],
        ),
    ],
    ids=["crossed", "nested", "zerocorr"],
)
def test_crossed_nested_and_zerocorr_models_bootstrap(name, formula, columns):
    """Every replicate converges, and replicate 0 matches a single fit of its simulated response."""
    data = jaxmm.dataset(name)
    m = jaxmm.fit(formula, data)
    samp = jaxmm.parametricbootstrap(5, 24, m, progress=False)
    assert list(samp.tbl.columns) == columns
    assert samp.converged.all()
    y = simulated_responses(m, 5, 1)[0]
    single = jaxmm.fit(formula, data.assign(**{m.design.response: np.asarray(y)}))
    assert samp.objective[0] <= single.objective * (1 + 1e-9)
    np.testing.assert_allclose(samp.objective[0], single.objective, rtol=1e-6)
