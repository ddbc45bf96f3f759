"""Monosemanticity probes: per-layer proxies on activations (a streaming pass over texts) and on weights."""

from decpo.probes.activation import CSV_COLUMNS, ProbePass, probe_pass
from decpo.probes.callback import ProbeCallback
from decpo.probes.stats import ACTIVATION_PROBES, ActivationStats, activation_probes
from decpo.probes.vocab import vocab_view
from decpo.probes.weights import NoMLPBiasError, weight_proxy, weight_proxy_change

__all__ = [
    "ACTIVATION_PROBES",
    "CSV_COLUMNS",
    "ActivationStats",
    "NoMLPBiasError",
    "ProbeCallback",
    "ProbePass",
    "activation_probes",
    "probe_pass",
    "vocab_view",
    "weight_proxy",
    "weight_proxy_change",
]
