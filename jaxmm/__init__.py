"""jaxmm: linear mixed-effects models and their parametric bootstrap, in JAX.

The data path, one module each (ARCHITECTURE.md): formula -> design -> covariance -> deviance (LMM) /
glmm.laplace (GLMM) -> solver -> lmm / glmm.model -> bootstrap -> results -> display.

Importing jaxmm changes no JAX setting; its persistent compilation cache is switched on when jaxmm
first compiles (see jaxmm._compile: JAXMM_CACHE_DIR="" turns it off).
"""

from . import plot  # matplotlib itself is imported only when a plot is drawn
from ._compile import enable_compilation_cache
from .bootstrap import parametricbootstrap
from .datasets import dataset, datasets
from .glmm import GeneralizedLinearMixedModel
from .lmm import LinearMixedModel
from .lrt import BootstrapLikelihoodRatioTest, LikelihoodRatioTest, likelihoodratiotest, pblrt
from .models import fit
from .results import MixedModelBootstrap, restorereplicates, shortestcovint, vcat

__all__ = [
    "BootstrapLikelihoodRatioTest",
    "GeneralizedLinearMixedModel",
    "LikelihoodRatioTest",
    "LinearMixedModel",
    "MixedModelBootstrap",
    "dataset",
    "datasets",
    "enable_compilation_cache",
    "fit",
    "likelihoodratiotest",
    "parametricbootstrap",
    "pblrt",
    "plot",
    "restorereplicates",
    "shortestcovint",
    "vcat",
]
__version__ = "0.1.0"
