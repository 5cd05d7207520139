"""jaxmm: linear mixed-effects models and their parametric bootstrap, in JAX."""

from .datasets import dataset, datasets
from .model import LinearMixedModel, fit

__all__ = ["LinearMixedModel", "dataset", "datasets", "fit"]
__version__ = "0.1.0"
