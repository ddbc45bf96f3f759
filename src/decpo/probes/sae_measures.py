"""What an SAE says about a model's activations (pure: an SAE and rows in, numbers out).

Per model, over the held-out tokens (`SaeStats`, streamed):

- ``l0``: mean number of latents active (> 0) per token;
- ``fvu``: fraction of variance unexplained, sum of squared reconstruction errors over the total variance
  of the rows about their mean (summed over dimensions, as sparsify's ``fvu``);
- ``dead_frac``: share of latents active on no held-out token;
- ``dense_frac``: share of latents active on more than ``DENSE_THRESHOLD`` (10%) of the held-out tokens.

Against the base model (`latent_shift`): per latent, a two-sample Kolmogorov-Smirnov test of its activation
values (zeros included) on the base model's tokens vs the model's, p-values adjusted by Benjamini-Hochberg
over the latents active in either; ``shifted_frac``: the share with adjusted p < ``SHIFT_Q`` (0.05);
``ks_mean``: their mean KS statistic (an effect size that does not grow with the number of tokens). Tokens
of one text are not independent, so the p-values are optimistic: read ``shifted_frac`` beside ``ks_mean``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

DENSE_THRESHOLD = 0.1  # a latent active on more than this share of tokens is dense
SHIFT_Q = 0.05  # Benjamini-Hochberg level of the per-latent KS tests
MAX_CODE_TOKENS = 65_536  # tokens whose top-k codes are kept for the shift test (k x 8 bytes each)
MEASURES = ("l0", "fvu", "dead_frac", "dense_frac", "shifted_frac", "ks_mean")


class SaeStats:
    """Streaming L0, FVU, dead and dense latents of one model's rows under one SAE (`update`, `result`);
    the top-k codes of its first ``max_code_tokens`` tokens too (`codes`, for `latent_shift`)."""

    def __init__(self, sae, max_code_tokens: int = MAX_CODE_TOKENS):
        self.sae = sae
        self.max_code_tokens = max_code_tokens
        d, m = sae.d_in, sae.num_latents
        self.n = 0
        self.sse = 0.0
        self.active = 0
        self.sum_x = torch.zeros(d, dtype=torch.float64)
        self.sum_x2 = torch.zeros(d, dtype=torch.float64)
        self.fired = torch.zeros(m, dtype=torch.long)
        self._acts: list[torch.Tensor] = []
        self._idx: list[torch.Tensor] = []
        self._kept = 0

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Add the ``(n, d_in)`` rows ``x``."""
        x = x.to(self.sae.device, self.sae.dtype)
        acts, idx, _ = self.sae.encode(x)
        err = x - self.sae.decode(acts, idx)
        on = acts > 0
        self.n += x.size(0)
        self.sse += float(err.double().pow(2).sum())
        self.active += int(on.sum())
        xd = x.double().cpu()
        self.sum_x += xd.sum(0)
        self.sum_x2 += xd.pow(2).sum(0)
        self.fired.index_add_(0, idx[on].cpu(), torch.ones(int(on.sum()), dtype=torch.long))
        take = min(x.size(0), self.max_code_tokens - self._kept)
        if take > 0:
            self._acts.append(acts[:take].float().cpu())
            self._idx.append(idx[:take].int().cpu())
            self._kept += take

    def result(self) -> dict[str, float]:
        if not self.n:
            raise ValueError("no tokens measured")
        total = float((self.sum_x2 - self.sum_x.pow(2) / self.n).sum())
        share = self.fired.double() / self.n
        return {
            "l0": self.active / self.n,
            "fvu": self.sse / total if total > 0 else float("nan"),
            "dead_frac": float((self.fired == 0).double().mean()),
            "dense_frac": float((share > DENSE_THRESHOLD).double().mean()),
        }

    def codes(self) -> Codes:
        acts = torch.cat(self._acts).numpy() if self._acts else np.zeros((0, 0), np.float32)
        idx = torch.cat(self._idx).numpy() if self._idx else np.zeros((0, 0), np.int32)
        return Codes(acts, idx, self.sae.num_latents)


@dataclass(frozen=True)
class Codes:
    """Top-k codes of ``n_tokens`` tokens: ``acts`` and ``idx`` of shape ``(n_tokens, k)``."""

    acts: np.ndarray
    idx: np.ndarray
    num_latents: int

    @property
    def n_tokens(self) -> int:
        return self.acts.shape[0]

    def per_latent(self) -> list[np.ndarray]:
        """Each latent's active (> 0) values, sorted."""
        on = self.acts > 0
        idx, vals = self.idx[on].astype(np.int64), self.acts[on].astype(np.float64)
        order = np.lexsort((vals, idx))
        idx, vals = idx[order], vals[order]
        bounds = np.searchsorted(idx, np.arange(self.num_latents + 1))
        return [vals[bounds[j] : bounds[j + 1]] for j in range(self.num_latents)]


def ks_statistic(a: np.ndarray, n_a: int, b: np.ndarray, n_b: int) -> float:
    """Two-sample KS statistic of ``n_a`` values that are ``a`` (sorted, > 0) and zeros vs ``n_b`` that are
    ``b`` and zeros: `scipy.stats.ks_2samp`'s statistic on the dense samples, without building them."""
    points = np.concatenate([[0.0], a, b])
    cdf_a = (n_a - a.size + np.searchsorted(a, points, side="right")) / n_a
    cdf_b = (n_b - b.size + np.searchsorted(b, points, side="right")) / n_b
    return float(np.abs(cdf_a - cdf_b).max())


def ks_pvalue(d, n_a: int, n_b: int) -> np.ndarray:
    """`scipy.stats.ks_2samp`'s two-sided asymptotic p-value (``method="asymp"``) of the statistic(s) ``d``."""
    m, n = sorted([float(n_a), float(n_b)], reverse=True)
    return np.clip(stats.kstwo.sf(np.asarray(d, dtype=np.float64), np.round(m * n / (m + n))), 0.0, 1.0)


@dataclass(frozen=True)
class Shift:
    """Per latent active in either sample (``latents``): KS statistic ``d``, BH-adjusted p ``q``."""

    latents: np.ndarray
    d: np.ndarray
    q: np.ndarray

    def values(self, level: float = SHIFT_Q) -> dict[str, float]:
        if not self.latents.size:
            return {"shifted_frac": float("nan"), "ks_mean": float("nan")}
        return {"shifted_frac": float((self.q < level).mean()), "ks_mean": float(self.d.mean())}


def latent_shift(base: Codes, other: Codes) -> Shift:
    """Each latent's KS test of ``base`` vs ``other`` (latents active in neither are left out), BH-adjusted."""
    if base.num_latents != other.num_latents:
        raise ValueError(f"codes of {base.num_latents} and {other.num_latents} latents")
    if not base.n_tokens or not other.n_tokens:
        raise ValueError("the shift test needs tokens in both samples")
    va, vb = base.per_latent(), other.per_latent()
    latents = np.array([j for j in range(base.num_latents) if va[j].size or vb[j].size], dtype=np.int64)
    d = np.array([ks_statistic(va[j], base.n_tokens, vb[j], other.n_tokens) for j in latents])
    p = ks_pvalue(d, base.n_tokens, other.n_tokens)
    q = stats.false_discovery_control(p) if p.size else p
    return Shift(latents, d, q)
