"""jaxmm: linear mixed-effects models and their parametric bootstrap, in JAX.

The data path, one module each (ARCHITECTURE.md): formula -> design -> covariance -> deviance (LMM) /
glmm.laplace (GLMM) -> solver -> lmm / glmm.model -> bootstrap -> results -> display.

The names below are imported when first used (PEP 562), so `import jaxmm` and the `jaxmm --help`
command import neither JAX nor SciPy. Importing jaxmm changes no JAX setting; its persistent
compilation cache is switched on when jaxmm first computes (jaxmm._compile; JAXMM_CACHE_DIR=""
turns it off).
"""

from __future__ import annotations

import importlib

# datasets is both a module and a function: bound here, after the module, so that the name is the
# function (the module is light: it imports pandas only to load a data set)
from .datasets import dataset as dataset
from .datasets import datasets as datasets

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "BootstrapLikelihoodRatioTest": "lrt",
    "EMMeans": "emmeans",
    "GeneralizedLinearMixedModel": "glmm",
    "LikelihoodRatioTest": "lrt",
    "LinearMixedModel": "lmm",
    "MixedModelBootstrap": "results",
    "MixedModelProfile": "profiling",
    "anova": "lrt",
    "coeftable": "generics",
    "confint": "generics",
    "enable_compilation_cache": "_compile",
    "fit": "models",
    "fixef": "generics",
    "issingular": "generics",
    "likelihoodratiotest": "lrt",
    "parametricbootstrap": "bootstrap",
    "pblrt": "lrt",
    "profile": "profiling",
    "ranef": "generics",
    "restorereplicates": "results",
    "shortestcovint": "generics",
    "vcat": "results",
    "vcov": "generics",
}
__all__ = sorted([*_EXPORTS, "dataset", "datasets", "plot"])


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    else:
        try:  # a submodule: jaxmm.plot, jaxmm.bootstrap, ...
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
