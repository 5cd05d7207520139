"""Draws the README's figures into docs/figures/ (python docs/make_figures.py; matplotlib needed)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

import jaxmm
from jaxmm import plot

OUT = Path(__file__).resolve().parent / "figures"


def main() -> None:
    m = jaxmm.fit("reaction ~ 1 + days + (1 + days | subj)", jaxmm.dataset("sleepstudy"))
    cake = jaxmm.fit("angle ~ 1 + recipe + temperature + (1 | recipe:replicate)", jaxmm.dataset("cake"))
    cake_samp = jaxmm.parametricbootstrap(42, 2_000, cake, progress=False)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), layout="constrained")
    plot.residplot(m, ax=axes[0])
    plot.qqnorm(m, ax=axes[1])
    plot.residbygroup(m, ax=axes[2])
    figures = {
        "caterpillar": plot.caterpillar(m),
        "qqcaterpillar": plot.qqcaterpillar(m),
        "shrinkageplot": plot.shrinkageplot(m),
        "residuals": fig,
        "coefplot": plot.coefplot(cake, show_intercept=False),
        "ridgeplot": plot.ridgeplot(cake_samp, show_intercept=False),
        "zetaplot": plot.zetaplot(jaxmm.profile(m)),
    }
    OUT.mkdir(exist_ok=True)
    for name, figure in figures.items():
        figure.savefig(OUT / f"{name}.png", dpi=80)


if __name__ == "__main__":
    main()
