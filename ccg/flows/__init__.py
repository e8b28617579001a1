"""The conditional flow q(r | z, T): `sample`, `log_prob`, `sample_and_log_prob` with a context.

Build one with `build_flow(dim, context_dim, circular, loc, scale, backend="nflows")`; build
its context rows with `make_context(cg_features, temperature_k, t_ref)`.
"""

from ccg.flows.base import FLOW_BACKENDS, ConditionalFlow, wrap_angle
from ccg.flows.build import build_flow, flow_from_config
from ccg.flows.config import FlowConfig
from ccg.flows.context import make_context, temperature_feature
from ccg.flows.coupling import NflowsFlow
from ccg.flows.normflows_backend import NormflowsFlow

__all__ = [
    "FLOW_BACKENDS",
    "ConditionalFlow",
    "FlowConfig",
    "NflowsFlow",
    "NormflowsFlow",
    "build_flow",
    "flow_from_config",
    "make_context",
    "temperature_feature",
    "wrap_angle",
]
