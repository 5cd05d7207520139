"""After a fit: predictions (lme4's predict.merMod), simulated responses (simulate.merMod), refits
to a new response (refit) and the conditional covariances of the random effects (ranef(condVar = TRUE)).

Everything here is in the units of the data as given: X and each term's z as the formula evaluates
them (not the fit's standardised X_s and rescaled z), with the estimates m.beta, m.theta and the
random effects b of m.ranef(). For new data the formula is evaluated by formulaic's model spec of
the fitted rows (design.data), so a factor keeps the fit's levels and coding and poly(x, k) and
scale(x) keep the fitted data's basis, centre and scale (R's makepredictcall):

    eta = X_new beta + o_new + sum_t Z_t,new b_t,     b_t = 0 for a level the fit has not seen,

o_new the offset on the new rows: the formula's offset(expr) terms evaluated there, plus the fit's
`offset=` column of newdata (an offset given to the fit as an array has no values for new rows:
pass them as `offset=`). A level of a fixed-effects factor that the fit has not seen has no
coefficient: a ValueError.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from formulaic import model_matrix

from ._compile import computing, jit
from .design import ModelMatrices, Structure, _formulaic, as_data_frame
from .formula import R_FUNCTIONS, coefficient_name
from .glmm.laplace import random_effect_index
from .mixedmodel import MixedModel


class NewMatrices(NamedTuple):
    """X (the estimable columns, as given) and each term's z (as given) and level index for some
    rows; a term's levels are the fit's then, numbered after them, the `new` ones."""

    x: np.ndarray  # (n, p)
    offset: np.ndarray  # (n,) o, zeros without one
    refs: tuple[np.ndarray, ...]  # per term, (n,) index into fit levels + new levels
    z: tuple[np.ndarray, ...]  # per term, (n, k)
    new: tuple[tuple[str, ...], ...]  # per term, the levels the fit has not seen


def _spec(design, rhs: str, what: str):
    """formulaic's model spec of `rhs` on the fitted rows: how new data is encoded."""
    return _formulaic(
        what, rhs, lambda: model_matrix(rhs, design.data, na_action="ignore", context=R_FUNCTIONS).model_spec
    )


def _by_level_name(newdata: pd.DataFrame, spec, used: set[str]) -> pd.DataFrame:
    """newdata with each categorical column of the fit re-coded as the fit's categorical, matching
    levels by name (str), so '2' and 2 are the same level; an unseen level is a ValueError."""
    out = newdata.copy()
    for name, (kind, state) in spec.encoder_state.items():
        if getattr(kind, "value", kind) != "categorical" or name not in out.columns or name not in used:
            continue
        levels = list(state["categories"])
        by_name = {str(level): level for level in levels}
        values = out[name]
        unseen = [v for v in values.dropna().unique() if str(v) not in by_name]
        if unseen:
            raise ValueError(
                f"newdata column {name!r} has level {unseen[0]!r}, which the fit has not seen; "
                f"its levels are {', '.join(map(str, levels))}"
            )
        codes = [by_name[str(v)] if not pd.isna(v) else None for v in values]
        out[name] = pd.Categorical(codes, categories=levels)
    return out


def _evaluate(spec, data: pd.DataFrame, what: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """The model matrix of `spec` on `data`; a level formulaic casts to NaN (an expression of a
    factor, unseen) is a ValueError rather than its warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mm = _formulaic(what, "newdata", lambda: spec.get_model_matrix(data, na_action="ignore", context=R_FUNCTIONS))
    for w in caught:
        if "outside of the nominated levels" in str(w.message) or "not seen in original" in str(w.message):
            raise ValueError(
                f"newdata has a level the fit has not seen in the {what}: {str(w.message).splitlines()[0]}"
            )
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return np.asarray(mm, dtype=np.float64), tuple(coefficient_name(c) for c in mm.columns)


def _bars_by_term(design) -> list[list]:
    """Per term of the structure, the bar terms merged into it (MixedFormula.bars_by_group)."""
    bars = [[design.formula.random[i] for i in positions] for positions in design.formula.bars_by_group()]
    named = {group[0].group_name: group for group in bars}
    return [named[t.group] for t in design.structure.terms]


def new_matrices(design, newdata, allow_new_levels: bool, random: bool = True, offset=None) -> NewMatrices:
    """X, the offset and, with `random`, each term's z and level index for the rows of newdata (see the
    module docstring); `offset` (a column of newdata or one value per row) replaces the fit's `offset=`
    column. A missing column, or a fixed-effects level the fit has not seen, is a ValueError; so is a
    grouping level the fit has not seen unless allow_new_levels."""
    newdata = as_data_frame(newdata)
    fixed = _spec(design, design.formula.fixed, "fixed-effects")
    offsets = [_spec(design, f"0 + I({e})", "offset") for e in design.formula.offsets]
    bars = _bars_by_term(design) if random else []
    specs = [[_spec(design, bar.expr, f"random-effects term for {bar.group_name!r}") for bar in b] for b in bars]
    needed = set(fixed.required_variables).union(*(spec.required_variables for spec in offsets))
    for term_bars, term_specs in zip(bars, specs):
        for bar, spec in zip(term_bars, term_specs):
            needed |= set(spec.required_variables) | set(bar.group)
    missing = sorted(c for c in needed if c not in newdata.columns)
    if missing:
        raise ValueError(
            f"newdata has no column {missing[0]!r}, which the formula {design.formula.text!r} uses; "
            f"its columns are: {', '.join(map(str, newdata.columns))}"
        )
    if len(newdata) == 0:
        raise ValueError("newdata has no rows")
    o = sum((_evaluate(spec, newdata, "offset")[0][:, 0] for spec in offsets), np.zeros(len(newdata)))
    o = o + _offset_column(design, newdata, offset)
    x_all, names = _evaluate(fixed, _by_level_name(newdata, fixed, needed), "fixed effects")
    if names != design.coefnames:
        raise ValueError(f"newdata gives the fixed-effects columns {names}, the fit has {design.coefnames}")
    refs, zs, new = [], [], []
    for t, levels, term_bars, term_specs in zip(design.structure.terms, design.levels, bars, specs):
        z = np.column_stack([_evaluate(s, _by_level_name(newdata, s, needed), "random effects")[0] for s in term_specs])
        labels = _level_names(newdata, term_bars[0].group)
        index = {level: i for i, level in enumerate(levels)}
        unseen = list(dict.fromkeys(label for label in labels if label not in index))
        if unseen and not allow_new_levels:
            raise ValueError(
                f"newdata has level {unseen[0]!r} of grouping factor {t.group!r}, which the fit has not seen; "
                "pass allow_new_levels=True to predict it with random effects 0"
            )
        index.update({label: len(levels) + i for i, label in enumerate(unseen)})
        refs.append(np.array([index[label] for label in labels], dtype=np.int32))
        zs.append(z)
        new.append(tuple(str(u) for u in unseen))
    return NewMatrices(x_all[:, design.estimable], o, tuple(refs), tuple(zs), tuple(new))


def _offset_column(design, newdata: pd.DataFrame, offset) -> np.ndarray:
    """The `offset=` part of the offset on newdata's rows: `offset` (a column of newdata or one value
    per row) if given, else the fit's offset= column of newdata; zeros if the fit had none."""
    if offset is None and design.offset_column is None:
        return np.zeros(len(newdata))
    if offset is None:
        offset = design.offset_column
        if offset not in newdata.columns:
            raise ValueError(
                "the fit's offset was given as an array, which has no values for newdata's rows; "
                "pass them as offset= (a column of newdata or one value per row)"
                if offset == "(offset)"
                else f"newdata has no column {offset!r}, the fit's offset"
            )
    return _row_values(newdata, offset, "offset")


def _row_values(newdata: pd.DataFrame, value, what: str) -> np.ndarray:
    """`value` (offset=, weights=) on newdata's rows: a column of newdata, or one finite number per row."""
    if isinstance(value, str):
        if value not in newdata.columns:
            raise ValueError(f"{what} {value!r} is not a column of newdata")
        value = newdata[value]
    values = np.asarray(value, dtype=np.float64)
    if values.shape != (len(newdata),) or not np.all(np.isfinite(values)):
        raise ValueError(
            f"{what} must be a column of newdata or {len(newdata)} finite values (one per row), got {values.shape}"
        )
    return values


def _level_names(data: pd.DataFrame, group: tuple[str, ...]) -> list:
    """Each row's level of the interaction of the grouping columns, named as design._grouping_factor
    names levels (str of each column's value, joined by ':'); a missing value is a level of its own."""
    columns = [data[c].astype(object).to_numpy() for c in group]
    return [
        (":".join(str(v) for v in row) if not any(pd.isna(v) for v in row) else ("<missing>",) + tuple(map(str, row)))
        for row in zip(*columns)
    ]


def _matrices(m: MixedModel, newdata, allow_new_levels: bool, random: bool = True, offset=None) -> NewMatrices:
    if newdata is None and offset is not None:
        raise ValueError("offset= is for newdata's rows; the fitted rows have the fit's offset")
    return new_matrices(m.design, m.design.data if newdata is None else newdata, allow_new_levels, random, offset)


def _population(re_form) -> bool:
    """re_form: None (conditional on every random effect) or lme4's "~0", "NA", NA, False (none)."""
    if re_form is None:
        return False
    if re_form is False or (isinstance(re_form, float) and np.isnan(re_form)):
        return True
    if isinstance(re_form, str) and re_form.replace(" ", "") in ("~0", "NA", "0"):
        return True
    raise ValueError(
        f"re_form must be None (every random effect) or '~0', 'NA' or False (none), got {re_form!r}; "
        "a subset of the random-effects terms is not supported"
    )


def _extended(b: np.ndarray, nnew: int) -> np.ndarray:
    """A term's per-level rows with `nnew` rows of zeros appended: new levels' random effects."""
    return np.concatenate([b, np.zeros((nnew, b.shape[1]))])


def linear_predictor(
    m: MixedModel, newdata=None, *, re_form=None, allow_new_levels: bool = False, offset=None
) -> np.ndarray:
    """eta = X beta + o + sum_t Z_t b_t on newdata (default the fitted rows); re_form population: X beta + o."""
    population = _population(re_form)
    m._require_fit()
    if not isinstance(allow_new_levels, (bool, np.bool_)):
        raise ValueError(f"allow_new_levels must be True or False, got {allow_new_levels!r}")
    mats = _matrices(m, newdata, bool(allow_new_levels), random=not population, offset=offset)
    eta = mats.x @ m.beta.to_numpy()[m.design.estimable] + mats.offset
    for b, refs, z, new in zip(m.ranef().values(), mats.refs, mats.z, mats.new):
        eta = eta + np.sum(z * _extended(b.to_numpy(), len(new))[refs], axis=1)
    return eta


def predict(
    m: MixedModel,
    newdata=None,
    *,
    re_form=None,
    allow_new_levels: bool = False,
    type: str = "response",
    offset=None,
) -> np.ndarray:
    """lme4's predict.merMod: eta = X beta + o + Z b (re_form=None) or X beta + o (re_form "~0", "NA"
    or False) on newdata (default: the fitted rows); for a GLMM type="response" gives g^-1(eta),
    type="link" eta. b = 0 for grouping levels the fit has not seen (allow_new_levels=True). o: the
    offset on newdata (module docstring); `offset`, a column of newdata or one value per row, replaces
    the fit's offset= column there (needed where the fit's offset= was an array)."""
    if type not in ("response", "link"):
        raise ValueError(f"type must be 'response' or 'link', got {type!r}")
    eta = linear_predictor(m, newdata, re_form=re_form, allow_new_levels=allow_new_levels, offset=offset)
    if type == "link" or not hasattr(m, "family"):
        return eta
    with computing():
        return np.asarray(m.family.inverse_link(jnp.asarray(eta)))


# ---- simulate -------------------------------------------------------------------------------


def _keys(seed, nsim: int):
    """Replicate i's key: fold_in(key(seed), i), as parametricbootstrap's replicate i."""
    from .bootstrap.engine import replicate_key

    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not -(2**63) <= int(seed) < 2**63:
        raise ValueError(f"seed must be None or an int from -2**63 to 2**63 - 1, got {seed!r}")
    key = jax.random.key(int(seed))
    return jax.vmap(lambda i: replicate_key(key, i))(jnp.arange(nsim))


def _u_with_new(us: tuple, nnew: tuple) -> jnp.ndarray:
    """The spherical modes u of every term, level-major, with zeros for each term's new levels."""
    return jnp.concatenate([jnp.concatenate([u, jnp.zeros((n, u.shape[1]))]).reshape(-1) for u, n in zip(us, nnew)])


def simulate(
    m: MixedModel, nsim: int = 1, seed=None, *, use_u: bool = False, newdata=None, weights=None, offset=None
) -> pd.DataFrame:
    """lme4's simulate.merMod: nsim responses drawn from the fitted model, one column each (sim_1,
    sim_2, ...), on newdata (default the fitted rows).

    use_u=False: new random effects b ~ N(0, sigma^2 Lambda Lambda') for every level; use_u=True:
    b held at the conditional modes (new levels of newdata at 0, as lme4's predict). Then, with o the
    offset (see predict), y = X beta + o + Z b + sigma W^-1/2 e (LMM) or y ~ family(g^-1(X beta + o +
    Z b)) (GLMM; binomial: the proportion of successes out of w trials). The prior weights w (LMM)
    or trials (binomial): `weights`, a column of newdata or one value per row, as lme4's weights
    argument; by default the fit's on the fitted rows, and on newdata 1 for an LMM, where a binomial
    model's trials are a ValueError (lme4 takes 1 trial). Draw i uses parametricbootstrap's
    replicate-i key, so with newdata=None, simulate(nsim, seed)'s column i is that bootstrap
    replicate's response (to rounding: here in X's and Z's units, there in the fit's)."""
    from .glmm.laplace import GlmmData
    from .glmm.model import simulate_glmm_response
    from .lmm import simulate_response

    state = m._require_fit()
    if isinstance(nsim, bool) or not isinstance(nsim, (int, np.integer)) or nsim < 1:
        raise ValueError(f"nsim must be a positive integer, got {nsim!r}")
    if not isinstance(use_u, (bool, np.bool_)):
        raise ValueError(f"use_u must be True or False, got {use_u!r}")
    mats = _matrices(m, newdata, allow_new_levels=True, offset=offset)
    n = len(mats.x)
    w = _simulation_weights(m, newdata, weights)
    terms = tuple(dataclasses.replace(t, nlevels=t.nlevels + len(new)) for t, new in zip(m.structure.terms, mats.new))
    structure = Structure(terms=terms, n=n, p=m.structure.p)
    beta, theta = m.beta.to_numpy()[m.design.estimable], m.theta
    with computing():
        keys = _keys(seed, int(nsim))
        if m.has_dispersion:
            ranef = (
                tuple(jnp.asarray(_extended(b.to_numpy(), len(new))) for b, new in zip(m.ranef().values(), mats.new))
                if use_u
                else None
            )
            matrices = ModelMatrices(
                jnp.asarray(mats.x), tuple(map(jnp.asarray, mats.refs)), tuple(map(jnp.asarray, mats.z)),
                jnp.asarray(mats.offset), None if w is None else jnp.asarray(w),
            )  # fmt: skip
            one = lambda key: simulate_response(key, matrices, structure, beta, jnp.asarray(m.sigma), theta, ranef)
        else:
            if w is None and newdata is not None and m.family.takes_weights:
                raise ValueError(
                    "simulating a binomial model on newdata needs each row's trials: pass them as weights= "
                    "(a column of newdata or one value per row)"
                )
            index = random_effect_index(mats.refs, terms)
            data = GlmmData(
                jnp.zeros(n), jnp.asarray(np.ones(n) if w is None else w), jnp.asarray(mats.x),
                tuple(map(jnp.asarray, mats.z)), jnp.asarray(index), jnp.asarray(mats.offset), jnp.asarray(m._shape),
            )  # fmt: skip
            u = _u_with_new(tuple(map(jnp.asarray, state.u)), tuple(len(new) for new in mats.new)) if use_u else None
            one = lambda key: simulate_glmm_response(
                key, data, structure, m.family, jnp.asarray(beta), jnp.asarray(theta), u
            )
        y = np.asarray(jax.jit(jax.vmap(one))(keys))
    index = None if newdata is None else as_data_frame(newdata).index
    return pd.DataFrame({f"sim_{i + 1}": y[i] for i in range(int(nsim))}, index=index)


def _simulation_weights(m: MixedModel, newdata, weights) -> np.ndarray | None:
    """The prior weights (trials) to simulate with: `weights` on the rows simulated, else the fit's on
    the fitted rows; None for none (ones)."""
    if weights is None:
        return m.design.weights if newdata is None else None
    values = _row_values(m.design.data if newdata is None else as_data_frame(newdata), weights, "weights")
    if not np.all(values > 0):
        raise ValueError(f"weights must be positive, got {values[values <= 0][0]}")
    return values


# ---- refit ----------------------------------------------------------------------------------


def refit(m: MixedModel, y) -> MixedModel:
    """lme4's refit: a new model, the same as m (formula, data, settings: REML; family, fast, nAGQ)
    but for the response y (one value per fitted row, e.g. a column of m.simulate()), fitted."""
    m._require_fit()
    if isinstance(y, pd.DataFrame):
        if y.shape[1] != 1:
            raise ValueError(f"y must be one response (a vector or a one-column table), got {y.shape[1]} columns")
        y = y.iloc[:, 0]
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if y.shape != (m.nobs,) or not np.all(np.isfinite(y)):
        raise ValueError(f"y must hold {m.nobs} finite values (one per fitted row), got shape {y.shape}")
    new = copy.copy(m)
    new.design = dataclasses.replace(m.design, y=y)
    new.optsum, new._state = None, None
    if m.has_dispersion:
        return new.fit(REML=m.REML)
    m.family.check_response(y, m.design.weights, m.design.response)
    return new.fit(fast=m.fast, nAGQ=m.nAGQ)


# ---- conditional covariances of the random effects -----------------------------------------


def _conditional_covariances(zl: jnp.ndarray, index: jnp.ndarray, w: jnp.ndarray, lams: tuple, structure: Structure):
    """Per term, per level, the k x k block of Lambda (Lambda'Z'WZ Lambda + I)^-1 Lambda', the
    conditional covariance of b given y over sigma^2 at the estimates (beta's uncertainty ignored,
    as lme4's condVar). zl: (n, K) the nonzero entries of Z Lambda, index: (n, K) their random
    effect, w: (n,) the weights (1 for an LMM, PIRLS's Fisher weights for a GLMM). Pure."""
    q = sum(t.nranef for t in structure.terms)
    values = w[:, None, None] * zl[:, :, None] * zl[:, None, :]
    gram = jax.ops.segment_sum(
        values.reshape(-1), (index[:, :, None] * q + index[:, None, :]).reshape(-1), num_segments=q * q
    ).reshape(q, q) + jnp.eye(q, dtype=zl.dtype)
    inverse = jnp.linalg.inv(gram)
    out, offset = [], 0
    for t, lam in zip(structure.terms, lams):
        idx = offset + jnp.arange(t.nranef).reshape(t.nlevels, t.k)
        out.append(lam @ inverse[idx[:, :, None], idx[:, None, :]] @ lam.T)
        offset += t.nranef
    return tuple(out)


_conditional_covariances_jit = jit(_conditional_covariances, static_argnames=("structure",))


def conditional_covariances(m: MixedModel) -> tuple[np.ndarray, ...]:
    """Per term, (levels, k, k): Cov(b_j | y) = s^2 [Lambda (Lambda'Z'WZ Lambda + I)^-1 Lambda']_jj at
    the estimates, s = sigma (LMM) or 1 (GLMM, W its Fisher weights at the conditional modes): lme4's
    ranef(condVar = TRUE) postVar."""
    state = m._require_fit()
    mats = _matrices(m, None, allow_new_levels=False)
    lams = tuple(np.asarray(lam) for lam in state.lambdas)
    zl = np.concatenate([z @ lam for z, lam in zip(mats.z, lams)], axis=1)
    with computing():
        if m.has_dispersion:
            w, scale = np.ones(m.nobs), state.sigma
        else:
            eta = jnp.asarray(linear_predictor(m))
            w = np.asarray(m.family.fisher_weights(jnp.asarray(_weights(m)), eta, m._shape))
            scale = 1.0
        blocks = _conditional_covariances_jit(
            jnp.asarray(zl),
            jnp.asarray(random_effect_index(mats.refs, m.structure.terms)),
            jnp.asarray(w),
            tuple(map(jnp.asarray, lams)),
            structure=m.structure,
        )
    return tuple(scale**2 * np.asarray(b) for b in blocks)


def _weights(m: MixedModel) -> np.ndarray:
    return np.ones(m.nobs) if m.design.weights is None else m.design.weights
