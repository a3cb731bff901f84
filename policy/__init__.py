"""Pure judgement: result documents → findings, cut-off views and Mozilla compliance.

Rules and Mozilla's configurations are versioned data (:mod:`policy.rules`,
:mod:`policy.mozilla_data`); profiles choose which rules count and how much
(:mod:`policy.profile`); :mod:`policy.evaluate` applies them to the documents of
``EndpointResult.to_dict()``. Nothing here does I/O except :func:`load_profile`.
"""

from policy.evaluate import (
    Assessment,
    CustomerRollup,
    CutoffImpact,
    EndpointFuture,
    Finding,
    assess,
    customer_rollup,
    endpoint_future,
    evaluate,
)
from policy.mozilla import MozillaCheck, MozillaReport, mozilla_compliance
from policy.mozilla_data import CURRENT as MOZILLA_CURRENT
from policy.mozilla_data import GUIDELINES as MOZILLA_GUIDELINES
from policy.mozilla_data import MozillaConfig
from policy.profile import (
    DEFAULT_CUTOFF,
    Profile,
    default_profile,
    load_profile,
    profile_from_dict,
)
from policy.rules import RULES, RULES_VERSION, PortClass, Rule, Severity, port_class_of, rule

__all__ = [
    "DEFAULT_CUTOFF",
    "MOZILLA_CURRENT",
    "MOZILLA_GUIDELINES",
    "RULES",
    "RULES_VERSION",
    "Assessment",
    "CustomerRollup",
    "CutoffImpact",
    "EndpointFuture",
    "Finding",
    "MozillaCheck",
    "MozillaConfig",
    "MozillaReport",
    "PortClass",
    "Profile",
    "Rule",
    "Severity",
    "assess",
    "customer_rollup",
    "default_profile",
    "endpoint_future",
    "evaluate",
    "load_profile",
    "mozilla_compliance",
    "port_class_of",
    "profile_from_dict",
    "rule",
]
