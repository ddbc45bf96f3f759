"""Vocabulary view of MLP dimensions (Yan et al. 2024, Table 1).

For one block: the ``top_dims`` dimensions of the MLP hidden layer (input of the down projection) with
the largest mean activation over the texts; each dimension's output direction (its column of the down
projection, ``d_model`` values) is projected through the unembedding (optionally after the final norm)
and its ``top_tokens`` highest-scoring tokens are decoded.
"""

from __future__ import annotations

import torch
from torch import nn

from decpo.models.errors import ModelError
from decpo.models.hooks import site_module
from decpo.probes.activation import backbone

_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "final_layernorm")


def down_projection_directions(model: nn.Module, layer: int) -> torch.Tensor:
    """``(d_mlp, d_model)``: row ``i`` is the output direction of MLP hidden dim ``i`` of block ``layer``."""
    module, _ = site_module(model, layer, "mlp.hidden")  # the down projection (its input is the hidden layer)
    weight = module.weight.detach()
    # nn.Linear stores (d_model, d_mlp); GPT-2's Conv1D stores (d_mlp, d_model)
    return weight if type(module).__name__ == "Conv1D" else weight.T


def final_norm(model: nn.Module) -> nn.Module | None:
    base = backbone(model)
    for name in _FINAL_NORMS:
        module = getattr(base, name, None)
        if isinstance(module, nn.Module):
            return module
    return None


def vocab_view(
    model: nn.Module,
    tokenizer,
    layer: int,
    mean_hidden: torch.Tensor,
    *,
    top_dims: int = 10,
    top_tokens: int = 10,
    apply_final_norm: bool = False,
) -> list[dict]:
    """Top tokens of the ``top_dims`` most active MLP dimensions of ``layer``.

    Args:
        mean_hidden: ``(d_mlp,)`` mean activation of site ``mlp.hidden`` of ``layer`` over the texts.
        apply_final_norm: pass each direction through the model's final norm before the unembedding.

    Returns:
        ``[{"dim", "mean_activation", "tokens": [str, ...], "logits": [float, ...]}, ...]``, most active
        first.
    """
    directions = down_projection_directions(model, layer)  # (d_mlp, d_model)
    if mean_hidden.numel() != directions.size(0):
        raise ModelError(
            f"mean activation has {mean_hidden.numel()} dims but block {layer}'s MLP has {directions.size(0)}"
        )
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        raise ModelError(f"{type(model).__name__} has no output embeddings (LM head) to project through")
    k = min(top_dims, mean_hidden.numel())
    values, dims = mean_hidden.float().topk(k)
    param = next(model.parameters())
    with torch.no_grad():
        vectors = directions[dims.to(directions.device)].to(param.dtype)  # (k, d_model)
        norm = final_norm(model) if apply_final_norm else None
        if apply_final_norm and norm is None:
            raise ModelError(f"{type(model).__name__}: no final norm found (looked for {_FINAL_NORMS})")
        if norm is not None:
            vectors = norm(vectors.unsqueeze(0)).squeeze(0)
        logits = head(vectors).float()  # (k, vocab)
    top = logits.topk(min(top_tokens, logits.size(1)), dim=1)
    out = []
    for row, (dim, value) in enumerate(zip(dims.tolist(), values.tolist(), strict=True)):
        ids = top.indices[row].tolist()
        out.append(
            {
                "dim": dim,
                "mean_activation": value,
                "tokens": [tokenizer.decode([i]) for i in ids],
                "logits": [round(v, 4) for v in top.values[row].tolist()],
            }
        )
    return out
