"""The activation probe pass: texts -> one forward per batch -> streaming statistics per (site, layer).

Every requested (site, layer) is hooked at once; each hook keeps only one ``(B, D)`` row per text, selected
as the training penalty selects its rows (`decpo.functional.token_spans` and `select_spans`): by default the
last real token of each text; on `AnsweredText` items any of the penalty's selections (``--token``). A batch
never holds more than ``B x D`` floats per (site, layer) beyond the forward itself, and the statistics are
streamed (`ActivationStats`).
The forward runs the model's backbone only (no LM head: the probes need no logits; an FSDP-sharded model
runs whole, see `is_fsdp_sharded`) in eval mode under ``torch.no_grad()``; position ids are taken from the
attention mask, so left and right padding give the same activations (models with absolute positions,
GPT-2, included).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from decpo.functional import select_spans, token_spans
from decpo.models.hooks import (
    SITES,
    capture_activations,
    num_layers,
    parse_layers,
    resolve_layers,
    unwrap_model,
)
from decpo.names import MLP_UP_PROJ
from decpo.probes.stats import ACTIVATION_PROBES, ActivationStats
from decpo.probes.tokens import AnsweredText, answered_batch, check_token, usable

logger = logging.getLogger(__name__)

CSV_COLUMNS = ("model", "layer", "site", "probe", "value", "n_texts", "depth")


def backbone(model: nn.Module) -> nn.Module:
    """The transformer stack without the LM head (``LlamaModel`` in ``LlamaForCausalLM``; peft unwrapped)."""
    model = unwrap_model(model)
    base = getattr(model, "base_model", model)
    return base if isinstance(base, nn.Module) else model


@contextlib.contextmanager
def capture_selected_tokens(
    model: nn.Module, pairs: Sequence[tuple[str, int]], batch: dict
) -> Iterator[dict[str, dict[int, torch.Tensor]]]:
    """Hook each ``(site, layer)`` of ``pairs``; each forward stores its ``(B, D)`` selected rows, as
    ``{site: {layer: rows}}`` (`decpo.models.capture_activations` with a token-selecting transform).

    ``batch["spans"]`` (`decpo.functional.token_spans`, one per text) is read at forward time, so the caller
    updates ``batch`` before each forward. Selecting inside the hook is safe here (no gradients, no
    checkpointing) and keeps memory at ``B x D``. The hooks are removed on exit, even when the body raises.
    """

    def selected(hidden: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, D)
        return select_spans(hidden, batch["spans"]).float()

    by_site: dict[str, list[int]] = {}
    for site, layer in pairs:
        by_site.setdefault(site, []).append(layer)
    with contextlib.ExitStack() as stack:
        yield {
            site: stack.enter_context(
                capture_activations(
                    model, layers, site, detach=True, first_call_only=False, transform=selected
                )
            )
            for site, layers in by_site.items()
        }


@dataclass
class ProbePass:
    """Statistics of one model over ``n_texts`` texts: ``stats[(site, layer)]``; with ``keep_activations``,
    the selected rows themselves too, ``activations[(site, layer)]`` of shape ``(n_texts, D)`` on the CPU, one
    per text of ``read`` (the indices of the given texts that were read)."""

    stats: dict[tuple[str, int], ActivationStats]
    num_layers: int
    n_texts: int
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    activations: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict)
    read: list[int] | None = None  # the indices of the given texts read (pairs too long are skipped)

    def values(self, probes: Sequence[str] = ACTIVATION_PROBES) -> dict[tuple[str, int, str], float]:
        """``{(site, layer, probe): value}``."""
        out = {}
        for (site, layer), stats in self.stats.items():
            result = stats.result()
            for probe in probes:
                out[(site, layer, probe)] = result[probe]
        return out

    def rows(
        self,
        model_name: str,
        probes: Sequence[str] = ACTIVATION_PROBES,
        pairs: Sequence[tuple[str, int]] | None = None,
    ) -> list[dict]:
        """Tidy rows ``{model, layer, site, probe, value, n_texts, depth}`` (depth = layer / (L - 1)).

        ``pairs`` restricts them to those ``(site, layer)`` pairs (default: all measured).
        """
        out = []
        for (site, layer), stats in sorted(self.stats.items()):
            if pairs is not None and (site, layer) not in pairs:
                continue
            result, counts = stats.result(), stats.counts()
            for probe in probes:
                out.append(
                    {
                        "model": model_name,
                        "layer": layer,
                        "site": site,
                        "probe": probe,
                        "value": result[probe],
                        "n_texts": counts[probe],
                        "depth": relative_depth(layer, self.num_layers),
                    }
                )
        return out

    def memory_bytes(self) -> int:
        return sum(s.memory_bytes() for s in self.stats.values())


def relative_depth(layer: int, n_layers: int) -> float:
    return layer / (n_layers - 1) if n_layers > 1 else 0.0


def is_fsdp_sharded(model: nn.Module) -> bool:
    """Whether FSDP (the ``FullyShardedDataParallel`` wrapper or FSDP2's ``fully_shard``) shards ``model``.

    Only the sharded root's forward gathers the weights that are not in a sharded block (embeddings, final
    norm), so such a model is run whole, not through its backbone.
    """
    try:
        from torch.distributed import fsdp
    except ImportError:  # torch built without distributed
        return False
    kinds = tuple(
        k for k in (getattr(fsdp, "FullyShardedDataParallel", None), getattr(fsdp, "FSDPModule", None)) if k
    )
    return bool(kinds) and any(isinstance(m, kinds) for m in model.modules())


def _accepts(module: nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


def _check_inputs(tokenizer, texts: Sequence, sites: Sequence[str], extra_pairs, token: str) -> None:
    """ValueError for no texts, a blank text, an unknown site or token selection, plain texts where the
    selection needs answers, or a tokenizer without a pad token."""
    if not texts:
        raise ValueError("no texts to probe")
    check_token(token, texts)
    if len({isinstance(t, AnsweredText) for t in texts}) > 1:
        raise ValueError("texts mix plain texts and pairs (AnsweredText); give one kind")
    empty = [
        i
        for i, t in enumerate(texts)
        if not (isinstance(t, AnsweredText) or isinstance(t, str) and t.strip())
    ]
    if empty:
        raise ValueError(f"{len(empty)} empty or non-string text(s), e.g. at index {empty[0]}")
    for site in {*sites, *(site for site, _ in extra_pairs)}:
        if site not in SITES:
            raise ValueError(f"unknown activation site {site!r}; available: {SITES}")
    if tokenizer.pad_token is None:
        raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token = tokenizer.eos_token")


def _measured_pairs(model: nn.Module, sites, layers, extra_pairs) -> list[tuple[str, int]]:
    """Every requested ``(site, layer)``, then the extra pairs not among them (their layers resolved)."""
    layer_list = parse_layers(layers, model)
    pairs = [(site, layer) for site in sites for layer in layer_list]
    extra = [(site, resolve_layers(model, [layer])[0]) for site, layer in extra_pairs]
    return pairs + [pair for pair in extra if pair not in pairs]


def _encode(tokenizer, chunk: Sequence, max_length: int) -> dict[str, torch.Tensor]:
    """A batch of plain texts (as the tokenizer pads and truncates them) or of `AnsweredText` items (as TRL
    collates a pair: right padding, ``completion_mask``)."""
    if isinstance(chunk[0], AnsweredText):
        return answered_batch(tokenizer, chunk, max_length)
    return dict(
        tokenizer(list(chunk), return_tensors="pt", padding=True, truncation=True, max_length=max_length)
    )


def _accumulate(
    model: nn.Module,
    tokenizer,
    texts: Sequence,
    pairs: list[tuple[str, int]],
    *,
    token: str,
    batch_size: int,
    max_length: int,
    bar,
    stats_kwargs: dict,
    kept: dict[tuple[str, int], list[torch.Tensor]],
) -> dict[tuple[str, int], ActivationStats]:
    """One forward per batch of ``texts``, each captured selected row streamed into its statistics (and,
    for the pairs that are keys of ``kept``, appended to ``kept[(site, layer)]`` on the CPU)."""
    inner = backbone(model)
    # the backbone alone (no LM head: the probes need no logits), but a sharded model through its root
    net = model if is_fsdp_sharded(model) else inner
    device = next(model.parameters()).device
    # the keyword arguments the transformers model takes (wrappers pass them on through **kwargs)
    extra_kwargs = {k: v for k, v in (("use_cache", False),) if _accepts(inner, k)}
    with_positions = _accepts(inner, "position_ids")
    stats: dict[tuple[str, int], ActivationStats] = {}
    batch: dict = {}
    with torch.no_grad(), capture_selected_tokens(model, pairs, batch) as captures:
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start : start + batch_size])
            enc = _encode(tokenizer, chunk, max_length)
            # the penalty's own row selection (`ActivationRegularizerMixin.compute_loss`)
            batch["spans"] = token_spans(enc["attention_mask"], token, enc.get("completion_mask"))
            batch["attention_mask"] = enc["attention_mask"].to(device)
            kwargs = {"input_ids": enc["input_ids"].to(device), "attention_mask": batch["attention_mask"]}
            if with_positions:
                kwargs["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            for captured in captures.values():
                captured.clear()
            net(**kwargs, **extra_kwargs)
            for site, captured in captures.items():
                for layer, z in captured.items():  # z: (B, D)
                    if (site, layer) not in stats:
                        stats[(site, layer)] = ActivationStats(z.size(1), **stats_kwargs)
                    stats[(site, layer)].update(z)
                    if (site, layer) in kept:
                        kept[(site, layer)].append(z.cpu())
            bar.update(len(chunk))
    return stats


def _within_length(tokenizer, texts: Sequence, max_length: int) -> list[int]:
    """The indices of the texts read: every plain text; the `AnsweredText` items whose prompt fits
    ``max_length`` tokens (at least 2 left)."""
    if not texts or not isinstance(texts[0], AnsweredText):
        return list(range(len(texts)))
    kept = {id(t) for t in usable(tokenizer, texts, max_length)}
    if len(kept) < 2:
        raise ValueError(f"{len(kept)} pair(s) left within max_length={max_length} tokens; the probes need 2")
    return [i for i, t in enumerate(texts) if id(t) in kept]


def probe_pass(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str] | Sequence[AnsweredText],
    *,
    token: str = "last",
    sites: Sequence[str] = (MLP_UP_PROJ,),
    layers: str | Sequence[int] | None = None,
    batch_size: int = 16,
    max_length: int = 256,
    padding_side: str = "left",
    progress: bool = True,
    desc: str = "probe",
    extra_pairs: Sequence[tuple[str, int]] = (),
    keep_activations: bool | Sequence[tuple[str, int]] = False,
    **stats_kwargs,
) -> ProbePass:
    """Run ``texts`` through ``model`` once and accumulate the activation probes of every (site, layer).

    Args:
        model: a causal LM (or its peft wrapper); its train/eval mode is restored afterwards.
        tokenizer: its tokenizer (needs a pad token); texts longer than ``max_length`` tokens keep their end,
            `AnsweredText` items their start (as TRL's collator), and those whose prompt fills ``max_length``
            tokens are skipped with a warning.
        texts: the inputs: plain texts, or `AnsweredText` items (prompt + answer + EOS, tokenized as TRL does).
        token: the token(s) the probes read, as the penalty selects them (`decpo.functional.TOKEN_SELECTIONS`):
            ``"last"``, the last real token of each text; ``"prompt_last"`` and ``"completion_mean"`` need
            `AnsweredText` items.
        sites: activation sites, see `decpo.models.hooks.SITES`.
        layers: ``None``/``"all"``, ``"0,5,-1"`` or a list of block indices.
        padding_side: ``"left"`` or ``"right"`` for plain texts; the result does not depend on it.
        extra_pairs: more ``(site, layer)`` pairs to measure in the same forward (e.g. the vocabulary view's).
        keep_activations: also keep every text's selected row of each measured pair (True) or of these
            resolved ``(site, layer)`` pairs (``ProbePass.activations``; ``4 x n_texts x D`` bytes per pair:
            what k-sparse probing needs, unlike the streamed probes).
        stats_kwargs: passed to `ActivationStats` (``eps_zero``, ``gram_dim_limit``, ``max_gram_rows``, ...).
    """
    _check_inputs(tokenizer, texts, sites, extra_pairs, token)
    read = _within_length(tokenizer, texts, max_length)
    texts = [texts[i] for i in read]
    pairs = _measured_pairs(model, sites, layers, extra_pairs)
    was_training = model.training
    saved_sides = (tokenizer.padding_side, tokenizer.truncation_side)
    t0 = time.perf_counter()
    keep = pairs if keep_activations is True else list(keep_activations or ())
    kept: dict[tuple[str, int], list[torch.Tensor]] = {pair: [] for pair in keep if pair in pairs}
    try:
        model.eval()
        tokenizer.padding_side, tokenizer.truncation_side = padding_side, "left"
        bar = tqdm(total=len(texts), desc=desc, unit="text", disable=not progress, leave=False)
        stats = _accumulate(
            model,
            tokenizer,
            texts,
            pairs,
            token=token,
            batch_size=batch_size,
            max_length=max_length,
            bar=bar,
            stats_kwargs=stats_kwargs,
            kept=kept,
        )
        bar.close()
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = saved_sides
        model.train(was_training)
    activations = {pair: torch.cat(rows) for pair, rows in kept.items()}  # (n_texts, D) each
    result = ProbePass(
        stats, num_layers(model), len(texts), time.perf_counter() - t0, activations=activations, read=read
    )
    logger.debug(
        "probe pass: %d texts, %d (site, layer) pairs, %.1f s, %.1f MiB of statistics",
        len(texts),
        len(stats),
        result.seconds,
        result.memory_bytes() / 2**20,
    )
    return result


def stats_memory_bound(dim: int, n_pairs: int, gram_dim_limit: int = 256, max_gram_rows: int = 512) -> int:
    """Upper bound in bytes of the statistics of ``n_pairs`` (site, layer) pairs of width ``dim``."""
    big = 8 * dim * dim if dim <= gram_dim_limit else 2 * dim * max_gram_rows
    return n_pairs * (big + 5 * 8 * dim)
