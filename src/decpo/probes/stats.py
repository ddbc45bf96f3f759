"""Streaming accumulators of the activation probes: pure tensor math, no model, no I/O.

One `ActivationStats` holds what one (layer, site) needs over a stream of ``(B, D)`` batches of
activations (one row per input text), so that a probe pass never stores all activations:

- feature decorrelation ``1 - mean_{i != j} cos(z_i, z_j)``: from the running sum of L2-normalised rows
  ``s = sum_i z_hat_i`` and of their squared norms, as ``sum_{i != j} cos = ||s||^2 - sum_i ||z_hat_i||^2``;
- the DecPO regularizer in its cosine form ``||Z_hat Z_hat^T - I||_F^2 / N^2`` and the mean squared
  off-diagonal cosine: both need ``S = sum_{i, j} cos(z_i, z_j)^2 = ||Z_hat^T Z_hat||_F^2``. When ``D <=
  gram_dim_limit`` the ``D x D`` second moment ``Z_hat^T Z_hat`` is accumulated in float64 (exact over all
  inputs, ``8 D^2`` bytes). Wider layers keep the normalised rows themselves in ``row_dtype`` (float16 by
  default) for the first ``max_gram_rows`` inputs only, and the two squared-cosine probes are computed on
  those rows (their ``n`` says so). Memory per (layer, site) is at most
  ``max(8 D^2 [D <= gram_dim_limit], 2 D max_gram_rows) + 5 * 8 D`` bytes: for SmolLM2-135M's up_proj
  (``D = 1536``) and the defaults, 1.5 MiB + 60 KiB, i.e. 47 MiB for all 30 layers, whatever the number of
  texts. A ``D x D`` float32 Gram of that width would take 9 MiB per layer (280 MiB for 30).
- activation sparsity (Yan et al. 2024, Fig. 5): the variance across the ``D`` dimensions of each input
  (population variance), averaged over inputs; the fraction of ``|z| < eps_zero``; the Hoyer measure
  ``(sqrt(D) - L1/L2) / (sqrt(D) - 1)`` (0 dense .. 1 one-hot), averaged over inputs;
- the monosemantic scale of Wang et al. 2024 (arXiv 2312.11560): for each neuron and each input, ``(z -
  mean)^2 / var`` against the running mean and (sample) variance of the *earlier* inputs (Welford /
  Chan updates); inputs with fewer than two earlier inputs have no variance yet and are skipped; the value
  is the mean over those inputs, then over neurons.

All accumulators are float64 on the activations' device; `update` never synchronises with the device.
"""

from __future__ import annotations

import math

import torch

from decpo.probes.options import ACTIVATION_PROBES

# the probes that use only the capped rows / Gram matrix (their n can be smaller than the number of texts)
GRAM_PROBES = ("reg_cosine", "mean_sq_cosine")


def normalise_rows(z: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(N, D)`` -> rows over their L2 norm (zero rows stay zero), as `decpo.functional.pairwise_cosine`."""
    return z / z.norm(dim=1, keepdim=True).clamp(min=eps)


def row_variance(z: torch.Tensor) -> torch.Tensor:
    """``(N, D)`` -> ``(N,)`` population variance across the ``D`` dimensions of each row."""
    return z.var(dim=1, correction=0)


def near_zero_fraction(z: torch.Tensor, eps: float = 1e-2) -> torch.Tensor:
    """``(N, D)`` -> ``(N,)`` fraction of the entries of each row with ``|z| < eps``."""
    return (z.abs() < eps).to(z.dtype).mean(dim=1)


def hoyer(z: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``(N, D)`` -> ``(N,)`` Hoyer sparsity ``(sqrt(D) - ||z||_1 / ||z||_2) / (sqrt(D) - 1)`` of each row.

    1 for a one-hot row, 0 for a row of equal magnitudes; an all-zero row counts as 1 (fully sparse).
    Needs ``D >= 2``.
    """
    d = z.size(1)
    if d < 2:
        raise ValueError("the Hoyer measure needs at least 2 dimensions")
    l1 = z.abs().sum(dim=1)
    l2 = z.norm(dim=1)
    ratio = torch.where(l2 > eps, l1 / l2.clamp(min=eps), torch.ones_like(l1))
    return (math.sqrt(d) - ratio) / (math.sqrt(d) - 1)


class ActivationStats:
    """Streaming statistics of one (layer, site) over ``(B, D)`` batches; see the module docstring.

    Args:
        dim: ``D``, the width of the activations.
        eps_zero: threshold of the near-zero fraction (absolute).
        gram_dim_limit: accumulate the exact ``D x D`` second moment when ``D`` is at most this.
        max_gram_rows: otherwise, keep this many normalised rows for the squared-cosine probes.
        row_dtype: storage dtype of those rows (float16 halves float32's memory; cosines keep ~3 digits).
        var_eps: floor of the running variance in the monosemantic scale (a constant neuron scores 0).
    """

    def __init__(
        self,
        dim: int,
        *,
        eps_zero: float = 1e-2,
        gram_dim_limit: int = 256,
        max_gram_rows: int = 512,
        row_dtype: torch.dtype = torch.float16,
        var_eps: float = 1e-12,
    ):
        if dim < 2:
            raise ValueError(f"activation width must be >= 2, got {dim}")
        self.dim = dim
        self.eps_zero = eps_zero
        self.max_gram_rows = max_gram_rows
        self.row_dtype = row_dtype
        self.var_eps = var_eps
        self.use_gram = dim <= gram_dim_limit
        self.n = 0
        self._device: torch.device | None = None

    def _init(self, device: torch.device) -> None:
        f64 = {"dtype": torch.float64, "device": device}
        self._device = device
        self.sum_hat = torch.zeros(self.dim, **f64)  # sum of normalised rows
        self.sum_hat_sq = torch.zeros((), **f64)  # sum of their squared norms (1, or 0 for zero rows)
        self.gram = torch.zeros(self.dim, self.dim, **f64) if self.use_gram else None
        self.rows: list[torch.Tensor] = []  # normalised rows (when not use_gram), up to max_gram_rows
        self.n_rows = 0
        self.sum_variance = torch.zeros((), **f64)
        self.sum_near_zero = torch.zeros((), **f64)
        self.sum_hoyer = torch.zeros((), **f64)
        self.sum_z = torch.zeros(self.dim, **f64)  # for the mean activation (vocabulary view)
        # Welford state of the earlier inputs, and the per-neuron sum of monosemantic scores
        self.mean = torch.zeros(self.dim, **f64)
        self.m2 = torch.zeros(self.dim, **f64)
        self.sum_scale = torch.zeros(self.dim, **f64)
        self.n_scored = 0

    def update(self, z: torch.Tensor) -> None:
        """Add a ``(B, D)`` batch of activations (rows in input order: the monosemantic scale needs it)."""
        if z.dim() != 2 or z.size(1) != self.dim:
            raise ValueError(f"expected a (B, {self.dim}) batch, got shape {tuple(z.shape)}")
        if z.size(0) == 0:
            return
        if self._device is None:
            self._init(z.device)
        z = z.to(torch.float64)
        z_hat = normalise_rows(z)
        self.sum_hat += z_hat.sum(dim=0)
        self.sum_hat_sq += z_hat.pow(2).sum()
        if self.gram is not None:
            self.gram += z_hat.T @ z_hat  # (D, D)
        elif self.n_rows < self.max_gram_rows:
            keep = z_hat[: self.max_gram_rows - self.n_rows]
            self.rows.append(keep.to(self.row_dtype))
            self.n_rows += keep.size(0)
        self.sum_variance += row_variance(z).sum()
        self.sum_near_zero += near_zero_fraction(z, self.eps_zero).sum()
        self.sum_hoyer += hoyer(z).sum()
        self.sum_z += z.sum(dim=0)
        self._update_scale(z)
        self.n += z.size(0)

    def _update_scale(self, z: torch.Tensor) -> None:
        """Monosemantic scale of each row against the inputs before it; then fold the batch into the state.

        Row ``j`` of the batch is compared with the ``n0`` earlier inputs (state ``mean``, ``m2``) plus the
        ``j`` rows before it in the batch; the two groups are merged with Chan et al.'s parallel formula.
        """
        b = z.size(0)
        n0 = self.n
        j = torch.arange(b, dtype=torch.float64, device=z.device).unsqueeze(1)  # (B, 1) rows before, in batch
        csum = z.cumsum(dim=0) - z  # (B, D) exclusive prefix sums
        csq = (z * z).cumsum(dim=0) - z * z
        mean_b = csum / j.clamp(min=1)
        m2_b = (csq - j * mean_b.pow(2)).clamp(min=0)  # within-batch M2 of the rows before
        n = n0 + j  # (B, 1) earlier inputs in all
        delta = mean_b - self.mean
        mean = self.mean + delta * j / n.clamp(min=1)
        m2 = self.m2 + m2_b + delta.pow(2) * (n0 * j) / n.clamp(min=1)
        var = m2 / (n - 1).clamp(min=1)
        scored = (n >= 2).squeeze(1)  # a variance needs two earlier inputs
        score = (z - mean).pow(2) / var.clamp(min=self.var_eps)  # (B, D)
        self.sum_scale += score[scored].sum(dim=0)
        self.n_scored += int(b - min(max(2 - n0, 0), b))
        # fold the whole batch in
        total = n0 + b
        mean_all = z.mean(dim=0)
        m2_all = (z - mean_all).pow(2).sum(dim=0)
        delta_all = mean_all - self.mean
        self.mean = self.mean + delta_all * b / total
        self.m2 = self.m2 + m2_all + delta_all.pow(2) * n0 * b / total

    def mean_activation(self) -> torch.Tensor:
        """``(D,)`` mean activation of each dimension over all inputs (float64)."""
        if self.n == 0:
            raise ValueError("no activations seen yet")
        return self.sum_z / self.n

    def gram_count(self) -> int:
        """Inputs behind the squared-cosine probes: all of them, or the first ``max_gram_rows``."""
        return self.n if self.gram is not None else self.n_rows

    def _gram_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sum_{i != j} cos_ij^2, sum_i (||z_hat_i||^2 - 1)^2)`` over the inputs counted by `gram_count`.

        The second term is the diagonal of ``Z_hat Z_hat^T - I``: 0 per row, 1 per all-zero row.
        """
        if self.gram is not None:
            # each ||z_hat_i||^2 is 1 or 0, so sum_i ||z_hat_i||^4 == sum_i ||z_hat_i||^2 == sum_hat_sq
            return self.gram.pow(2).sum() - self.sum_hat_sq, self.n - self.sum_hat_sq
        rows = torch.cat(self.rows)  # (n_rows, D)
        rows = rows.to(torch.promote_types(rows.dtype, torch.float32))  # half-precision matmul loses too much
        cos = (rows @ rows.T).to(torch.float64)  # (n_rows, n_rows)
        d = cos.diagonal()
        return cos.pow(2).sum() - d.pow(2).sum(), (d - 1).pow(2).sum()

    def result(self) -> dict[str, float]:
        """Every probe in `ACTIVATION_PROBES` as a float (NaN where undefined, e.g. fewer than 2 inputs)."""
        nan = float("nan")
        n = self.n
        if n == 0:
            return dict.fromkeys(ACTIVATION_PROBES, nan)
        out = {
            "variance": (self.sum_variance / n).item(),
            "near_zero": (self.sum_near_zero / n).item(),
            "hoyer": (self.sum_hoyer / n).item(),
            "mono_scale": (self.sum_scale / self.n_scored).mean().item() if self.n_scored else nan,
        }
        if n >= 2:
            off_diagonal = self.sum_hat.pow(2).sum() - self.sum_hat_sq
            out["decorrelation"] = 1.0 - (off_diagonal / (n * (n - 1))).item()
        else:
            out["decorrelation"] = nan
        m = self.gram_count()
        if m >= 2:
            off_sq, diag = self._gram_terms()
            out["reg_cosine"] = ((off_sq + diag) / m**2).item()
            out["mean_sq_cosine"] = (off_sq / (m * (m - 1))).item()
        else:
            out["reg_cosine"] = out["mean_sq_cosine"] = nan
        return {name: out[name] for name in ACTIVATION_PROBES}

    def counts(self) -> dict[str, int]:
        """Number of inputs behind each probe (the ``n_texts`` column of probes.csv)."""
        m = self.gram_count()
        return {name: (m if name in GRAM_PROBES else self.n) for name in ACTIVATION_PROBES}

    def memory_bytes(self) -> int:
        """Bytes held by the accumulators (the bound stated in the module docstring)."""
        if self._device is None:
            return 0
        tensors = [self.sum_hat, self.sum_z, self.mean, self.m2, self.sum_scale, *self.rows]
        if self.gram is not None:
            tensors.append(self.gram)
        return sum(t.numel() * t.element_size() for t in tensors)


def activation_probes(z: torch.Tensor, eps_zero: float = 1e-2) -> dict[str, float]:
    """All activation probes of one in-memory ``(N, D)`` matrix (rows in input order), exactly."""
    stats = ActivationStats(z.size(1), eps_zero=eps_zero, gram_dim_limit=z.size(1))
    stats.update(z)
    return stats.result()
