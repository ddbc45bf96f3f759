"""The collapse guard of generation measures: is a model still answering each prompt, or one stock text for all?

Pure functions on texts. `decpo.scoring.fluency` judges each continuation alone (a word, no repetition loop);
one sentence repeated for every prompt passes it. These measures look across the continuations of a whole
evaluation:

    distinct-n       unique n-grams / total n-grams over all continuations (Li et al. 2016), n-grams taken
                     within each continuation, never across two; 1.0 when no n-gram repeats anywhere, near
                     0 when one text is repeated for every prompt;
    cross-prompt     a continuation duplicates another prompt's when their normalised texts are equal;
    duplicates       the share of such continuations is the duplicate share;
    most frequent    the normalised continuations with the most occurrences, with their counts.

Tokens are the whitespace-separated pieces of the lower-cased text (``"The cat,  the"`` -> ``["the",
"cat,", "the"]``: punctuation stays on its word). A *normalised* text is those tokens joined by one space,
so continuations that differ only in case or spacing are the same continuation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

TOP_CONTINUATIONS = 5  # how many of the most frequent continuations a report lists


def tokens(text: str) -> list[str]:
    """Whitespace tokens of the lower-cased text."""
    return text.lower().split()


def normalise(text: str) -> str:
    """The text as compared for duplicates: lower-cased, whitespace runs to one space, ends stripped."""
    return " ".join(tokens(text))


def ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    """The ``n``-grams of consecutive `tokens` of one text (none when it has fewer than ``n`` tokens)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    t = tokens(text)
    return [tuple(t[i : i + n]) for i in range(len(t) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique ``n``-grams / total ``n``-grams over all ``texts`` (each text's own n-grams, pooled).

    0.0 when the texts hold no ``n``-gram at all (every text empty or shorter than ``n`` tokens): nothing
    was said, which is the end point of collapse, not a perfect score.
    """
    grams = [g for text in texts for g in ngrams(text, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def distinct_n_leave_one_out(
    texts: Sequence[str], n: int, groups: Sequence[int] | None = None
) -> list[float]:
    """Per text ``i``, `distinct_n` of all ``texts`` but ``texts[i]`` (for a jackknife interval), in one pass
    over the n-grams: removing text ``i`` loses the n-grams that occur only in it.

    ``groups[i]``: the prompt of ``texts[i]`` (several sampled continuations of one prompt): then per prompt,
    in order of first occurrence, `distinct_n` of the texts of every other prompt (leave one prompt out).
    """
    groups = list(range(len(texts))) if groups is None else list(groups)
    if len(groups) != len(texts):
        raise ValueError(f"got {len(groups)} groups for {len(texts)} texts")
    per_group: dict[int, Counter] = {}
    for text, g in zip(texts, groups, strict=True):
        per_group.setdefault(g, Counter()).update(ngrams(text, n))
    total = Counter()
    for c in per_group.values():
        total.update(c)
    unique, count = len(total), sum(total.values())
    out = []
    for c in per_group.values():
        rest = count - sum(c.values())
        only_here = sum(1 for g, k in c.items() if total[g] == k)
        out.append((unique - only_here) / rest if rest else 0.0)
    return out


def cross_prompt_duplicates(texts: Sequence[str], groups: Sequence[int] | None = None) -> list[bool]:
    """Per text, whether its `normalise`\\d form equals that of a text of another prompt.

    ``groups[i]``: the prompt of ``texts[i]`` (several sampled continuations of one prompt share it, and do
    not count as duplicates of one another); None: one text per prompt.
    """
    groups = list(range(len(texts))) if groups is None else list(groups)
    if len(groups) != len(texts):
        raise ValueError(f"got {len(groups)} groups for {len(texts)} texts")
    prompts_of: dict[str, set[int]] = {}
    keys = [normalise(t) for t in texts]
    for key, g in zip(keys, groups, strict=True):
        prompts_of.setdefault(key, set()).add(g)
    return [len(prompts_of[key]) > 1 for key in keys]


def duplicate_share(texts: Sequence[str], groups: Sequence[int] | None = None) -> float:
    """The share of ``texts`` that duplicate another prompt's (`cross_prompt_duplicates`); 0.0 for none."""
    flags = cross_prompt_duplicates(texts, groups)
    return sum(flags) / len(flags) if flags else 0.0


def most_frequent(texts: Sequence[str], k: int = TOP_CONTINUATIONS) -> list[tuple[str, int]]:
    """The ``k`` most frequent `normalise`\\d texts with their counts, most frequent first (ties in order of
    first occurrence)."""
    return Counter(normalise(t) for t in texts).most_common(k)


__all__ = [
    "TOP_CONTINUATIONS",
    "cross_prompt_duplicates",
    "distinct_n",
    "distinct_n_leave_one_out",
    "duplicate_share",
    "most_frequent",
    "ngrams",
    "normalise",
    "tokens",
]
