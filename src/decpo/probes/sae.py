"""A sparse autoencoder of one activation site, trained on streamed activations (pure: tensors in, an SAE out).

The SAE is EleutherAI's sparsify ``SparseCoder`` (a TopK SAE: the k largest ReLU pre-activations of each
token are kept; `load_sparsify`); this module adds its training loop over batches of activation rows that
arrive one forward at a time (`train_sae`), as sparsify's own ``Trainer`` does on a Hub dataset: decoder
bias set to the first batch's mean, decoder rows kept at unit norm (their gradient's parallel part removed),
loss = FVU + ``auxk_alpha`` x the AuxK loss of the latents dead for ``dead_after_tokens`` tokens (Gao et al.
2024). The rows pass through a bounded shuffling buffer (`TokenBuffer`): at most ``buffer_tokens`` rows are
held at once, whatever the number of training tokens. Reading the activations and writing files is the
caller's (`decpo.probes.sae_runner`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from decpo.probes.sae_settings import SaeError, SaeSettings

logger = logging.getLogger(__name__)


def load_sparsify():
    """The ``sparsify`` package (the optional extra ``decpo[sae]``), its import-time prints sent to the log.

    Without a GPU, its Triton decoder is turned off (``SPARSIFY_DISABLE_TRITON``): the eager one runs on CPUs.
    """
    if not torch.cuda.is_available():
        os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            import sparsify  # lazy: an optional extra (pip install "decpo[sae]")
    except ImportError as e:
        raise SaeError(
            f"the SAE measures need EleutherAI's sparsify: pip install 'decpo[sae]' ({e})"
        ) from None
    if printed.getvalue().strip():
        logger.debug("sparsify: %s", printed.getvalue().strip())
    return sparsify


def new_sae(d_in: int, settings: SaeSettings, device: str | torch.device = "cpu"):
    """An untrained ``SparseCoder`` of ``d_in``-wide rows (its encoder initialised from ``settings.seed``)."""
    sparsify = load_sparsify()
    cfg = sparsify.SparseCoderConfig(expansion_factor=settings.expansion_factor, k=settings.k)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        return sparsify.SparseCoder(d_in, cfg, device=device, dtype=torch.float32)


def check_width(sae, width: int, where: str, source: str = "the SAE") -> None:
    """SaeError naming both widths when ``sae`` does not read ``width``-wide rows (``where``: the site)."""
    if sae.d_in != width:
        raise SaeError(
            f"{source} reads {sae.d_in}-wide activations but {where} is {width} wide: "
            "train one on this site or load one made for it"
        )


class TokenBuffer:
    """At most ``capacity`` rows; `take` returns ``n`` rows drawn at random among those held (a shuffle
    within the buffer: consecutive tokens of a text rarely share a batch)."""

    def __init__(self, capacity: int, seed: int = 0):
        self.capacity = capacity
        self.rows: torch.Tensor | None = None
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return 0 if self.rows is None else self.rows.size(0)

    def space(self) -> int:
        return self.capacity - len(self)

    def add(self, rows: torch.Tensor) -> None:
        if rows.size(0) > self.space():
            raise SaeError(f"buffer overflow: {rows.size(0)} rows into {self.space()} free")
        rows = rows.detach().float()
        self.rows = rows if self.rows is None else torch.cat([self.rows, rows.to(self.rows.device)])

    def take(self, n: int) -> torch.Tensor:
        assert self.rows is not None
        order = torch.randperm(len(self), generator=self.generator).to(self.rows.device)
        picked, self.rows = self.rows[order[:n]], self.rows[order[n:]]
        return picked


@dataclass
class TrainedSae:
    """A trained SAE with its training FVU per step (``curve``: ``(tokens seen, batch FVU)``)."""

    sae: object
    curve: list[tuple[int, float]] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0


def learning_rate(settings: SaeSettings, num_latents: int) -> float:
    """``settings.lr``, else sparsify's Adam rate for ``num_latents`` (2e-4 at 2**14 latents, as 1/sqrt),
    times 4: these trainings see 10**4-10**5 tokens, not sparsify's 10**8."""
    return settings.lr or 4 * 2e-4 / math.sqrt(num_latents / 2**14)


def train_sae(
    batches: Iterable[torch.Tensor],
    d_in: int,
    settings: SaeSettings | None = None,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "SAE training",
) -> TrainedSae:
    """Train a new SAE on the ``(n, d_in)`` rows of ``batches`` until ``settings.train_tokens`` rows have
    been trained on (or ``batches`` ends: fewer tokens, logged), through a `TokenBuffer` (``settings`` None:
    the defaults)."""
    settings = settings or SaeSettings()
    sae = new_sae(d_in, settings, device)
    trainer = _Steps(sae, settings)
    buffer = TokenBuffer(settings.buffer_tokens, settings.seed)
    bar = tqdm(total=settings.train_tokens, desc=desc, unit="tok", disable=not progress, leave=False)
    t0 = time.perf_counter()
    for rows in batches:
        check_width(sae, rows.size(-1), "the training activations")
        for start in range(0, rows.size(0), settings.batch_tokens):
            buffer.add(rows[start : start + settings.batch_tokens].to(device))
            # train once the buffer is full enough to shuffle (half of it), keeping room for the next rows
            while len(buffer) >= max(settings.buffer_tokens // 2, settings.batch_tokens) or (
                buffer.space() < settings.batch_tokens
            ):
                if trainer.step(buffer.take(settings.batch_tokens), bar):
                    break
            if trainer.done():
                break
        if trainer.done():
            break
    while len(buffer) and not trainer.done():  # the source ended: what the buffer still holds
        trainer.step(buffer.take(min(settings.batch_tokens, len(buffer))), bar)
    bar.close()
    if trainer.seen < settings.train_tokens:
        logger.warning(
            "SAE trained on %d tokens, fewer than the %d asked", trainer.seen, settings.train_tokens
        )
    if not trainer.seen:
        raise SaeError("no activation rows to train the SAE on")
    sae.set_decoder_norm_to_unit_norm()  # as the next step would
    sae.eval()
    return TrainedSae(sae, trainer.curve, trainer.seen, time.perf_counter() - t0)


class _Steps:
    """The optimizer steps of `train_sae` (sparsify's ``Trainer.fit`` for the ``fvu`` loss, one process)."""

    def __init__(self, sae, settings: SaeSettings):
        self.sae, self.settings = sae, settings
        self.opt = torch.optim.Adam(sae.parameters(), lr=learning_rate(settings, sae.num_latents))
        self.since_fired = torch.zeros(sae.num_latents, dtype=torch.long, device=sae.device)
        self.seen = 0
        self.curve: list[tuple[int, float]] = []

    def done(self) -> bool:
        return self.seen >= self.settings.train_tokens

    def step(self, x: torch.Tensor, bar) -> bool:
        """One optimizer step on the rows ``x``; whether training is done."""
        sae = self.sae
        if not self.seen:  # centred pre-activations at the start (sparsify's initialisation)
            sae.b_dec.data = x.mean(0).to(sae.dtype)
        sae.set_decoder_norm_to_unit_norm()
        dead = self.since_fired > self.settings.dead_after_tokens if self.settings.auxk_alpha > 0 else None
        out = sae(x, dead_mask=dead)
        loss = out.fvu + self.settings.auxk_alpha * out.auxk_loss
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            fired = torch.zeros_like(self.since_fired, dtype=torch.bool)
            fired[out.latent_indices[out.latent_acts > 0]] = True
            self.since_fired += x.size(0)
            self.since_fired[fired] = 0
        self.seen += x.size(0)
        self.curve.append((self.seen, float(out.fvu.detach())))
        bar.update(x.size(0))
        bar.set_postfix(fvu=f"{self.curve[-1][1]:.3f}", refresh=False)
        return self.done()
