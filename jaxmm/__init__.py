"""jaxmm: linear mixed-effects models and their parametric bootstrap, in JAX."""

from . import plot  # matplotlib itself is imported only when a plot is drawn
from ._compile import enable_compilation_cache
from .bootstrap import parametricbootstrap
from .datasets import dataset, datasets
from .glmm import GeneralizedLinearMixedModel
from .lrt import BootstrapLikelihoodRatioTest, LikelihoodRatioTest, likelihoodratiotest, pblrt
from .model import LinearMixedModel, fit
from .results import MixedModelBootstrap, restorereplicates, shortestcovint, vcat

__all__ = [
    "BootstrapLikelihoodRatioTest",
    "GeneralizedLinearMixedModel",
    "LikelihoodRatioTest",
    "LinearMixedModel",
    "MixedModelBootstrap",
    "dataset",
    "datasets",
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

enable_compilation_cache()
