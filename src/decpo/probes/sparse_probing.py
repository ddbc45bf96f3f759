"""k-sparse probing (Gurnee et al., TMLR 2023): how few neurons decode a labelled concept. Pure: no model, no I/O.

For activations ``X`` (``n_texts x n_neurons``, one row per text) and binary labels ``y``, over stratified
K folds (scikit-learn's ``StratifiedKFold``, shuffled with a seed):

1. rank the neurons on the **training fold only** by the standardized absolute mean difference between
   the classes, ``|mean_1 - mean_0| / pooled_sd`` (Cohen's d; a neuron constant on the training fold
   scores 0), so that the held-out fold never chooses the neurons it is scored on;
2. fit a logistic probe (standardized inputs, scikit-learn ``LogisticRegression``, L2 with ``C``) on the
   top-k neurons for each k of ``ks`` (k above the width is left out) and on all neurons (the dense probe);
3. score each on the held-out fold (accuracy).

Reported per k (and dense): the mean accuracy over folds and a 95% interval, the corrected resampled t
interval of Nadeau & Bengio (2003), ``mean +- t_{K-1} sd sqrt(1/K + n_test/n_train)``, since the folds'
training sets overlap and the naive ``sd / sqrt(K)`` is too narrow. "Neurons needed" is the smallest k
whose mean accuracy reaches ``threshold`` (0.95) times the dense probe's; when no k of ``ks`` does, the
dense width (every neuron). A concept the dense probe cannot decode makes neurons-needed meaningless (95% of
a chance accuracy is reached by any k): "decodable" means the lower end of the dense probe's 95% interval
lies above ``chance`` (the majority class's share), and where it does not, ``neurons_needed`` is NaN (left
out of every table and correlation) and ``decodable`` is 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from decpo.errors import DecPOError

KS = (1, 2, 4, 8, 16, 32)
MIN_PER_CLASS = 10  # fewer examples of a class than this are refused: the folds would hold one or two
DENSE = "dense"
ROW_PREFIX = "sparse_probe/"  # every sparse-probing row's measure name starts so (`SparseProbe.values`)


class SparseProbeError(DecPOError, ValueError):
    """Labels or activations that sparse probing cannot use; the message names the concept."""


@dataclass(frozen=True)
class Accuracy:
    """Held-out accuracy over folds: the mean, its 95% interval and each fold's value."""

    mean: float
    lo: float
    hi: float
    folds: tuple[float, ...]


@dataclass(frozen=True)
class SparseProbeResult:
    """One concept at one (site, layer): accuracy per k (``"dense"`` for all neurons) and neurons needed."""

    concept: str
    accuracy: dict[int | str, Accuracy]
    neurons_needed: int
    n_texts: int
    n_neurons: int
    chance: float  # the majority class's share: the accuracy of always guessing it
    threshold: float = 0.95

    @property
    def acc_k1(self) -> float:
        return self.accuracy[1].mean

    @property
    def acc_dense(self) -> float:
        return self.accuracy[DENSE].mean

    @property
    def decodable(self) -> bool:
        """Whether the dense probe beats always guessing the majority class (its interval's lower end above it)."""
        return self.accuracy[DENSE].lo > self.chance

    def values(self) -> dict[str, float]:
        """Tidy measure names -> values: ``sparse_probe/acc_k{k}/<concept>`` per k, ``acc_dense``, the 95%
        interval of k = 1 (``acc_k1_lo``, ``acc_k1_hi``), ``decodable`` (1 or 0) and ``neurons_needed`` (NaN
        where the concept is not decodable)."""
        out = {f"acc_k{k}": a.mean for k, a in self.accuracy.items() if k != DENSE}
        out["acc_dense"] = self.acc_dense
        out["acc_k1_lo"], out["acc_k1_hi"] = self.accuracy[1].lo, self.accuracy[1].hi
        out["decodable"] = float(self.decodable)
        out["neurons_needed"] = float(self.neurons_needed) if self.decodable else math.nan
        return {f"{ROW_PREFIX}{key}/{self.concept}": value for key, value in out.items()}


def rank_neurons(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(n, D)``, ``(n,)`` 0/1 -> ``(D,)`` neuron indices, best first, by ``|mean_1 - mean_0| / pooled_sd``.

    Ties (constant neurons score 0) keep the lower index first (a stable sort), so the ranking is
    deterministic.
    """
    pos, neg = x[y == 1], x[y == 0]
    n1, n0 = len(pos), len(neg)
    pooled_var = ((n1 - 1) * pos.var(axis=0, ddof=1) + (n0 - 1) * neg.var(axis=0, ddof=1)) / (n1 + n0 - 2)
    diff = np.abs(pos.mean(axis=0) - neg.mean(axis=0))
    sd = np.sqrt(pooled_var)
    score = np.where(sd > 1e-12, diff / np.maximum(sd, 1e-12), 0.0)
    return np.argsort(-score, kind="stable")


def fold_indices(y: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The ``(train, test)`` index arrays of the stratified folds `sparse_probe` uses."""
    from sklearn.model_selection import StratifiedKFold  # lazy: scikit-learn loads slowly

    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def check_labels(y: np.ndarray, concept: str, n_folds: int) -> None:
    """SparseProbeError unless ``y`` is binary 0/1 with at least ``max(MIN_PER_CLASS, n_folds)`` of each."""
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise SparseProbeError(f"concept {concept!r}: labels must be 0/1, got values {sorted(values)}")
    if len(values) < 2:
        raise SparseProbeError(
            f"concept {concept!r}: all {len(y)} labels are {next(iter(values), None)}; a probe needs two classes"
        )
    least = min(int((y == v).sum()) for v in (0, 1))
    needed = max(MIN_PER_CLASS, n_folds)
    if least < needed:
        raise SparseProbeError(
            f"concept {concept!r}: its smaller class has {least} example(s); sparse probing needs at least "
            f"{needed} per class (use more texts)"
        )


def interval(values: Sequence[float], test_share: float) -> tuple[float, float]:
    """95% corrected resampled t interval of the mean of K fold scores (Nadeau & Bengio 2003).

    ``test_share``: ``n_test / n_train`` of one fold (``1 / (K - 1)`` for K folds).
    """
    from scipy import stats  # lazy: scipy loads slowly

    k = len(values)
    mean = float(np.mean(values))
    if k < 2:
        return mean, mean
    sd = float(np.std(values, ddof=1))
    half = stats.t.ppf(0.975, k - 1) * sd * math.sqrt(1 / k + test_share)
    return mean - half, mean + half


def _probe_accuracy(x_train, y_train, x_test, y_test, c: float) -> float:
    """Held-out accuracy of a logistic probe fit on standardized training columns."""
    from sklearn.linear_model import LogisticRegression  # lazy: scikit-learn loads slowly
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    probe.fit(x_train, y_train)
    return float((probe.predict(x_test) == y_test).mean())


def sparse_probe(
    x,
    y,
    *,
    concept: str = "concept",
    ks: Sequence[int] = KS,
    n_folds: int = 5,
    seed: int = 0,
    c: float = 1.0,
    threshold: float = 0.95,
) -> SparseProbeResult:
    """k-sparse probing of one concept on activations ``x`` ``(n_texts, n_neurons)``, labels ``y`` ``(n_texts,)``.

    Args:
        x: activations, a NumPy array or a torch tensor (converted to float64).
        y: 0/1 labels (bools are fine); a single class, non-binary values, or fewer than
            ``max(10, n_folds)`` examples of a class raise `SparseProbeError` naming ``concept``.
        ks: the sparsities; those above ``n_neurons`` are left out.
        n_folds, seed: the stratified folds (`fold_indices`).
        c: inverse L2 strength of every probe (scikit-learn's ``C``).
        threshold: neurons needed = the smallest k reaching ``threshold`` x the dense accuracy.
    """
    x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    y = np.asarray(y)
    if x.ndim != 2 or len(x) != len(y):
        raise SparseProbeError(
            f"concept {concept!r}: activations {x.shape} and {y.shape[0]} labels do not match (n_texts x n_neurons)"
        )
    if n_folds < 2:
        raise SparseProbeError(f"concept {concept!r}: n_folds must be at least 2, got {n_folds}")
    check_labels(y, concept, n_folds)
    y = y.astype(np.int64)
    n, d = x.shape
    sizes = [k for k in sorted(set(ks)) if 1 <= k <= d]
    scores: dict[int | str, list[float]] = {k: [] for k in [*sizes, DENSE]}
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

    # one BLAS thread: these fits are small, and on a busy machine BLAS threads waiting for each other made
    # them 5-10 times slower (0.16 s against 0.8-1.7 s per concept on 2 loaded cores)
    with threadpool_limits(limits=1, user_api="blas"):
        for train, test in fold_indices(y, n_folds, seed):
            order = rank_neurons(x[train], y[train])  # the training fold only
            for k in sizes:
                top = order[:k]
                scores[k].append(_probe_accuracy(x[train][:, top], y[train], x[test][:, top], y[test], c))
            scores[DENSE].append(_probe_accuracy(x[train], y[train], x[test], y[test], c))
    accuracy = {
        k: Accuracy(float(np.mean(v)), *interval(v, 1 / (n_folds - 1)), tuple(v)) for k, v in scores.items()
    }
    target = threshold * accuracy[DENSE].mean
    needed = next((k for k in sizes if accuracy[k].mean >= target), d)
    return SparseProbeResult(
        concept=concept,
        accuracy=accuracy,
        neurons_needed=needed,
        n_texts=n,
        n_neurons=d,
        chance=float(max(y.mean(), 1 - y.mean())),
        threshold=threshold,
    )
