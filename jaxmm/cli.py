"""The `jaxmm` command: fit a model, bootstrap it, or compare nested models, from a data file or a
shipped data set.

    jaxmm fit --dataset sleepstudy --formula "reaction ~ 1 + days + (1 + days | subj)"
    jaxmm fit --dataset cbpp -f "cbind(incidence, size - incidence) ~ 1 + period + (1 | herd)" --family binomial
    jaxmm bootstrap data.csv --formula "y ~ 1 + (1 | g)" -n 10000 --seed 42 --out reps.parquet
    jaxmm pblrt --dataset sleepstudy -f "reaction ~ 1 + days + (1 | subj)" "reaction ~ 1 + days + (1 + days | subj)"
    jaxmm anova --dataset sleepstudy -f "reaction ~ 1 + (1 | subj)" "reaction ~ 1 + days + (1 | subj)"

Text goes to stdout, or with --json one JSON object (the estimates, tables and tests; missing
values and infinities as null) for scripts; warnings and the progress bar go to stderr. Every
error is one line, `jaxmm: error: ...`, with exit status 2; `--traceback` shows the Python
traceback instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path

from . import __version__

# Only the commands import the library (JAX, pandas): `jaxmm --help` and `--version` stay instant.

COMMANDS = ("fit", "bootstrap", "pblrt", "anova")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (as every other error of the command is)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _level(text: str) -> float:
    try:
        level = float(text)
    except ValueError:
        level = float("nan")
    if not 0.0 < level < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number strictly between 0 and 1, got {text!r}")
    return level


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return n


def _options(*adders) -> argparse.ArgumentParser:
    """A parent parser holding the options `adders` add (argparse shares options through parents)."""
    parent = argparse.ArgumentParser(add_help=False)
    for add in adders:
        add(parent)
    return parent


def _input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="?", help="a .csv or .parquet file of the data (or use --dataset)")
    p.add_argument("--dataset", metavar="NAME", help="a data set shipped with jaxmm (see jaxmm.datasets())")
    p.add_argument("--json", action="store_true", help="print one JSON object (estimates, tables, tests) for scripts")
    p.add_argument("--traceback", action="store_true", help="show the Python traceback of an error")


def _lmm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reml", action="store_true", help="fit by REML (default: maximum likelihood)")
    p.add_argument(
        "--weights", metavar="COLUMN", help="prior weights: residual variance sigma^2/w (LMM), the trials (binomial)"
    )
    p.add_argument("--offset", metavar="COLUMN", help="a column added to the linear predictor")


def _glmm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--family",
        help="fit a generalized linear mixed model of this family, as jaxmm.fit's family= (bernoulli, binomial, "
        "poisson, ...; default: a linear mixed model)",
    )
    p.add_argument("--link", help="the family's link, as jaxmm.fit's link= (logit, probit, log, ...)")


def _bootstrap_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--nsamp", type=_count, default=10_000, help="number of replicates (default 10000)")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar (it shows only in a terminal)")


def _one_formula(p: argparse.ArgumentParser) -> None:
    p.add_argument("--formula", "-f", required=True, help='lme4 syntax, e.g. "reaction ~ 1 + days + (1 + days | subj)"')


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jaxmm", description="Linear and generalized linear mixed models and their parametric bootstrap, in JAX."
    )
    parser.add_argument("--version", action="version", version=f"jaxmm {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}", parser_class=_Parser
    )
    glmm = _options(_input_options, _one_formula, _lmm_options, _glmm_options)
    commands.add_parser("fit", parents=[glmm], help="fit a model and print its summary")
    boot = commands.add_parser(
        "bootstrap",
        parents=[glmm, _options(_bootstrap_options)],
        help="fit a model, bootstrap it, print the shortest coverage intervals",
    )
    boot.add_argument("--level", type=_level, default=0.95, help="coverage of the intervals (default 0.95)")
    boot.add_argument(
        "--out",
        metavar="PATH",
        help="write the replicates to a .parquet or .arrow file (jaxmm.restorereplicates reads it) "
        "or the replicate table samp.tbl to a .csv file",
    )
    boot.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="write finished replicates to PATH as they finish; the same command again resumes from it",
    )
    boot.add_argument(
        "--precision",
        choices=("float64", "float32"),
        default="float64",
        help="precision of the replicate fits (default float64; float32 for GPUs with slow float64)",
    )
    pblrt = commands.add_parser(
        "pblrt",
        parents=[_options(_input_options, _lmm_options, _bootstrap_options)],
        help="parametric-bootstrap likelihood-ratio test of two nested linear mixed models (pbkrtest's PBmodcomp)",
    )
    pblrt.add_argument(
        "--formula",
        "-f",
        required=True,
        nargs=2,
        metavar=("SMALL", "LARGE"),
        help="the null model's formula, then the alternative's (the small model nested in the large one)",
    )
    anova = commands.add_parser(
        "anova",
        parents=[_options(_input_options, _lmm_options, _glmm_options)],
        help="likelihood-ratio tests of two or more nested models (lme4's anova)",
    )
    anova.add_argument(
        "--formula",
        "-f",
        required=True,
        nargs="+",
        metavar="FORMULA",
        help="the models' formulas, each nested in the next",
    )
    return parser


def read_table(path: str):
    """Read a data file by its extension: .csv (optionally compressed, e.g. .csv.gz) or .parquet."""
    import pandas as pd

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"no such data file: {path}")
    suffixes = [s.lower() for s in file.suffixes]
    if suffixes[-1:] == [".parquet"]:
        reader = pd.read_parquet
    elif ".csv" in suffixes[-2:]:
        reader = pd.read_csv
    else:
        raise ValueError(f"cannot read {path}: the data file must end in .csv or .parquet")
    try:
        return reader(file)
    except (ValueError, OSError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err


def _data(args):
    if (args.data is None) == (args.dataset is None):
        raise ValueError("give either a data file or --dataset NAME, not both or neither")
    from .datasets import dataset

    return dataset(args.dataset) if args.dataset else read_table(args.data)


def _check_out(path: str) -> None:
    """--out, checked before the bootstrap runs so that a long run is not lost to a typo: a known
    extension, in a directory that exists and can be written to."""
    from .io import output_format

    try:
        output_format(path)
    except ValueError:
        raise ValueError(f"--out {path}: the file must end in .parquet, .arrow, .feather or .csv") from None
    folder = Path(path).parent
    if not folder.is_dir():
        raise ValueError(f"--out {path}: no such directory {folder}")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"--out {path}: cannot write to directory {folder}")


# ---- JSON ---------------------------------------------------------------------------------------


def _json_value(v):
    """A number or table cell as JSON: numbers as numbers, missing values (None, NaN) and infinities as null."""
    import numpy as np
    import pandas as pd

    if isinstance(v, str):
        return v
    if v is None or pd.isna(v):
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    v = float(v)
    return v if math.isfinite(v) else None


def _records(table) -> list[dict]:
    """A DataFrame's rows as JSON objects, by column name."""
    return [{key: _json_value(v) for key, v in row.items()} for row in table.to_dict("records")]


def _model_json(m) -> dict:
    """A fitted model's estimates: criteria, coefficients (with Wald z tests), variance components."""
    family = getattr(m, "family", None)  # a generalized linear mixed model's
    coefficients = m.coeftable().rename(columns={"Est.": "estimate", "SE": "se"}).rename_axis("name").reset_index()
    return {
        "formula": m.formula,
        "method": m.fit_method,
        "family": family.name if family else "gaussian",
        "link": family.link if family else "identity",
        "REML": m.REML,
        "nobs": m.nobs,
        "ndropped": m.ndropped,
        "converged": bool(m.optsum.converged),
        "objective": _json_value(m.objective),
        "loglikelihood": None if m.REML else _json_value(m.loglikelihood),
        "aic": _json_value(m.aic),
        "bic": _json_value(m.bic),
        "dof": m.dof,
        "sigma": _json_value(m.sigma) if m.has_dispersion else None,
        "theta": [_json_value(v) for v in m.theta],
        "coefficients": _records(coefficients),
        "varcorr": _records(m.varcorr()),
    }


# ---- the commands -------------------------------------------------------------------------------


def _fit(args, formula: str, data):
    from .models import fit

    glmm = {"family": args.family, "link": args.link} if "family" in args else {}
    return fit(formula, data, REML=args.reml, weights=args.weights, offset=args.offset, **glmm)


def _fit_command(args, data) -> tuple[dict, str]:
    m = _fit(args, args.formula, data)
    return {"model": _model_json(m)}, str(m)


def _bootstrap_command(args, data) -> tuple[dict, str]:
    from .bootstrap import parametricbootstrap

    if args.out:
        _check_out(args.out)
    m = _fit(args, args.formula, data)
    if not args.json:  # the fit's summary before the bootstrap's wait
        print(m, flush=True)
    samp = parametricbootstrap(
        args.seed, args.nsamp, m, progress=not args.quiet, precision=args.precision, checkpoint=args.checkpoint
    )
    intervals = samp.shortestcovint(args.level)
    singular, converged = int(samp.issingular().sum()), int(samp.converged.sum())
    if args.out:
        samp.save(args.out)
    result = {
        "model": _model_json(m),
        "bootstrap": {
            "nsamp": samp.nsamp,
            "seed": args.seed,
            "level": args.level,
            "intervals": _records(intervals),
            "singular": singular,
            "converged": converged,
            "out": args.out,
        },
    }
    text = [
        f"\nParametric bootstrap: {samp.nsamp} replicates, seed {args.seed}",
        f"Shortest {100 * args.level:g}% coverage intervals:",
        intervals.to_string(index=False, na_rep=""),
        f"Singular replicates: {singular} of {samp.nsamp}",
        f"Converged replicates: {converged} of {samp.nsamp}",
    ]
    if args.out:
        text.append(f"Replicates written to {args.out}")
    return result, "\n".join(text)


def _pblrt_command(args, data) -> tuple[dict, str]:
    from .lrt import pblrt

    small, large = (_fit(args, formula, data) for formula in args.formula)
    test = pblrt(args.seed, args.nsamp, small, large, progress=not args.quiet)
    result = {
        "models": [_model_json(small), _model_json(large)],
        "test": {
            "nsamp": test.nsamp,
            "seed": args.seed,
            "nused": test.nused,
            "nfailed": test.nfailed,
            "lrt": _json_value(test.lrt),
            "df": test.df,
            "bartlett": _json_value(test.bartlett),
            "pvalue_chisq": _json_value(test.pvalue_chisq),
            "pvalue_bootstrap": _json_value(test.pvalue_bootstrap),
            "pvalue_gamma": _json_value(test.pvalue_gamma),
            "pvalue_bartlett": _json_value(test.pvalue_bartlett),
        },
    }
    return result, repr(test)


def _anova_command(args, data) -> tuple[dict, str]:
    from .display import anova_table
    from .lrt import anova

    models = [_fit(args, formula, data) for formula in args.formula]
    table = anova(*models)
    result = {"models": [_model_json(m) for m in models], "anova": _records(table.reset_index())}
    return result, anova_table(table)


def _command(args) -> None:
    """Run the command; print its text, or with --json its one JSON object."""
    run = {"fit": _fit_command, "bootstrap": _bootstrap_command, "pblrt": _pblrt_command, "anova": _anova_command}
    result, text = run[args.command](args, _data(args))
    print(json.dumps({"command": args.command, **result}, allow_nan=False) if args.json else text)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"jaxmm: warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the command line with `argv` (default sys.argv[1:]); returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error already printed
        return done.code
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            _command(args)
        except KeyboardInterrupt:
            print("jaxmm: interrupted", file=sys.stderr)
            return 130
        except Exception as err:
            if args.traceback:
                raise
            # ValueError: jaxmm's (and pandas', pyarrow's) messages about the input; OSError: files.
            # Anything else is a bug: named as one, the traceback one flag away.
            message = " ".join(str(err).split()) or type(err).__name__  # parsers' messages span lines
            if not isinstance(err, (ValueError, OSError)):
                message = f"internal error, {type(err).__name__}: {message} (--traceback shows where; please report it)"
            print(f"jaxmm: error: {message}", file=sys.stderr)
            return 2
    return 0
