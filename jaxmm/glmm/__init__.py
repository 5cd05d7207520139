"""Generalized linear mixed models: the families (family.py), the Laplace approximation, PIRLS and
adaptive Gauss-Hermite quadrature (laplace.py), and the user-facing model with its bootstrap lanes
(model.py)."""

from .model import GeneralizedLinearMixedModel

__all__ = ["GeneralizedLinearMixedModel"]
