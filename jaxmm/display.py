"""Everything jaxmm prints: model summaries, variance-component and coefficient tables, bootstrap
summaries and likelihood-ratio test tables, in MixedModels.jl's layout.

Each function takes the object it shows and reads only its public attributes, so it works for
any kind of model; the classes' __repr__ call these.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def numbered(prefix: str, n: int) -> list[str]:
    """β1, β2, ... zero-padded once there are 10 or more, as MixedModels.jl names them."""
    width = len(str(n)) if n >= 10 else 1
    return [f"{prefix}{i + 1:0{width}d}" for i in range(n)]


def format_pvalue(p: float) -> str:
    """A p-value as MixedModels.jl prints it: 4 decimals, '<1e-k' below 1e-4, '<1e-99' at the bottom."""
    if not np.isfinite(p):
        return ""
    if p < 1e-99:
        return "<1e-99"
    return f"<1e{math.floor(math.log10(p)) + 1}" if p < 1e-4 else f"{p:.4f}"


def format_varcorr(vc: pd.DataFrame) -> str:
    """The variance components (m.varcorr()): group, column, variance, standard deviation, correlations."""
    sds = vc[vc["var2"].isna()]
    rows = [("", "Column", "Variance", "Std.Dev.", "Corr.")]
    last_group = None
    for _, r in sds.iterrows():
        corr = vc[(vc["grp"] == r["grp"]) & (vc["var2"] == r["var1"])]["sdcor"].tolist()
        group = r["grp"] if r["grp"] != last_group else ""
        last_group = r["grp"]
        column = "" if pd.isna(r["var1"]) else r["var1"]
        rows.append((group, column, f"{r['vcov']:.6g}", f"{r['sdcor']:.6g}", " ".join(f"{c:+.2f}" for c in corr)))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
        for row in rows
    )


def format_coeftable(ct: pd.DataFrame) -> str:
    """The fixed-effects table (m.coeftable()): Coef., Std. Error, z, Pr(>|z|)."""
    body = pd.DataFrame(
        {
            "Coef.": ct["Est."].map(lambda v: f"{v:.6g}"),
            "Std. Error": ct["SE"].map(lambda v: f"{v:.6g}"),
            "z": ct["z"].map(lambda v: f"{v:.2f}"),
            "Pr(>|z|)": ct["p"].map(format_pvalue),
        },
        index=ct.index,
    )
    return body.to_string()


def emmeans_table(emm) -> str:
    """Estimated marginal means (jaxmm.emmeans.EMMeans) as emmeans prints them: the table, then how
    they were averaged and what the df and intervals are."""
    notes = []
    if emm.averaged:
        notes.append(f"Results are averaged over the levels of: {', '.join(emm.averaged)}")
    method = "asymptotic (Wald z)" if emm.inference is None else emm.inference.method
    notes.append(f"Degrees-of-freedom method: {method}")
    back = "; intervals back-transformed from the link scale" if emm.type == "response" else ""
    notes.append(f"Confidence level used: 0.95{back}")
    return emm.table.to_string(index=False, float_format=lambda v: f"{v:.6g}") + "\n\n" + "\n".join(notes)


def model_summary(m) -> str:
    """A fitted model as MixedModels.jl shows it: method, formula, criteria, variance components,
    fixed effects. Reads m.fit_method, m.distribution (None for a linear mixed model), m.REML and
    the estimates."""
    lines = [m.fit_method, f" {m.formula}"]
    if m.distribution is not None:
        lines.append(f" {m.distribution}")
    if m.REML:
        lines.append(f" REML criterion at convergence: {m.objective:.4f}")
    else:
        header = ("logLik", "-2 logLik", "AIC", "BIC")
        values = (m.loglikelihood, m.objective, m.aic, m.bic)
        lines += ["  " + "".join(f"{h:>12}" for h in header), "  " + "".join(f"{v:12.4f}" for v in values)]
    lines += ["", "Variance components:", format_varcorr(m.varcorr())]
    groups = "; ".join(f"{t.group} {t.nlevels}" for t in m.structure.terms)
    lines += [f" Number of obs: {m.nobs}; levels of grouping factors: {groups}", ""]
    if not m.optsum.converged:
        lines.append(" WARNING: the optimiser did not converge")
    lines += ["Fixed-effects parameters:", format_coeftable(m.coeftable())]
    if m.ndropped:
        lines.append(f" ({m.ndropped} rows with missing values dropped)")
    return "\n".join(lines)


def bootstrap_summary(samp) -> str:
    """A bootstrap's size, convergence and singular count, and the quantiles of every column of samp.tbl."""
    tbl = samp.tbl
    summary = tbl.describe(percentiles=[0.25, 0.5, 0.75]).T[["min", "25%", "50%", "mean", "75%", "max"]]
    failed = int((~samp.converged).sum())
    head = [
        f"MixedModelBootstrap with {samp.nsamp} samples of {samp.model.formula!r}",
        f" converged: {samp.nsamp - failed} of {samp.nsamp}; singular: {int(samp.issingular().sum())}",
    ]
    return "\n".join(head) + "\n" + summary.to_string(float_format=lambda v: f"{v:.6g}")


def _rule(width: int) -> str:
    return "─" * width


def lrt_table(test) -> str:
    """A classical likelihood-ratio test (jaxmm.LikelihoodRatioTest) as MixedModels.jl prints it."""
    crit = "REML crit." if test.reml else "Deviance"
    head = f"{'':4}{'DOF':>5}{'ΔDOF':>6}{crit:>14}{'Chisq':>10}{'p(>Chisq)':>11}"
    pvalue = format_pvalue(test.pvalue)
    rows = [
        f"{'[1]':4}{test.dof[0]:>5}{'':>6}{test.objective[0]:>14.4f}",
        f"{'[2]':4}{test.dof[1]:>5}{test.df:>6}{test.objective[1]:>14.4f}{test.lrt:>10.4f}{pvalue:>11}",
    ]
    width = len(head)
    return "\n".join(
        [
            f"Likelihood-ratio test: 2 models fitted on {test.nobs} observations" + (" (REML)" if test.reml else ""),
            "Model formulae",
            f"1: {test.formulas[0]}",
            f"2: {test.formulas[1]}",
            _rule(width),
            head,
            _rule(width),
            *rows,
            _rule(width),
        ]
    )


def pblrt_table(test) -> str:
    """A parametric-bootstrap likelihood-ratio test (jaxmm.BootstrapLikelihoodRatioTest) as pbkrtest's summary."""
    rows = [
        ("LRT", test.lrt, str(test.df), test.pvalue_chisq),
        ("PBtest", test.lrt, "", test.pvalue_bootstrap),
        ("Gamma", test.lrt, "", test.pvalue_gamma),
        ("Bartlett", test.bartlett, str(test.df), test.pvalue_bartlett),
    ]
    head = f"{'':10}{'stat':>10}{'df':>5}{'p.value':>11}"
    body = [f"{name:10}{stat:>10.4f}{df:>5}{format_pvalue(p):>11}" for name, stat, df, p in rows]
    return "\n".join(
        [
            f"Parametric bootstrap likelihood-ratio test: {test.nsamp} replicates, {test.nused} used, "
            f"{test.nfailed} failed",
            f" small: {test.test.formulas[0]}",
            f" large: {test.test.formulas[1]}",
            head,
            *body,
        ]
    )
