"""Activation sites of transformer blocks, and hooks that capture them.

Site names are the same for every architecture (TransformerLens style); one table maps them to each
family's module names:

- ``mlp.up_proj``: output of the MLP's up projection (before the gate multiply), the paper's site;
- ``mlp.hidden``: input of the down projection, ``act(gate) * up`` in gated MLPs;
- ``mlp.out``: output of the MLP;
- ``resid_post``: the residual stream after the block.

Hooks only *store* module outputs; anything computed from them happens after the forward. Computing
inside a hook would break non-reentrant gradient checkpointing, which checks that a recomputed
forward saves the same tensors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from decpo.models.errors import ModelError
from decpo.models.specs import block_indices
from decpo.names import MLP_UP_PROJ, SITES, layer_items

# per family: (up projection, down projection) module paths inside a block's MLP
_MLP_NAMES = (
    ("mlp.up_proj", "mlp.down_proj"),  # Llama, Mistral, Qwen, Gemma, SmolLM
    ("mlp.c_fc", "mlp.c_proj"),  # GPT-2
    ("mlp.dense_h_to_4h", "mlp.dense_4h_to_h"),  # GPT-NeoX, Pythia
    ("mlp.c_fc", "mlp.c_proj"),  # GPT-Neo (same names as GPT-2)
    ("mlp.fc1", "mlp.fc2"),  # OPT-like, Phi
)
_LAYER_LISTS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers", "layers", "h")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain transformers model inside DDP / DeepSpeed / FSDP / torch.compile wrappers (accelerate's
    ``extract_model_from_parallel``) and a peft wrapper (its adapters stay active)."""
    # lazy: accelerate's utils load slowly, and the probes on a plain model never need them
    from accelerate.utils import extract_model_from_parallel

    model = extract_model_from_parallel(model, keep_torch_compile=False)
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of transformer blocks."""
    base = unwrap_model(model)
    for path in _LAYER_LISTS:
        module = base
        try:
            for part in path.split("."):
                module = getattr(module, part)
        except AttributeError:
            continue
        if isinstance(module, nn.ModuleList):
            return module
    raise ModelError(
        f"{type(base).__name__}: cannot find the list of transformer blocks (looked for {_LAYER_LISTS})"
    )


def num_layers(model: nn.Module) -> int:
    return len(decoder_layers(model))


def resolve_layers(model: nn.Module, layers: Sequence[int]) -> list[int]:
    """Absolute block indices; negative ones count from the end. Out of range -> error with the count."""
    return block_indices(num_layers(model), layers)


def parse_layers(spec: str | Sequence[int] | None, model: nn.Module | None = None) -> list[int]:
    """Blocks from ``"3,15,27"``, ``"0-29"``, ``"0-29:4"`` (every 4th), ``"-1"`` or a list of integers.

    With ``model``: ``None`` / ``"all"`` is every block, and the blocks are resolved against it (negative ones
    from the end, out of range -> ModelError), sorted and each once. Without: the integers as written.
    """
    if spec is None or spec == "all":
        if model is None:
            raise ValueError("'all' layers needs the model")
        return list(range(num_layers(model)))
    layers = layer_items(spec) if isinstance(spec, str) else list(spec)
    if not layers:
        raise ValueError(f"no layers in {spec!r}")
    return sorted(set(resolve_layers(model, layers))) if model is not None else layers


def _get(module: nn.Module, path: str) -> nn.Module | None:
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def site_module(model: nn.Module, layer: int, site: str) -> tuple[nn.Module, str]:
    """The module to hook for ``site`` of block ``layer`` and whether to read its ``"output"`` or ``"input"``."""
    if site not in SITES:
        raise ModelError(f"unknown activation site {site!r}; available: {SITES}")
    block = decoder_layers(model)[resolve_layers(model, [layer])[0]]
    if site == "resid_post":
        return block, "output"
    if site == "mlp.out":
        mlp = _get(block, "mlp")
        if mlp is not None:
            return mlp, "output"
    for up, down in _MLP_NAMES:
        up_module, down_module = _get(block, up), _get(block, down)
        if up_module is not None and down_module is not None:
            return (up_module, "output") if site == MLP_UP_PROJ else (down_module, "input")
    children = sorted(name for name, _ in block.named_modules() if name)
    raise ModelError(f"block {layer} has no module for site {site!r}; its modules are: {children}")


def _first_tensor(value) -> torch.Tensor:
    return value[0] if isinstance(value, tuple | list) else value


@contextlib.contextmanager
def capture_activations(
    model: nn.Module,
    layers: Sequence[int],
    site: str = MLP_UP_PROJ,
    *,
    detach: bool = False,
    first_call_only: bool = True,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[dict[int, torch.Tensor]]:
    """Capture ``(N, T, D)`` activations of ``site`` at ``layers`` during the forwards run in the body.

    Yields a dict ``{layer: tensor}`` filled as the forward runs. With ``first_call_only`` only the first
    forward through each module is kept (a reference forward through the same modules, e.g. LoRA with
    the adapter disabled, or a recomputation, does not overwrite it). ``detach=True`` for probes; the
    training penalty keeps the graph. ``transform`` reduces the tensor before it is stored (probes keep
    ``(N, D)`` rows instead of ``(N, T, D)``). With gradients under non-reentrant checkpointing, a transform
    must save no tensor for backward (slicing and stacking, as `decpo.functional.select_spans`): the
    recomputation runs without the hook. The hooks are removed on exit, even when the body raises.
    """
    captured: dict[int, torch.Tensor] = {}
    handles = []
    try:
        for layer in resolve_layers(model, layers):
            module, where = site_module(model, layer, site)

            def store(value, layer=layer):
                if first_call_only and layer in captured:
                    return
                tensor = _first_tensor(value)
                tensor = tensor.detach() if detach else tensor
                captured[layer] = transform(tensor) if transform is not None else tensor

            if where == "output":
                handles.append(module.register_forward_hook(lambda _m, _i, out, f=store: f(out)))
            else:
                handles.append(module.register_forward_pre_hook(lambda _m, inp, f=store: f(inp)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()
