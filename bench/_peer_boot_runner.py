"""Times a Python peer's parametric bootstrap, in the peer's own interpreter (bench_peers_bootstrap.py runs it).

    /tmp/lmepy/bin/python bench/_peer_boot_runner.py lmepy spec.json out.json
    /tmp/mixedlm/bin/python bench/_peer_boot_runner.py mixedlm spec.json out.json

spec.json: {"n_jobs": 2, "repeats": 3, "models": {name: {"formula", "csv", "factors", "family", "weights",
"nsim"}}}. Per model: the fit (ML), one untimed warm-up bootstrap of a few replicates, then `repeats`
timed bootstraps of nsim replicates (seeds 2, 3, ...): the best is the per-replicate figure. Each
model's record holds the load before it, the peer's version and the bootstrap call it made. A model
the peer cannot fit or bootstrap gets {"error": "..."}.

lme-python: `boot_lmer(formula, data, fit, nsim, reml=False, n_jobs)` / `boot_glmer(...)`. Its
parametric bootstrap draws responses around the fitted conditional modes (lme-rs's bootstrap.rs:
`BootLmerMethod::Parametric` "like bootMer(use.u = TRUE)", through `simulate`), so this runner also
checks that on sleepstudy: the mean of 2,000 `fit.simulate` draws against the fitted values (X beta + Z b)
and against X beta, and the draws' variance against sigma^2.
mixedlm: `bootMer(fit, nsim, seed, n_jobs)`; it redraws the random effects (use.u = FALSE, its
`_simulate_lmer_components`: `simulate_random_effects(theta, ...)`), in a pool of `n_jobs` processes
started per call (the pool's start-up is part of every call).
Only the standard library, numpy and pandas are needed besides the peer.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


def load():
    return [round(x, 2) for x in os.getloadavg()]


def read(spec):
    import pandas as pd

    d = pd.read_csv(spec["csv"])
    for c in spec.get("factors", []):
        d[c] = d[c].astype(str)
    return d


def lmepy_fit(lp, spec, d, control=None):
    family, weights = spec.get("family"), spec.get("weights")
    if family is None:
        fit = lp.lmer(spec["formula"], d, reml=False, control=control)
        if not fit.converged and control is None:  # its optimiser's default limit is 1000 iterations
            return lmepy_fit(lp, spec, d, lp.FitControl(max_iterations=20000))
        return fit
    if weights:
        return lp.glmer_weighted(spec["formula"], d, family, weights=[float(w) for w in d[weights]])
    return lp.glmer(spec["formula"], d, family)


def lmepy_boot(lp, spec, d, fit, nsim, seed, n_jobs):
    if spec.get("family") is None:
        return lp.boot_lmer(spec["formula"], d, fit, nsim=nsim, reml=False, seed=seed, n_jobs=n_jobs)
    return lp.boot_glmer(spec["formula"], d, fit, nsim=nsim, seed=seed, n_jobs=n_jobs)


def lmepy_simulation_check(lp, d, formula):
    """Whether lme-python's simulate holds the random effects at their modes: statistics of 2,000 draws."""
    import numpy as np

    fit = lp.lmer(formula, d, reml=False)
    sims = np.asarray(fit.simulate(2000, n_jobs=1, seed=1).simulations)
    xb = np.asarray(fit.predict(d))  # the population-level prediction X beta
    fitted = np.asarray(fit.fitted)
    mean, var = sims.mean(axis=0), sims.var(axis=0)
    return {
        "model": formula,
        "draws": int(sims.shape[0]),
        "rms(mean of draws - fitted X beta + Z b)": float(np.sqrt(np.mean((mean - fitted) ** 2))),
        "rms(mean of draws - X beta)": float(np.sqrt(np.mean((mean - xb) ** 2))),
        "rms(fitted - X beta)": float(np.sqrt(np.mean((fitted - xb) ** 2))),
        "mean variance of draws": float(var.mean()),
        "sigma^2": float(fit.sigma2),
        "holds_random_effects_at_modes": bool(
            np.sqrt(np.mean((mean - fitted) ** 2)) < 0.2 * np.sqrt(np.mean((fitted - xb) ** 2))
            and var.mean() < 1.3 * fit.sigma2
        ),
    }


def mixedlm_fit(mlm, spec, d):
    family, weights = spec.get("family"), spec.get("weights")
    if family is None:
        return mlm.lmer(spec["formula"], d, REML=False)
    from mixedlm.families import Binomial, Poisson

    fam = {"binomial": Binomial, "poisson": Poisson}[family]()
    return mlm.glmer(spec["formula"], d, family=fam, weights=weights)


def main() -> None:
    peer, spec_path, out_path = sys.argv[1:4]
    spec = json.loads(open(spec_path).read())
    n_jobs, repeats = spec["n_jobs"], spec["repeats"]
    out = {"peer": peer, "n_jobs": n_jobs, "repeats": repeats, "models": {}}
    if peer == "lmepy":
        from importlib.metadata import version

        import lme_python as lp

        out["version"] = version("lme_python")
        out["call"] = "boot_lmer(formula, data, fit, nsim, reml=False, seed, n_jobs) / boot_glmer(...)"
        out["method"] = "parametric, random effects held at the fit's conditional modes (bootMer use.u = TRUE)"
        fit_fn = lambda s, d: lmepy_fit(lp, s, d)
        boot_fn = lambda s, d, f, n, seed: lmepy_boot(lp, s, d, f, n, seed, n_jobs)
        count = lambda b: (sum(r.converged for r in b.replicates), len(b.replicates))
    else:
        from importlib.metadata import version

        import mixedlm as mlm

        out["version"] = version("mixedlm")
        out["call"] = "bootMer(fit, nsim, seed, n_jobs)"
        out["method"] = "parametric, random effects redrawn (bootMer use.u = FALSE)"
        fit_fn = lambda s, d: mixedlm_fit(mlm, s, d)
        boot_fn = lambda s, d, f, n, seed: mlm.bootMer(f, nsim=n, seed=seed, n_jobs=n_jobs)
        count = lambda b: (b.n_boot - b.n_failed, b.n_boot)
    for name, s in spec["models"].items():
        rec = {"load_before": load(), "nsim": s["nsim"]}
        out["models"][name] = rec
        try:
            d = read(s)
            t = time.perf_counter()
            fit = fit_fn(s, d)
            rec["fit_s"] = time.perf_counter() - t
            for attr in ("converged", "iterations", "deviance"):
                value = getattr(fit, attr, None)
                rec[f"fit_{attr}"] = value if isinstance(value, (bool, int, float)) else None
            boot_fn(s, d, fit, max(2, n_jobs), 1)  # warm-up: first calls, pool and caches
            times = []
            for seed in range(2, 2 + repeats):
                t = time.perf_counter()
                b = boot_fn(s, d, fit, s["nsim"], seed)
                times.append(time.perf_counter() - t)
            ok, total = count(b)
            rec.update(times_s=times, ms_per_replicate=1e3 * min(times) / s["nsim"], converged=int(ok), of=int(total))
        except Exception as e:
            rec["error"] = f"{type(e).__name__}: {e}"
            rec["traceback"] = traceback.format_exc(limit=3)
        print(peer, name, {k: v for k, v in rec.items() if k != "traceback"}, flush=True)
    if peer == "lmepy" and "sleepstudy" in spec["models"]:
        s = spec["models"]["sleepstudy"]
        try:
            out["simulation_check"] = lmepy_simulation_check(lp, read(s), s["formula"])
        except Exception as e:
            out["simulation_check"] = {"error": f"{type(e).__name__}: {e}"}
    open(out_path, "w").write(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
