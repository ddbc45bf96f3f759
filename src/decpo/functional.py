"""Pure tensor math of DecPO: no I/O, no config, no model.

The training penalty and the analysis probes call the same functions: the trainer with gradients,
the probes under ``torch.no_grad()``.

Shapes: ``B`` pairs in a batch, ``N`` rows of an activation matrix (samples), ``D`` feature
dimensions, ``T`` tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# declared beside the other names (the config checks them without importing torch)
from decpo.names import DECORRELATION_FORMS, TOKEN_SELECTIONS

# selections that need the completion mask
_NEEDS_COMPLETION = ("prompt_last", "completion_mean")


def select_tokens(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    how: str = "last",
    completion_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reduce per-token activations to one row per sequence.

    Args:
        hidden: ``(N, T, D)`` activations of a module, e.g. ``mlp.up_proj`` outputs.
        attention_mask: ``(N, T)``, 1 for real tokens; left or right padding both work.
        how: ``"last"`` takes the last real (non-pad) token of each sequence; ``"prompt_last"`` the last
            prompt token, the one just before the first completion token (where the answer is decided, and
            the token the probes read); ``"completion_mean"`` averages over the tokens where
            ``completion_mask`` is 1.
        completion_mask: ``(N, T)``, 1 on the completion tokens; required for ``"prompt_last"`` and
            ``"completion_mean"``.

    Returns:
        ``(N, D)``.
    """
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be (N, T, D), got shape {tuple(hidden.shape)}")
    if how == "last":
        positions = torch.arange(attention_mask.size(1), device=attention_mask.device)
        # index of the last 1 in each row: works for left and right padding alike
        last = (attention_mask.bool() * (positions + 1)).argmax(dim=1)
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    if how in _NEEDS_COMPLETION and completion_mask is None:
        raise ValueError(f"token selection {how!r} needs a completion_mask")
    if how == "prompt_last":
        rows = torch.arange(hidden.size(0), device=hidden.device)
        return hidden[rows, prompt_last_positions(attention_mask, completion_mask)]
    if how == "completion_mean":
        weights = completion_mask.to(hidden.dtype).unsqueeze(-1)  # (N, T, 1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    raise ValueError(f"unknown token selection {how!r}; expected one of {TOKEN_SELECTIONS}")


def prompt_last_positions(attention_mask: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """``(N,)``: the index of each sequence's last prompt token, the one before its first completion token.

    Raises when a sequence has no completion token, or no real prompt token before it.
    """
    has_completion = completion_mask.bool().any(dim=1)
    if not has_completion.all():
        n = int((~has_completion).nonzero()[0])
        raise ValueError(f"sequence {n} has no completion token (prompt_last)")
    first = completion_mask.bool().int().argmax(dim=1)  # first 1 of each row
    last = first - 1
    rows = torch.arange(attention_mask.size(0), device=attention_mask.device)
    bad = (last < 0) | (attention_mask[rows, last.clamp(min=0)] == 0)
    if bad.any():
        n = int(bad.nonzero()[0])
        raise ValueError(f"sequence {n} has no real prompt token before its completion (prompt_last)")
    return last


def token_spans(
    attention_mask: torch.Tensor,
    how: str = "last",
    completion_mask: torch.Tensor | None = None,
    index: torch.Tensor | None = None,
    row_length: int | None = None,
) -> list[tuple[int, int, int]]:
    """Where each sequence's selected tokens lie, as ``(row, start, stop)`` slices of an activation tensor.

    `select_spans` then takes the rows with slicing alone, which saves no tensor for backward: inside a
    forward hook under non-reentrant gradient checkpointing the full ``(N, T, D)`` activation is then never
    kept, only the ``(N, D)`` rows (and a recomputation that runs without the hook stays consistent).

    Args:
        attention_mask, completion_mask: ``(N, T)`` (right padding; the completion is one contiguous run).
        how: one of ``TOKEN_SELECTIONS`` (see `select_tokens`).
        index: ``(N, T)`` flat positions of these tokens in a packed ``(R, row_length)`` activation tensor
            (prefix sharing); ``None``: sequence ``n``'s token ``t`` is at row ``n``, position ``t``.
    """
    if how not in TOKEN_SELECTIONS:
        raise ValueError(f"unknown token selection {how!r}; expected one of {TOKEN_SELECTIONS}")
    if how in _NEEDS_COMPLETION and completion_mask is None:
        raise ValueError(f"token selection {how!r} needs a completion_mask")
    chosen = attention_mask if how == "last" else completion_mask
    prompt_last = (
        prompt_last_positions(attention_mask, completion_mask).tolist() if how == "prompt_last" else None
    )
    spans = []
    for n, row in enumerate(chosen.bool().tolist()):
        positions = [t for t, keep in enumerate(row) if keep]
        if not positions:
            raise ValueError(f"sequence {n} has no token to select ({how})")
        if how == "last":
            positions = positions[-1:]
        elif prompt_last is not None:
            positions = [prompt_last[n]]
        if index is not None:
            flat = index[n, positions].tolist()
            positions = [f % row_length for f in flat]
            r = flat[0] // row_length
        else:
            r = n
        if positions != list(range(positions[0], positions[0] + len(positions))):
            raise ValueError(f"the selected tokens of sequence {n} are not contiguous")
        spans.append((r, positions[0], positions[-1] + 1))
    return spans


def select_spans(hidden: torch.Tensor, spans: list[tuple[int, int, int]]) -> torch.Tensor:
    """``(N, D)``: the mean of ``hidden[row, start:stop]`` for each span (one token: that token's row)."""
    return torch.stack([hidden[r, a:b].mean(dim=0) for r, a, b in spans])


def decorrelation_penalty(z: torch.Tensor, form: str = "cosine", eps: float = 1e-8) -> torch.Tensor:
    """Feature-decorrelation regularizer of DecPO on one activation matrix.

    Args:
        z: ``(N, D)``, one row per sample (the paper: ``mlp.up_proj`` output of one block).
        form:
            - ``"paper"``: ``||Z Z^T - I||_F^2`` on raw activations (Yan et al. 2024, Sec. 4).
            - ``"cosine"``: the same with rows L2-normalised, ``Z_hat = Z / ||Z||``; equals the sum
              of squared cosines between different samples (the diagonal of ``Z_hat Z_hat^T - I`` is 0).
              Scale-free, between 0 and ``N (N - 1)``.
            - ``"code_literal"``: ``mean(|Z| |Z|^T - I)``, what the authors' scripts computed
              (absolute values, element mean, no square).
        eps: floor of the row norm in the cosine form (a zero row gives 0, not NaN).

    Returns:
        A scalar tensor.
    """
    if z.dim() != 2:
        raise ValueError(f"z must be (N, D), got shape {tuple(z.shape)}")
    n = z.size(0)
    eye = torch.eye(n, dtype=z.dtype, device=z.device)
    if form == "paper":
        return (z @ z.T - eye).pow(2).sum()
    if form == "cosine":
        z_hat = z / z.norm(dim=1, keepdim=True).clamp(min=eps)
        return (z_hat @ z_hat.T - eye).pow(2).sum()
    if form == "code_literal":
        a = z.abs()
        return (a @ a.T - eye).mean()
    raise ValueError(f"unknown decorrelation form {form!r}; expected one of {DECORRELATION_FORMS}")


def l1_penalty(z: torch.Tensor) -> torch.Tensor:
    """L1-Reg baseline of the paper: ``mean |z|`` over an ``(N, D)`` activation matrix."""
    return z.abs().mean()


def activation_penalty(
    z: torch.Tensor, *, reg_type: str, form: str = "cosine", rows: str = "both", tokens: str = "last"
) -> torch.Tensor:
    """Penalty of one block from its selected rows ``z``: ``(2B, D)``, chosen sequences first (TRL's layout).

    With ``tokens="prompt_last"`` a pair's two rows are the same token of the same prompt (equal activations),
    so only the chosen half is used: one row per pair, whatever ``rows`` says.
    """
    half = z.size(0) // 2
    if tokens == "prompt_last":
        rows = "chosen"
    z = {"both": z, "chosen": z[:half], "rejected": z[half:]}[rows]
    if reg_type == "decorrelation" and z.size(0) < 2:
        # a lone remainder batch: no pair of rows to decorrelate (the configured batch is checked at start)
        return z.float().sum() * 0.0
    # float32 for the Gram matrix: bf16 squares of large activations lose too much
    z = z.float()
    return decorrelation_penalty(z, form) if reg_type == "decorrelation" else l1_penalty(z)


def pairwise_cosine(z: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(N, D)`` -> ``(N, N)`` cosine similarities between rows (zero rows give 0)."""
    z_hat = z / z.norm(dim=1, keepdim=True).clamp(min=eps)
    return z_hat @ z_hat.T


def feature_decorrelation(z: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The paper's monosemanticity proxy: ``1 - mean_{i != j} cos(z_i, z_j)`` over ``(N, D)`` rows.

    Identical rows give 0, mutually orthogonal rows give 1. Needs ``N >= 2``.
    """
    n = z.size(0)
    if n < 2:
        raise ValueError("feature decorrelation needs at least 2 rows")
    cos = pairwise_cosine(z, eps)
    off_diagonal_sum = cos.sum() - cos.diagonal().sum()
    return 1.0 - off_diagonal_sum / (n * (n - 1))


def sequence_logps(
    logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor, average: bool = False
) -> torch.Tensor:
    """Log-probability of each sequence's completion under ``logits``.

    Args:
        logits: ``(N, T, V)`` unnormalised scores; position ``t`` predicts token ``t + 1``.
        labels: ``(N, T)`` token ids.
        loss_mask: ``(N, T)``, 1 on the completion tokens to score.
        average: divide by the number of scored tokens (length-normalised) instead of summing.

    Returns:
        ``(N,)``.
    """
    logits = logits[:, :-1]
    labels = labels[:, 1:]
    mask = loss_mask[:, 1:].to(logits.dtype)
    per_token = torch.gather(logits.log_softmax(-1), 2, labels.unsqueeze(2)).squeeze(2)  # (N, T-1)
    total = (per_token * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1.0) if average else total


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO loss of Rafailov et al. 2023 (Eq. 7; Yan et al. 2024 Eq. 6), per pair.

    ``L = -log sigmoid(beta * [(log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))])``

    All arguments are ``(B,)``. Returns ``(losses, chosen_rewards, rejected_rewards)``, each ``(B,)``;
    the rewards are ``beta * (log pi - log ref)``, detached.
    """
    chosen_logratios = policy_chosen_logps - reference_chosen_logps
    rejected_logratios = policy_rejected_logps - reference_rejected_logps
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()
