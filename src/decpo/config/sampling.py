"""The ``pairs`` settings that a pair file depends on besides the model and the prompts (`decpo pairs`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from decpo.config.fields import described
from decpo.data.errors import DataError

PREFER = ("low", "high")


SCORER_ALIASES = {"toxicity": "profanity-check", "sentiment": "vader"}


def scorer_spec(name: str) -> str:
    """``toxicity`` -> ``profanity-check`` (the offline default), ``sentiment`` -> ``vader``; else unchanged."""
    return SCORER_ALIASES.get(name, name)


def default_prefer(scorer: str) -> str:
    """Lower is better for toxicity scorers, higher for sentiment (VADER positivity)."""
    return "high" if scorer_spec(scorer) == "vader" else "low"


@dataclass(frozen=True)
class SamplingSettings:
    """Everything a pair file depends on besides the model and the prompts (the config's ``pairs`` section
    is these fields plus where the prompts come from: `decpo.config.sections.PairsSettings`)."""

    num_samples: int = field(default=4, metadata=described("Sampled continuations per prompt."))
    include_greedy: bool = field(
        default=False, metadata=described("Add the greedy continuation as one more sample.")
    )
    temperature: float = field(default=1.0, metadata=described("Sampling temperature."))
    top_p: float = field(default=1.0, metadata=described("Nucleus sampling top-p (1: off)."))
    max_new_tokens: int = field(default=20, metadata=described("Tokens per continuation."))
    max_prompt_tokens: int | None = field(
        default=None,
        metadata=described("Keep only the last N tokens of a longer prompt; null: the whole prompt."),
    )
    seed: int = field(default=0, metadata=described("Sampling seed (the same seed gives the same pairs)."))
    batch_size: int = field(default=32, metadata=described("Prompts per generation batch."))
    scorer: str = field(
        default="toxicity",
        metadata=described(
            "toxicity (the offline profanity-check classifier), sentiment (VADER positivity), hf:<id|dir> or "
            "detoxify:<ckpt> (see decpo.scoring.classifiers)."
        ),
    )
    prefer: str = field(
        default="auto", metadata=described("Which score is better: low, high or auto (low for toxicity).")
    )
    min_gap: float = field(
        default=0.1,
        metadata=described("Keep a pair only when best and worst scores differ by more than this."),
    )

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise DataError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.num_samples + int(self.include_greedy) < 2:
            raise DataError(
                "num_samples + include_greedy must give 2 samples per prompt or more (a pair needs 2)"
            )
        if self.temperature <= 0:
            raise DataError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise DataError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise DataError("max_new_tokens and batch_size must be >= 1")
        if self.prefer not in (*PREFER, "auto"):
            raise DataError(f"prefer must be low, high or auto, got {self.prefer!r}")
        if self.min_gap < 0:
            raise DataError(f"min_gap must be >= 0, got {self.min_gap}")

    @property
    def resolved_prefer(self) -> str:
        return default_prefer(self.scorer) if self.prefer == "auto" else self.prefer
