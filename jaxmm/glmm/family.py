"""Distribution families and link functions of generalized linear mixed models.

A family gives, for each observation, the conditional deviance

    d_i(eta_i) = -2 log p(y_i | mu_i),   mu_i = g^-1(eta_i),

the exact log density with its normalising constants (binomial coefficients, log y!), as R's
family()$aic sums it: the sum over observations is what lme4's -2 logLik adds to the Laplace
terms. It is written in terms of eta, through log mu and log(1 - mu), so that it stays finite for
large |eta|. The Fisher (IRLS) weights are

    w_i = m_i (dmu/deta)^2 / V(mu_i)

with m_i the prior weight (the number of trials of a binomial observation), and Var(y_i | mu_i)
in the denominator for the families with a shape parameter alpha (w_i = (dmu/deta)^2 / Var).

Families and links: "bernoulli" and "binomial" (y the proportion of successes out of the m_i
trials given as weights) with "logit" (the default), "probit" or "cloglog"; "poisson" with "log";
two with a shape parameter alpha (`has_shape`), estimated with theta and beta: "negativebinomial"
(alias "nbinom2", glmer.nb's and glmmTMB's nbinom2: y ~ NB(mu, k), Var = mu + mu^2/k, alpha = k)
with "log", and "gamma" (y ~ Gamma(shape alpha, scale mu/alpha), Var = phi mu^2, the dispersion
phi = 1/alpha) with "log" (the default) or "inverse".
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax import Array, lax
from jax.scipy.special import gammaln, log_ndtr, ndtr

_LINKS = {
    "bernoulli": ("logit", "probit", "cloglog"),
    "binomial": ("logit", "probit", "cloglog"),
    "poisson": ("log",),
    "negativebinomial": ("log",),
    "gamma": ("log", "inverse"),
}
_ALIASES = {"nbinom2": "negativebinomial"}


@dataclass(frozen=True)
class Family:
    """A family and its link; hashable, so it is a static argument of jitted functions."""

    name: str
    link: str

    @property
    def has_shape(self) -> bool:
        """Whether p(y | mu) has a parameter alpha beyond mu, the shape: the negative binomial's k,
        the Gamma's 1/phi; the Laplace objective is then a function of (theta, log alpha, beta)."""
        return self.name in ("negativebinomial", "gamma")

    @property
    def takes_weights(self) -> bool:
        """Whether the family has prior weights: the binomial's are the numbers of trials."""
        return self.name == "binomial"

    def encode_response(self, column: pd.Series, response: str) -> pd.Series:
        """The response column as numbers: a bernoulli (or binomial, one trial each) response may be
        bool, or categorical / strings with two levels, the first (in sorted order, as R's factor) the
        failure, 0, as in R's glm."""
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            return column
        if not self.takes_binary:
            return column  # refused as non-numeric by the design
        if pd.api.types.is_bool_dtype(column):
            return column.astype(np.float64)
        cat = column if isinstance(column.dtype, pd.CategoricalDtype) else column.astype("category")
        levels = list(cat.cat.remove_unused_categories().cat.categories)
        if len(levels) != 2:
            raise ValueError(
                f"response {response!r} of family {self.name!r} must have two levels (the first the failure), "
                f"got {len(levels)}: {', '.join(map(str, levels[:5]))}"
            )
        return pd.Series(np.where(cat.isna(), np.nan, (cat == levels[1]).astype(np.float64)), index=column.index)

    @property
    def takes_binary(self) -> bool:
        """Whether the response may be two-level (bool, a factor): bernoulli, and binomial as R's glm."""
        return self.name in ("bernoulli", "binomial")

    def proportion_and_trials(
        self, successes: np.ndarray, failures: np.ndarray, response: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """A cbind(successes, failures) response as the binomial's y = s / (s + f) out of m = s + f trials
        (NaN where s + f = 0, a row without trials, dropped as lme4 gives it no weight)."""
        if self.name != "binomial":
            raise ValueError(
                f"response {response!r} (successes and failures) needs family 'binomial', not {self.name!r}"
            )
        counts = np.column_stack([successes, failures])
        whole = np.isnan(counts) | ((counts >= 0) & (counts == np.round(counts)))
        if not whole.all():
            raise ValueError(f"response {response!r} must count successes and failures: whole numbers >= 0")
        trials = successes + failures
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(trials > 0, successes / trials, np.nan), np.where(trials > 0, trials, np.nan)

    def check_response(self, y: np.ndarray, weights: np.ndarray | None, response: str) -> None:
        """A ValueError naming the response unless y is in the family's support: counts (poisson),
        proportions in [0, 1] that are whole numbers of successes out of the trials given as weights
        (binomial), 0 or 1 (bernoulli), positive numbers (gamma)."""
        if self.name in ("poisson", "negativebinomial"):
            if np.any((y < 0) | (y != np.round(y))):
                raise ValueError(f"response {response!r} must be non-negative counts for family {self.name!r}")
            return
        if self.name == "gamma":
            if np.any(y <= 0):
                raise ValueError(f"response {response!r} must be positive for family 'gamma'")
            return
        if np.any((y < 0) | (y > 1)):
            raise ValueError(
                f"response {response!r} must be in [0, 1] for family {self.name!r} "
                "(a proportion, with weights the trials)"
            )
        if self.name == "bernoulli" and np.any((y != 0) & (y != 1)):
            raise ValueError(f"response {response!r} must be 0 or 1 for family 'bernoulli'")
        if self.name == "binomial":
            trials = np.ones_like(y) if weights is None else weights
            successes = y * trials
            off = np.abs(successes - np.round(successes)) > 1e-8 * np.maximum(trials, 1.0)
            if np.any(off):
                i = int(np.argmax(off))
                raise ValueError(
                    f"response {response!r} times the weights (trials) must be whole numbers of successes for family "
                    f"'binomial'; row {i} has {y[i]:g} x {trials[i]:g} = {successes[i]:g}"
                )

    def inverse_link(self, eta: Array) -> Array:
        """mu = g^-1(eta)."""
        if self.link == "logit":
            return jax.nn.sigmoid(eta)
        if self.link == "probit":
            return ndtr(eta)
        if self.link == "cloglog":
            return -jnp.expm1(-jnp.exp(eta))
        if self.link == "inverse":
            return 1.0 / eta
        return jnp.exp(eta)

    def _log_mu(self, eta: Array) -> tuple[Array, Array]:
        """log mu and log(1 - mu) (the latter for the binomial links only); the inverse link's mu = 1/eta
        is defined for eta > 0 (NaN elsewhere, which PIRLS's step halving refuses)."""
        if self.link == "logit":
            return -jax.nn.softplus(-eta), -jax.nn.softplus(eta)
        if self.link == "probit":
            return log_ndtr(eta), log_ndtr(-eta)
        if self.link == "cloglog":
            return jnp.log(-jnp.expm1(-jnp.exp(eta))), -jnp.exp(eta)
        if self.link == "inverse":
            return -jnp.log(eta), jnp.zeros_like(eta)
        return eta, jnp.zeros_like(eta)

    def deviance(self, y: Array, weights: Array, eta: Array, shape: Array | float = 1.0) -> Array:
        """-2 log p(y_i | mu_i) per observation (see the module docstring), with the log densities

        binomial: m (y log mu + (1 - y) log(1 - mu)) + log C(m, m y), m the trials;
        poisson:  y log mu - mu - log y!;
        negativebinomial, alpha = k:
                  lgamma(y + k) - lgamma(k) - log y! + k log(k / (k + mu)) + y log(mu / (k + mu));
        gamma:    alpha log alpha - lgamma(alpha) + (alpha - 1) log y - alpha log mu - alpha y / mu.

        `shape` is alpha (the families without one ignore it); log(k + mu) is logaddexp(log k, log mu)."""
        log_mu, log1m_mu = self._log_mu(eta)
        if self.name == "poisson":
            loglik = y * log_mu - jnp.exp(eta) - gammaln(y + 1.0)
        elif self.name == "negativebinomial":
            log_k = jnp.log(shape)
            log_k_plus_mu = jnp.logaddexp(log_k, log_mu)
            loglik = (
                gammaln(y + shape)
                - gammaln(shape)
                - gammaln(y + 1.0)
                + shape * (log_k - log_k_plus_mu)
                + y * (log_mu - log_k_plus_mu)
            )
        elif self.name == "gamma":
            loglik = (
                shape * jnp.log(shape)
                - gammaln(shape)
                + (shape - 1.0) * jnp.log(y)
                - shape * log_mu
                - shape * y * jnp.exp(-log_mu)
            )
        else:
            successes = weights * y
            failures = weights - successes
            log_choose = gammaln(weights + 1.0) - gammaln(successes + 1.0) - gammaln(failures + 1.0)
            # 0 log 0 = 0: a certain outcome contributes nothing
            loglik = (
                jnp.where(successes > 0, successes * log_mu, 0.0)
                + jnp.where(failures > 0, failures * log1m_mu, 0.0)
                + log_choose
            )
        return -2.0 * loglik

    def fisher_weights(self, weights: Array, eta: Array, shape: Array | float = 1.0) -> Array:
        """w = m (dmu/deta)^2 / V(mu), V(mu) = mu (1 - mu) (binomial) or mu (poisson); for the families
        with a shape alpha, w = (dmu/deta)^2 / Var(y | mu), in terms of s = dlog mu/deta (1 for the
        log link, -1/eta for the inverse):

            negativebinomial: mu^2 s^2 / (mu + mu^2/k) = s^2 mu k / (k + mu);   gamma: alpha s^2.

        For the canonical links (logit, log) dmu/deta = V(mu), so w = m dmu/deta, which has no
        0/0 where mu rounds to 0 or 1."""
        if self.has_shape:
            log_mu, s = jax.jvp(lambda e: self._log_mu(e)[0], (eta,), (jnp.ones_like(eta),))
            if self.name == "gamma":
                return shape * s**2
            log_k = jnp.log(shape)
            return s**2 * jnp.exp(log_mu + log_k - jnp.logaddexp(log_k, log_mu))
        mu_eta = jax.jvp(self.inverse_link, (eta,), (jnp.ones_like(eta),))[1]
        if self.link in ("logit", "log"):
            return weights * mu_eta
        log_mu, log1m_mu = self._log_mu(eta)
        variance = jnp.exp(log_mu + log1m_mu)
        return jnp.where(variance > 0.0, weights * mu_eta**2 / jnp.where(variance > 0.0, variance, 1.0), 0.0)

    def sample(self, key: Array, mu: Array, weights: Array, shape: Array | float = 1.0) -> Array:
        """One response per observation with conditional mean mu: bernoulli y ~ Bernoulli(mu);
        binomial y = s / m with s ~ Binomial(m, mu), m the trials (the prior weights); poisson
        y ~ Poisson(mu); negativebinomial y ~ Poisson(lambda), lambda ~ Gamma(k, scale mu/k) (the
        gamma-Poisson mixture); gamma y ~ Gamma(alpha, scale mu/alpha). Pure: vmap over keys."""
        if self.name == "gamma":
            return jax.random.gamma(key, shape, mu.shape, dtype=mu.dtype) * mu / shape
        if self.name == "negativebinomial":
            key_lambda, key_y = jax.random.split(key)
            lam = jax.random.gamma(key_lambda, shape, mu.shape, dtype=mu.dtype) * mu / shape
            return jax.random.poisson(key_y, lam).astype(mu.dtype)
        if self.name == "bernoulli":
            return jax.random.bernoulli(key, mu).astype(mu.dtype)
        if self.name == "binomial":
            return jax.random.binomial(key, weights, mu, dtype=mu.dtype) / weights
        return jax.random.poisson(key, mu).astype(mu.dtype)

    def sigma(self, shape: Array) -> Array:
        """The shape alpha as glmmTMB's sigma() reports it: the negative binomial's k, the Gamma's
        sqrt(phi) = alpha^-1/2 (lme4's sigma too); NaN for a family without a shape."""
        if self.name == "negativebinomial":
            return shape
        if self.name == "gamma":
            return lax.rsqrt(shape)
        return jnp.full_like(shape, jnp.nan)


def family(name: str, link: str | None = None) -> Family:
    """The Family for `name` ("bernoulli", "binomial", "poisson", "negativebinomial" or its alias
    "nbinom2", "gamma"; any case) and `link` (None: the first of _LINKS[name], the canonical one except
    the Gamma's log)."""
    if not isinstance(name, str) or _ALIASES.get(name.lower(), name.lower()) not in _LINKS:
        families = ", ".join(map(repr, [*_LINKS, *_ALIASES]))
        raise ValueError(f"family must be one of {families} (or 'gaussian'), got {name!r}")
    name = _ALIASES.get(name.lower(), name.lower())
    if link is None:
        return Family(name, _LINKS[name][0])
    if not isinstance(link, str) or link.lower() not in _LINKS[name]:
        raise ValueError(f"link for family {name!r} must be one of {', '.join(map(repr, _LINKS[name]))}, got {link!r}")
    return Family(name, link.lower())
