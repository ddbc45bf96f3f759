"""What the SAE measures are built and trained with (`SaeSettings`) and their error (`SaeError`), apart from
the training (`decpo.probes.sae`) so that `decpo probe`'s flags are built without importing torch."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from decpo.errors import DecPOError


class SaeError(DecPOError, ValueError):
    """An SAE that cannot be used here (a width that is not the site's, a folder that is not an SAE).
    ``setting``/``problem``: the `SaeSettings` field a bad value was given to and what is wrong with it, so that
    a caller that set it from a flag can name the flag."""

    def __init__(self, message: str, setting: str | None = None, problem: str | None = None) -> None:
        super().__init__(message)
        self.setting, self.problem = setting, problem


@dataclass(frozen=True)
class SaeSettings:
    """How the SAE is built and trained. The defaults train in under 10 minutes on SmolLM2-135M's block 15
    ``mlp.up_proj`` (1536 wide) on one CPU core, model forwards included (README: its FVU and L0)."""

    expansion_factor: int = 4  # latents = expansion_factor x the site's width
    k: int = 32  # latents kept per token (TopK)
    train_tokens: int = 150_000  # activation rows seen in training
    batch_tokens: int = 512  # rows per optimizer step
    buffer_tokens: int = 8192  # rows held at once by the shuffling buffer
    lr: float | None = None  # Adam; None: sparsify's 2e-4 / sqrt(latents / 2**14), x 4 for short trainings
    auxk_alpha: float = 1 / 32
    dead_after_tokens: int = 20_000  # a latent silent this many training tokens gets the AuxK loss
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("expansion_factor", "k", "train_tokens", "batch_tokens", "buffer_tokens"):
            if getattr(self, name) < 1:
                problem = f"must be >= 1, got {getattr(self, name)}"
                raise SaeError(f"SAE setting {name} {problem}", setting=name, problem=problem)
        if self.buffer_tokens < self.batch_tokens:
            raise SaeError(
                f"SAE buffer_tokens ({self.buffer_tokens}) must hold one batch ({self.batch_tokens} tokens)"
            )


def require_sparsify(what: str = "the SAE measures") -> None:
    """SaeError before any work when EleutherAI's sparsify (the extra ``decpo[sae]``) is not installed."""
    if importlib.util.find_spec("sparsify") is None:
        raise SaeError(f"{what} need EleutherAI's sparsify: pip install 'decpo[sae]' (eai-sparsify==1.3.3)")
