"""The `jaxmm` command: fit a model, or fit it and bootstrap it, from a data file or a shipped data set.

    jaxmm fit --dataset sleepstudy --formula "reaction ~ 1 + days + (1 + days | subj)"
    jaxmm bootstrap data.csv --formula "y ~ 1 + (1 | g)" -n 10000 --seed 42 --out reps.parquet

Errors a user can cause (a bad formula, a missing file, an unreadable format) are printed as one
line, `jaxmm: error: ...`, with exit status 2; `--traceback` shows the Python traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from . import __version__

# Only the commands import the library (JAX, pandas): `jaxmm --help` and `--version` stay instant.


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


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("data", nargs="?", help="a .csv or .parquet file of the data (or use --dataset)")
    common.add_argument("--dataset", metavar="NAME", help="a data set shipped with jaxmm (see jaxmm.datasets())")
    common.add_argument(
        "--formula", "-f", required=True, help='lme4 syntax, e.g. "reaction ~ 1 + days + (1 + days | subj)"'
    )
    common.add_argument("--reml", action="store_true", help="fit by REML (default: maximum likelihood)")
    common.add_argument("--traceback", action="store_true", help="show the Python traceback of an error")

    parser = _Parser(prog="jaxmm", description="Linear mixed models and their parametric bootstrap, in JAX.")
    parser.add_argument("--version", action="version", version=f"jaxmm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{fit,bootstrap}", parser_class=_Parser)
    commands.add_parser("fit", parents=[common], help="fit a model and print its summary")
    boot = commands.add_parser(
        "bootstrap",
        parents=[common],
        help="fit a model, bootstrap it, print the shortest coverage intervals",
    )
    boot.add_argument("-n", "--nsamp", type=_count, default=10_000, help="number of replicates (default 10000)")
    boot.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
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


def _command(args) -> None:
    from .bootstrap import parametricbootstrap
    from .models import fit

    if args.command == "bootstrap" and args.out:
        _check_out(args.out)
    m = fit(args.formula, _data(args), REML=args.reml)
    print(m)
    if args.command == "fit":
        return
    samp = parametricbootstrap(
        args.seed, args.nsamp, m, progress=True, precision=args.precision, checkpoint=args.checkpoint
    )
    print(f"\nParametric bootstrap: {samp.nsamp} replicates, seed {args.seed}")
    print(f"Shortest {100 * args.level:g}% coverage intervals:")
    print(samp.shortestcovint(args.level).to_string(index=False, na_rep=""))
    print(f"Singular replicates: {int(samp.issingular().sum())} of {samp.nsamp}")
    print(f"Converged replicates: {int(samp.converged.sum())} of {samp.nsamp}")
    if args.out:
        samp.save(args.out)
        print(f"Replicates written to {args.out}")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"jaxmm: warning: {message}", file=sys.stderr)


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
        except (ValueError, OSError) as err:
            # ValueError: jaxmm's (and pandas', pyarrow's) messages about the input; OSError: files.
            # Anything else is a bug, so its traceback shows.
            if args.traceback:
                raise
            message = " ".join(str(err).split()) or type(err).__name__  # parsers' messages span lines
            print(f"jaxmm: error: {message}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("jaxmm: interrupted", file=sys.stderr)
            return 130
    return 0
