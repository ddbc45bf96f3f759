"""The SAE measures of several models (`SaeRun`): the base model's activations train an SAE (or one is loaded
from a local folder in sparsify's format), then each model's activations on held-out texts are measured
under it (`decpo.probes.sae_measures`), in rows of probes.csv's columns (probe ``sae/<measure>``).

Activations are read one batch of texts at a time (`token_rows`): every real token of each text but its first
(whose activations are outliers in most models, as SAE trainings usually drop them), at one ``(site,
layer)``, the forward stopped there. Only the training's shuffling buffer and the held-out tokens' top-k
codes (for the shift test) are held.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes

from decpo.io import atomic_write_bytes, atomic_write_json
from decpo.models import load_model, load_tokenizer
from decpo.models.hooks import num_layers, resolve_layers, site_module
from decpo.names import MLP_UP_PROJ
from decpo.probes.activation import backbone, relative_depth
from decpo.probes.sae import SaeError, SaeSettings, TrainedSae, check_width, load_sparsify, train_sae
from decpo.probes.sae_measures import DENSE_THRESHOLD, SHIFT_Q, SaeStats, latent_shift

logger = logging.getLogger(__name__)

SAE_FOLDER = "sae"  # the trained SAE in the output folder: cfg.json + sae.safetensors (sparsify's format)
PREFIX = "sae/"


class _Reached(Exception):
    """Raised by the hook once the site's activations are captured: the rest of the forward is not needed."""


@contextlib.contextmanager
def _stop_at(model, site: str, layer: int, store: list):
    module, where = site_module(model, layer, site)

    def keep(value):
        store.append(value[0] if isinstance(value, tuple) else value)
        raise _Reached

    handle = (
        module.register_forward_hook(lambda _m, _i, out: keep(out))
        if where == "output"
        else module.register_forward_pre_hook(lambda _m, inp: keep(inp))
    )
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def token_rows(
    model,
    tokenizer,
    texts: Sequence[str],
    site: str,
    layer: int,
    *,
    batch_size: int = 16,
    max_length: int = 256,
) -> Iterator[torch.Tensor]:
    """``(n_tokens, width)`` activation rows of ``(site, layer)``, one batch of ``texts`` at a time: every
    real token but each text's first (texts cut to their first ``max_length`` tokens)."""
    was_training, saved = model.training, (tokenizer.padding_side, tokenizer.truncation_side)
    net, device = backbone(model), next(model.parameters()).device
    store: list[torch.Tensor] = []
    try:
        model.eval()
        tokenizer.padding_side, tokenizer.truncation_side = "right", "right"
        with _stop_at(model, site, layer, store):
            for start in range(0, len(texts), batch_size):
                enc = tokenizer(
                    list(texts[start : start + batch_size]),
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                )
                mask = enc["attention_mask"].to(device)
                store.clear()
                with contextlib.suppress(_Reached):
                    net(input_ids=enc["input_ids"].to(device), attention_mask=mask, use_cache=False)
                if not store:
                    raise SaeError(f"the forward never reached {site} of block {layer}")
                keep = mask.bool() & (mask.cumsum(-1) > 1)
                yield store[0][keep].float()
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = saved
        model.train(was_training)


def _cycled(model, tokenizer, texts, site, layer, batch_size, max_length) -> Iterator[torch.Tensor]:
    """`token_rows` over ``texts`` again and again (the trainer stops when it has its tokens)."""
    for epoch in itertools.count():
        n = 0
        for rows in token_rows(
            model, tokenizer, texts, site, layer, batch_size=batch_size, max_length=max_length
        ):
            n += rows.size(0)
            yield rows
        if not n:
            return
        logger.info("SAE training: pass %d over %d texts done (%d tokens a pass)", epoch + 1, len(texts), n)


def load_sae(path: str | Path, device: str | torch.device = "cpu"):
    """A ``SparseCoder`` from a local folder of sparsify's format (``cfg.json`` and ``sae.safetensors``)."""
    path = Path(path)
    missing = [f for f in ("cfg.json", "sae.safetensors") if not (path / f).is_file()]
    if missing:
        raise SaeError(f"{path} is not an SAE folder of sparsify's format: no {' or '.join(missing)}")
    return load_sparsify().SparseCoder.load_from_disk(path, device=device).eval()


def save_sae(sae, path: Path) -> None:
    """``sae`` in sparsify's format (``SparseCoder.save_to_disk``'s two files), each written atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in sae.state_dict().items()}
    atomic_write_bytes(path / "sae.safetensors", safetensors_bytes(tensors))
    atomic_write_json(path / "cfg.json", {**sae.cfg.to_dict(), "d_in": sae.d_in})


@dataclass
class SaeRun:
    """The SAE measures over several models, the first being the base (`measure`, one model at a time).

    ``layer``: a block (negative from the end), None: the middle block. ``sae_path``: load this SAE instead
    of training one on the first model's activations of ``train_texts``.
    """

    train_texts: Sequence[str]
    eval_texts: Sequence[str]
    site: str = MLP_UP_PROJ
    layer: int | None = None
    settings: SaeSettings = field(default_factory=SaeSettings)
    sae_path: str | None = None
    batch_size: int = 16
    max_length: int = 256
    progress: bool = True
    sae: object = None
    trained: TrainedSae | None = None
    base_codes: object = None
    info: dict = field(default_factory=dict)

    @classmethod
    def from_options(cls, opts, train_texts, eval_texts, regularized: Sequence[int] = ()) -> SaeRun:
        """From `decpo.probes.options.ProbeOptions`' ``sae_*`` fields; the block: ``opts.sae_layer``, else the
        first ``regularized`` block, else the middle one."""
        layer = opts.sae_layer if opts.sae_layer is not None else (regularized[0] if regularized else None)
        return cls(
            list(train_texts),
            list(eval_texts),
            site=opts.sae_site,
            layer=layer,
            settings=opts.sae_settings(),
            sae_path=opts.sae_path,
            batch_size=opts.batch_size,
            max_length=opts.max_length,
            progress=opts.progress,
        )

    def resolved_layer(self, model) -> int:
        layer = num_layers(model) // 2 if self.layer is None else self.layer
        return resolve_layers(model, [layer])[0]

    def measure(self, name: str, model, tokenizer) -> list[dict]:
        """Rows ``sae/<measure>`` of ``model`` (the first call trains or loads the SAE on it)."""
        layer = self.resolved_layer(model)
        where = f"{self.site} of block {layer}"
        if self.sae is None:
            self._fit_or_load(model, tokenizer, layer, where)
        stats = SaeStats(self.sae)
        for rows in token_rows(
            model,
            tokenizer,
            self.eval_texts,
            self.site,
            layer,
            batch_size=self.batch_size,
            max_length=self.max_length,
        ):
            check_width(self.sae, rows.size(-1), f"{where} of {name}", self._source())
            stats.update(rows)
        values = stats.result()
        codes = stats.codes()
        if self.base_codes is None:
            self.base_codes = codes
        else:
            values |= latent_shift(self.base_codes, codes).values()
        depth = relative_depth(layer, num_layers(model))
        return [
            {"model": name, "layer": layer, "site": self.site, "probe": PREFIX + k, "value": v}
            | {"n_texts": len(self.eval_texts), "depth": depth}
            for k, v in values.items()
        ]

    def _source(self) -> str:
        return f"the SAE of {self.sae_path}" if self.sae_path else "the SAE"

    def _fit_or_load(self, model, tokenizer, layer: int, where: str) -> None:
        device = next(model.parameters()).device
        if self.sae_path:
            self.sae = load_sae(self.sae_path, device)
            self.info = {"source": str(self.sae_path), "d_in": self.sae.d_in, "latents": self.sae.num_latents}
            return
        if not self.train_texts:
            raise SaeError("no texts to train the SAE on")
        batches = _cycled(
            model, tokenizer, self.train_texts, self.site, layer, self.batch_size, self.max_length
        )
        first = next(batches, None)
        if first is None:
            raise SaeError(f"the {len(self.train_texts)} training texts have no token to train the SAE on")
        self.trained = train_sae(
            itertools.chain([first], batches),
            first.size(-1),
            self.settings,
            device=device,
            progress=self.progress,
        )
        batches.close()
        self.sae = self.trained.sae
        curve = self.trained.curve
        self.info = {
            "source": "trained on the base model's activations",
            "site": self.site,
            "layer": layer,
            "settings": asdict(self.settings),
            "train_texts": len(self.train_texts),
            "train_tokens": self.trained.tokens,
            "seconds": round(self.trained.seconds, 1),
            "train_fvu_first": curve[0][1],
            "train_fvu_last": curve[-1][1],
            "latents": self.sae.num_latents,
            "d_in": self.sae.d_in,
        }
        logger.info(
            "SAE of %s: %d tokens in %.0f s, training FVU %.3f -> %.3f",
            where,
            self.trained.tokens,
            self.trained.seconds,
            curve[0][1],
            curve[-1][1],
        )

    def write(self, output_dir: Path) -> list[Path]:
        """sae.json (where the SAE came from, its training) and, when trained here, the SAE itself."""
        files = [output_dir / "sae.json"]
        if self.trained is not None:
            save_sae(self.sae, output_dir / SAE_FOLDER)
            files.append(output_dir / SAE_FOLDER)
        atomic_write_json(files[0], {**self.info, "dense_threshold": DENSE_THRESHOLD, "shift_q": SHIFT_Q})
        return files


def sae_models(
    models: dict[str, str], run: SaeRun, *, dtype: str = "float32", device: str | None = None
) -> list[dict]:
    """``run``'s rows of each model of ``models`` (label -> spec; the first is the base), one loaded at a
    time, all read with the base model's tokenizer."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(next(iter(models.values())))
    rows: list[dict] = []
    for name, spec in models.items():
        logger.info("SAE measures of %s (%s)", name, spec)
        model = load_model(spec, dtype=dtype, device=device)
        rows += run.measure(name, model, tokenizer)
        del model
        gc.collect()
    return rows


def read_sae_info(output_dir: Path) -> dict:
    path = output_dir / "sae.json"
    return json.loads(path.read_text()) if path.is_file() else {}
