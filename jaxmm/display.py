"""Everything jaxmm prints: model summaries, variance-component and coefficient tables, bootstrap
summaries and likelihood-ratio test tables, in MixedModels.jl's layout.

Each function takes the object it shows and reads only its public attributes, so it works for
any kind of model; the classes' __repr__ call these.
"""

from __future__ import annotations

import math
from html import escape

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


def _varcorr_rows(vc: pd.DataFrame) -> list[tuple[str, str, str, str, str]]:
    """The variance components' cells as shown: group (on its first row), column, variance, standard
    deviation, correlations with the columns before it."""
    sds = vc[vc["var2"].isna()]
    rows = []
    last_group = None
    for _, r in sds.iterrows():
        corr = vc[(vc["grp"] == r["grp"]) & (vc["var2"] == r["var1"])]["sdcor"].tolist()
        group = r["grp"] if r["grp"] != last_group else ""
        last_group = r["grp"]
        column = "" if pd.isna(r["var1"]) else r["var1"]
        rows.append((group, column, f"{r['vcov']:.6g}", f"{r['sdcor']:.6g}", " ".join(f"{c:+.2f}" for c in corr)))
    return rows


def format_varcorr(vc: pd.DataFrame) -> str:
    """The variance components (m.varcorr()): group, column, variance, standard deviation, correlations."""
    rows = [("", "Column", "Variance", "Std.Dev.", "Corr."), *_varcorr_rows(vc)]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
        for row in rows
    )


def _coeftable_cells(ct: pd.DataFrame) -> pd.DataFrame:
    """The fixed-effects table's cells as shown (strings), by coefficient name."""
    return pd.DataFrame(
        {
            "Coef.": ct["Est."].map(lambda v: f"{v:.6g}"),
            "Std. Error": ct["SE"].map(lambda v: f"{v:.6g}"),
            "z": ct["z"].map(lambda v: f"{v:.2f}"),
            "Pr(>|z|)": ct["p"].map(format_pvalue),
        },
        index=ct.index,
    )


def format_coeftable(ct: pd.DataFrame) -> str:
    """The fixed-effects table (m.coeftable()): Coef., Std. Error, z, Pr(>|z|)."""
    return _coeftable_cells(ct).to_string()


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


def _observations(m) -> str:
    groups = "; ".join(f"{t.group} {t.nlevels}" for t in m.structure.terms)
    return f"Number of obs: {m.nobs}; levels of grouping factors: {groups}"


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
    lines += [f" {_observations(m)}", ""]
    if not m.optsum.converged:
        lines.append(" WARNING: the optimiser did not converge")
    lines += ["Fixed-effects parameters:", format_coeftable(m.coeftable())]
    if m.ndropped:
        lines.append(f" ({m.ndropped} rows with missing values dropped)")
    return "\n".join(lines)


def bootstrap_summary(samp) -> str:
    """A bootstrap's size, convergence and singular count, and the quantiles of every column of samp.tbl."""
    return "\n".join(_bootstrap_head(samp)) + "\n" + _bootstrap_quantiles(samp).to_string(float_format=_g6)


def _g6(v: float) -> str:
    return f"{v:.6g}"


def _bootstrap_head(samp) -> list[str]:
    failed = int((~samp.converged).sum())
    return [
        f"MixedModelBootstrap with {samp.nsamp} samples of {samp.model.formula!r}",
        f" converged: {samp.nsamp - failed} of {samp.nsamp}; singular: {int(samp.issingular().sum())}",
    ]


def _bootstrap_quantiles(samp) -> pd.DataFrame:
    """Per column of samp.tbl: min, quartiles, mean, max."""
    return samp.tbl.describe(percentiles=[0.25, 0.5, 0.75]).T[["min", "25%", "50%", "mean", "75%", "max"]]


def _rule(width: int) -> str:
    return "─" * width


def lrt_table(test) -> str:
    """A classical likelihood-ratio test (jaxmm.LikelihoodRatioTest) as MixedModels.jl prints it."""
    crit = "REML crit." if test.reml else "Deviance"
    head = f"{'':4}{'DOF':>5}{'ΔDOF':>6}{crit:>14}{'Chisq':>10}{'p(>Chisq)':>11}"
    rows = [f"{a:4}{b:>5}{c:>6}{d:>14}{e:>10}{f:>11}".rstrip() for a, b, c, d, e, f in _lrt_rows(test)]
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


def _lrt_rows(test) -> list[tuple[str, ...]]:
    """The two models' rows as shown: [k], DOF, ΔDOF, criterion, Chisq, p(>Chisq)."""
    return [
        ("[1]", str(test.dof[0]), "", f"{test.objective[0]:.4f}", "", ""),
        (
            "[2]",
            str(test.dof[1]),
            str(test.df),
            f"{test.objective[1]:.4f}",
            f"{test.lrt:.4f}",
            format_pvalue(test.pvalue),
        ),
    ]


def pblrt_table(test) -> str:
    """A parametric-bootstrap likelihood-ratio test (jaxmm.BootstrapLikelihoodRatioTest) as pbkrtest's summary."""
    head = f"{'':10}{'stat':>10}{'df':>5}{'p.value':>11}"
    body = [f"{name:10}{stat:>10}{df:>5}{p:>11}" for name, stat, df, p in _pblrt_rows(test)]
    formulas = [f" small: {test.test.formulas[0]}", f" large: {test.test.formulas[1]}"]
    return "\n".join([_pblrt_head(test), *formulas, head, *body])


def _pblrt_head(test) -> str:
    return (
        f"Parametric bootstrap likelihood-ratio test: {test.nsamp} replicates, {test.nused} used, {test.nfailed} failed"
    )


def _pblrt_rows(test) -> list[tuple[str, str, str, str]]:
    """pbkrtest's rows as shown: name, statistic, df, p-value."""
    rows = [
        ("LRT", test.lrt, str(test.df), test.pvalue_chisq),
        ("PBtest", test.lrt, "", test.pvalue_bootstrap),
        ("Gamma", test.lrt, "", test.pvalue_gamma),
        ("Bartlett", test.bartlett, str(test.df), test.pvalue_bartlett),
    ]
    return [(name, f"{stat:.4f}", df, format_pvalue(p)) for name, stat, df, p in rows]


def anova_table(table: pd.DataFrame) -> str:
    """jaxmm.anova's table as text: 6 significant digits, p-values as MixedModels.jl's, blanks for
    the first model's Chisq, Df and p-value."""
    shown = table.assign(**{"Pr(>Chisq)": table["Pr(>Chisq)"].map(format_pvalue)})
    return shown.to_string(float_format=_g6, na_rep="")


# ---- HTML for notebooks (_repr_html_): the text displays' cells, in tables -----------------------


def _html_table(header, rows) -> str:
    """A table of strings, each escaped: a header row, then the rows."""
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_lines(*lines: str) -> str:
    return "<p>" + "<br>".join(escape(line.strip()) for line in lines) + "</p>"


def model_html(m) -> str:
    """A fitted model as model_summary shows it, in HTML: method, formula, criteria, variance
    components and fixed-effects tables (MixedModels.jl's HTML show in a notebook)."""
    head = [m.fit_method, m.formula] + ([m.distribution] if m.distribution is not None else [])
    if m.REML:
        criteria = _html_lines(f"REML criterion at convergence: {m.objective:.4f}")
    else:
        values = (m.loglikelihood, m.objective, m.aic, m.bic)
        criteria = _html_table(("logLik", "-2 logLik", "AIC", "BIC"), [[f"{v:.4f}" for v in values]])
    ct = _coeftable_cells(m.coeftable())
    notes = [_observations(m)]
    if not m.optsum.converged:
        notes.append("WARNING: the optimiser did not converge")
    if m.ndropped:
        notes.append(f"({m.ndropped} rows with missing values dropped)")
    return "".join(
        [
            "<div>",
            _html_lines(*head),
            criteria,
            "<p>Variance components:</p>",
            _html_table(("Group", "Column", "Variance", "Std.Dev.", "Corr."), _varcorr_rows(m.varcorr())),
            "<p>Fixed-effects parameters:</p>",
            _html_table(("", *ct.columns), [(name, *cells) for name, cells in zip(ct.index, ct.to_numpy())]),
            _html_lines(*notes),
            "</div>",
        ]
    )


def bootstrap_html(samp) -> str:
    """bootstrap_summary in HTML: size, convergence, singular count, and samp.tbl's quantiles."""
    q = _bootstrap_quantiles(samp)
    rows = [(name, *(_g6(v) for v in values)) for name, values in zip(q.index, q.to_numpy())]
    return "<div>" + _html_lines(*_bootstrap_head(samp)) + _html_table(("", *q.columns), rows) + "</div>"


def lrt_html(test) -> str:
    """lrt_table in HTML, each model's formula in its row."""
    crit = "REML crit." if test.reml else "Deviance"
    rows = [(k, formula, *cells) for (k, *cells), formula in zip(_lrt_rows(test), test.formulas)]
    title = f"Likelihood-ratio test: 2 models fitted on {test.nobs} observations" + (" (REML)" if test.reml else "")
    return (
        "<div>"
        + _html_lines(title)
        + _html_table(("", "model", "DOF", "ΔDOF", crit, "Chisq", "p(>Chisq)"), rows)
        + "</div>"
    )


def pblrt_html(test) -> str:
    """pblrt_table in HTML."""
    lines = _html_lines(_pblrt_head(test), f"small: {test.test.formulas[0]}", f"large: {test.test.formulas[1]}")
    return "<div>" + lines + _html_table(("", "stat", "df", "p.value"), _pblrt_rows(test)) + "</div>"
