"""What `decpo probe` and `probe_models` take (`ProbeOptions`, the probe and measure names), apart from the
runner so that the command line builds its flags without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from decpo.config.fields import described
from decpo.data import TASKS, DataError
from decpo.errors import DecPOError
from decpo.names import MLP_UP_PROJ, SITES, did_you_mean, layer_items
from decpo.probes.sae_settings import SaeError, SaeSettings

# the streamed activation probes (`decpo.probes.stats.ActivationStats` computes them)
ACTIVATION_PROBES = (
    "decorrelation",
    "reg_cosine",
    "mean_sq_cosine",
    "variance",
    "near_zero",
    "hoyer",
    "mono_scale",
)
DTYPES = ("float32", "bfloat16", "float16")
# the penalty's token selections, `decpo.functional.TOKEN_SELECTIONS` (a test keeps them equal), written out so
# that the command line builds its flags without importing torch
PROBE_TOKENS = ("last", "prompt_last", "completion_mean")
SPARSE_PROBING = "sparse_probing"
SAE = "sae"
MEASURES = (SPARSE_PROBING, SAE)  # measures beyond the streamed probes, each needing more than a pass
# the fields that set `SaeSettings`' fields: sae_k -> k (the flag --sae-k)
SAE_FIELDS = {"sae_expansion": "expansion_factor", "sae_k": "k", "sae_train_tokens": "train_tokens"}


class ProbeOptionError(DecPOError, ValueError):
    """A measure or its inputs that `probe_models` cannot use (the command line prints it, no traceback)."""


def _unknown_names(flag: str, what: str, given: tuple[str, ...], valid: tuple[str, ...]) -> None:
    """ProbeOptionError naming the first of ``given`` not in ``valid``, the closest valid name and all of them."""
    for name in given:
        if name not in valid:
            hint = did_you_mean(name, valid)
            raise ProbeOptionError(f"--{flag}: unknown {what} {name!r}{hint} (valid: {', '.join(valid)})")


def _check_layers(flag: str, spec: object) -> None:
    """A block list's syntax (the blocks themselves are checked against the model once it loads)."""
    if isinstance(spec, str) and spec != "all":
        try:
            layer_items(spec)
        except ValueError as e:
            raise ProbeOptionError(f"--{flag}: {e}") from e


# the lowest value of each whole-number setting (a size, a count)
_LOWEST = {
    "batch_size": 1,
    "max_length": 2,  # a text and the token after it
    "vocab_top_dims": 1,
    "vocab_top_tokens": 1,
    "max_gram_rows": 2,
    "sparse_folds": 2,
    "sae_train_texts": 0,
}


@dataclass(frozen=True)
class ProbeOptions:
    """How `probe_models` probes: where, which probes, in what batches, and what else it writes."""

    sites: tuple[str, ...] = field(
        default=(MLP_UP_PROJ,),
        metadata=described(
            "Comma-separated activation sites (mlp.up_proj, mlp.hidden, mlp.out, resid_post)."
        ),
    )
    layers: str | tuple[int, ...] = field(
        default="all",
        metadata=described(
            "'all', or comma-separated blocks and ranges, e.g. 3,-1 or 0-29:4 (negative from the end)."
        ),
    )
    probes: tuple[str, ...] = field(
        default=ACTIVATION_PROBES, metadata=described("Comma-separated activation probes.")
    )
    token: str | None = field(
        default=None,
        metadata={
            **described(
                "The token(s) read, as the penalty's train.reg_tokens selects them: last, prompt_last or "
                "completion_mean, on prompt + chosen answer + EOS tokenized as the trainer tokenizes a pair "
                "(prompt_last and completion_mean need pairs: a pairs file or a task as --texts; a .txt file "
                "allows only last). Default: the last token of each text, of a pair its prompt's (the paper's probe); "
                "the texts made for the toxicity and sycophancy concepts (--measure sparse_probing): "
                "completion_mean."
            ),
            "choices": PROBE_TOKENS,
        },
    )
    regularized_layers: str | tuple[int, ...] | None = field(
        default=None,
        metadata=described(
            "Blocks marked on the figures as regularized (the penalty's train.reg_layers), as --layers writes "
            "them, e.g. 15 or -1 (negative from the end)."
        ),
    )
    batch_size: int = field(default=16, metadata=described("Texts per forward pass."))
    max_length: int = field(
        default=256, metadata=described("Texts longer than this many tokens keep their end.")
    )
    vocab_layer: int | None = field(
        default=None,
        metadata=described(
            "Write vocab.json: top MLP dims of this block projected through the unembedding (the paper's Table 1)."
        ),
    )
    vocab_top_dims: int = field(default=10, metadata=described("Dims of the vocabulary view."))
    vocab_top_tokens: int = field(default=10, metadata=described("Tokens per dim of the vocabulary view."))
    eps_zero: float = field(default=1e-2, metadata=described("|z| below this counts as near zero."))
    max_gram_rows: int = field(
        default=512,
        metadata=described(
            "Texts behind the squared-cosine probes of wide layers (memory: 2 * width * this bytes per layer)."
        ),
    )
    weights: bool = field(
        default=True,
        metadata=described(
            "Add the weight-based proxy's rows (read from the MLP input weights).",
            off="Do not add the weight-based proxy's rows (read from the MLP input weights; added by default).",
        ),
    )
    dtype: str = field(
        default="float32",
        metadata={**described("Model dtype: float32, bfloat16 or float16."), "choices": DTYPES},
    )
    measures: tuple[str, ...] = field(
        default=(),
        metadata=described(
            "Comma-separated measures beyond the streamed probes: sparse_probing (k-sparse probing of the "
            "texts' labelled concepts, k = 1..32 and dense, per probed layer and site; needs labelled texts, "
            "--texts synthetic, reading, sycophancy or toxicity; keeps n_texts x width floats per layer and site); sae (a sparse "
            "autoencoder trained on the first model's activations at one block and site, or loaded with "
            "--sae-path, then L0, FVU, dead and dense latents and the share of latents shifted vs the first model, "
            "for each model, on the texts' every token but the first; needs pip install 'decpo[sae]')."
        ),
    )
    sae_layer: int | None = field(
        default=None,
        metadata=described(
            "Block of the SAE measures, negative from the end (default: the first --regularized-layers block, "
            "else the middle block)."
        ),
    )
    sae_site: str = field(default=MLP_UP_PROJ, metadata=described("Activation site of the SAE measures."))
    sae_path: str | None = field(
        default=None,
        metadata=described(
            "Load this SAE (a local folder of EleutherAI sparsify's format: cfg.json, sae.safetensors) instead of "
            "training one; its width must be the site's."
        ),
    )
    sae_train_texts: int = field(
        default=2000,
        metadata=described(
            "Texts that train the SAE: the ones after the first --num-texts of --texts (disjoint from the "
            "measured ones), each prompt + chosen answer for a task or pairs file; read again when they hold "
            "fewer tokens than --sae-train-tokens."
        ),
    )
    sae_expansion: int = field(
        default=SaeSettings.expansion_factor, metadata=described("SAE latents per dimension of the site.")
    )
    sae_k: int = field(default=SaeSettings.k, metadata=described("SAE latents kept per token (TopK)."))
    sae_train_tokens: int = field(
        default=SaeSettings.train_tokens,
        metadata=described(
            "Activation rows (tokens) the SAE trains on (the default trains in about 6 minutes on one CPU core "
            "on SmolLM2-135M; on a GPU train longer or load a published SAE)."
        ),
    )
    sparse_folds: int = field(default=5, metadata=described("Stratified folds of sparse probing."))
    sparse_layers: str | tuple[int, ...] | None = field(
        default=None,
        metadata=described(
            "Blocks of sparse probing, as --layers writes them, at every site (default: every probed layer); "
            "blocks not probed are added to the same pass."
        ),
    )
    device: str | None = field(
        default=None, metadata=described("cpu, cuda, ... (default: cuda when available).")
    )
    progress: bool = field(
        default=True,
        metadata=described("Show progress bars.", off="Hide the progress bars (shown by default)."),
    )

    def __post_init__(self) -> None:
        # before any model loads: a typo in a name or a block list costs no loading and leaves no folder
        _unknown_names("sites", "site", tuple(self.sites), SITES)
        _unknown_names("sae-site", "site", (self.sae_site,), SITES)
        _unknown_names("probes", "probe", tuple(self.probes), ACTIVATION_PROBES)
        _unknown_names("measure", "measure", tuple(self.measures), MEASURES)
        _check_layers("layers", self.layers)
        _check_layers("sparse-layers", self.sparse_layers)
        for name, low in _LOWEST.items():
            if getattr(self, name) < low:
                flag = "--" + name.replace("_", "-")
                raise ProbeOptionError(f"{flag} must be >= {low}, got {getattr(self, name)}")
        if not self.eps_zero > 0:
            raise ProbeOptionError(
                f"--eps-zero must be > 0 (|z| below it counts as near zero), got {self.eps_zero}"
            )
        if SAE in self.measures:
            self.sae_settings()  # a bad size fails here, before any model loads

    def sae_settings(self) -> SaeSettings:
        """The SAE's settings from the ``sae_*`` fields (the others at their defaults)."""
        try:
            return SaeSettings(**{setting: getattr(self, name) for name, setting in SAE_FIELDS.items()})
        except SaeError as e:  # said as the flag that set it: `--sae-k must be >= 1, got 0`
            flag = next((n for n, s in SAE_FIELDS.items() if s == e.setting), None)
            if flag is None:
                raise ProbeOptionError(str(e)) from None
            raise ProbeOptionError(f"--{flag.replace('_', '-')} {e.problem}") from None


def check_texts_source(source: str) -> None:
    """A `DataError` for a ``--texts`` that is neither an existing file nor a task name (light: checked before
    torch is imported and any model loads)."""
    if not (Path(source).exists() or source in TASKS):
        raise DataError(
            f"--texts {source!r} is neither a file nor a task name{did_you_mean(source, TASKS)} (tasks: "
            f"{', '.join(TASKS)})"
        )
