"""Weight-based monosemanticity proxy of Gurnee et al. 2023, as used by Yan et al. 2024 (Fig. 2-3).

Only for MLPs whose input projection has a bias (GPT-2, GPT-Neo, Pythia/GPT-NeoX). For neuron ``i`` of a
block with input weights ``w_i`` (the ``d_model`` weights feeding neuron ``i``) and bias ``b_i``:

    proxy(layer) = median_i(||w_i||_2 * b_i) / max_layers |median_i(||w_i||_2 * b_i)|

Layouts: GPT-2's ``Conv1D`` ``c_fc.weight`` is ``(d_model, d_mlp)``, neuron ``i`` is column ``W[:, i]``;
an ``nn.Linear`` (GPT-NeoX ``dense_h_to_4h``, GPT-Neo ``c_fc``) has weight ``(d_mlp, d_model)``, neuron
``i`` is row ``W[i]``. Llama-family MLPs have no bias: `NoMLPBiasError`.
"""

from __future__ import annotations

import torch
from torch import nn

from decpo.models.errors import ModelError
from decpo.models.hooks import decoder_layers, site_module
from decpo.names import MLP_UP_PROJ


class NoMLPBiasError(ModelError):
    """The model's MLP input projection has no bias, so the weight-based proxy is undefined for it."""


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"  # transformers.pytorch_utils.Conv1D (GPT-2)


def mlp_input_weights(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per block, ``(W_in (d_mlp, d_model), b_in (d_mlp,))`` in float64 on the CPU, one row per neuron."""
    out = []
    for layer in range(len(decoder_layers(model))):
        module, _ = site_module(model, layer, MLP_UP_PROJ)
        bias = getattr(module, "bias", None)
        if bias is None:
            raise NoMLPBiasError(
                f"{type(module).__name__} of block {layer} has no bias: the weight-based proxy (Gurnee et "
                "al. 2023) needs MLPs with an input bias (GPT-2, GPT-Neo, Pythia); the activation probes "
                "still apply"
            )
        weight = module.weight.detach().to("cpu", torch.float64)
        weight = weight.T if _is_conv1d(module) else weight  # -> (d_mlp, d_model)
        out.append((weight, bias.detach().to("cpu", torch.float64)))
    return out


def neuron_scores(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``(d_mlp, d_model)``, ``(d_mlp,)`` -> ``(d_mlp,)`` the per-neuron ``||w_i||_2 * b_i``."""
    return weight.norm(dim=1) * bias


def median(values: torch.Tensor) -> float:
    """The median with the even-count convention of numpy (mean of the two middle values)."""
    return torch.quantile(values.to(torch.float64), 0.5).item()


def weight_proxy(model: nn.Module) -> list[float]:
    """Per block, ``median_i(||w_i|| b_i)`` over the largest absolute per-block median (see module doc)."""
    medians = [median(neuron_scores(w, b)) for w, b in mlp_input_weights(model)]
    scale = max(abs(m) for m in medians)
    return [m / scale if scale > 0 else 0.0 for m in medians]


def weight_proxy_change(before: nn.Module, after: nn.Module, top_k: int = 100) -> list[float]:
    """Per block, relative change of the proxy on the ``top_k`` neurons whose input weights changed most.

    Neurons are ranked by ``||w_i(after) - w_i(before)||_2``; the value is ``(median_i s_after - median_i
    s_before) / |median_i s_before|`` over those neurons, with ``s = ||w_i|| b_i`` (Yan et al. 2024, Fig. 3).
    """
    return weight_change(mlp_input_weights(before), mlp_input_weights(after), top_k)


def weight_change(
    pairs_before: list[tuple[torch.Tensor, torch.Tensor]],
    pairs_after: list[tuple[torch.Tensor, torch.Tensor]],
    top_k: int = 100,
) -> list[float]:
    """`weight_proxy_change` on weights already read with `mlp_input_weights` (keeps one model in memory)."""
    if len(pairs_before) != len(pairs_after):
        raise ModelError(f"the two models have {len(pairs_before)} and {len(pairs_after)} blocks")
    out = []
    for (w0, b0), (w1, b1) in zip(pairs_before, pairs_after, strict=True):
        if w0.shape != w1.shape:
            raise ModelError(
                f"MLP shapes differ between the two models: {tuple(w0.shape)} vs {tuple(w1.shape)}"
            )
        k = min(top_k, w0.size(0))
        top = (w1 - w0).norm(dim=1).topk(k).indices
        m0, m1 = median(neuron_scores(w0, b0)[top]), median(neuron_scores(w1, b1)[top])
        out.append((m1 - m0) / abs(m0) if m0 != 0 else float("nan"))
    return out
