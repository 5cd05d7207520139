"""The parametric bootstrap: the user-facing call and its argument checks (api.py) and the engine
that runs replicate lanes through one compiled kernel (engine.py)."""

from ..lanes import ReplicateFit
from .api import parametricbootstrap, simulate_and_refit, simulated_responses
from .engine import ROUND_MAXITER, lane_width, replicate_key

__all__ = [
    "ROUND_MAXITER",
    "ReplicateFit",
    "lane_width",
    "parametricbootstrap",
    "replicate_key",
    "simulate_and_refit",
    "simulated_responses",
]
