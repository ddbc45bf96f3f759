"""Monosemanticity probes: per-layer proxies on activations (a streaming pass over texts) and on weights.

The names below are imported on first use (`decpo.lazy`): the probes import torch, which `decpo probe`'s
flags (`decpo.probes.options`, `decpo.probes.concepts`) do not need.
"""

from decpo.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "decpo.probes.activation": ("CSV_COLUMNS", "ProbePass", "probe_pass"),
        "decpo.probes.callback": ("ProbeCallback",),
        "decpo.probes.options": ("ACTIVATION_PROBES",),
        "decpo.probes.stats": ("ActivationStats", "activation_probes"),
        "decpo.probes.vocab": ("vocab_view",),
        "decpo.probes.weights": ("NoMLPBiasError", "weight_proxy", "weight_proxy_change"),
    },
)
