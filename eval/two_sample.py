"""Two-sample measures between two sets of images: are they told apart, and how far apart are they?

* :func:`histogram_w1`: 1-Wasserstein distance between pooled intensity histograms; :func:`halves_w1` gives a
  set's own sampling noise floor (two seeded random halves), so a gap is only a gap if it exceeds it.
* :func:`smd`: standardised mean difference of one feature.
* :func:`permutation_test`: the classifier two-sample test, leave-one-out nearest-centroid balanced accuracy
  (:func:`loo_nearest_centroid_accuracy`, 0.5 = indistinguishable) on :func:`standardise`-d features, with a
  permutation p-value.

Written by hand on numpy/scipy: a nearest-centroid classifier with leave-one-out is a few lines, and the rest is
``scipy.stats.wasserstein_distance``.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def histogram_w1(a: np.ndarray, b: np.ndarray) -> float:
    """1-Wasserstein distance on [0, 1] intensities between two pooled sets of equal-width histograms.

    Args:
        a: float [n, bins] pixel counts per image of one set over [0, 1] (every image has the same number of
            pixels, so summing them pools the pixels).
        b: float [m, bins], the other set.
    """
    bins = a.shape[1]
    centres = (np.arange(bins) + 0.5) / bins
    return float(stats.wasserstein_distance(centres, centres, a.sum(axis=0), b.sum(axis=0)))


def halves_w1(fine: np.ndarray, rng: np.random.Generator) -> float | None:
    """W1 between two seeded random halves of one set (its sampling noise floor); None below 2 images."""
    if len(fine) < 2:
        return None
    order = rng.permutation(len(fine))
    return histogram_w1(fine[order[: len(fine) // 2]], fine[order[len(fine) // 2 :]])


def standardise(features: np.ndarray) -> np.ndarray:
    """z-scores per column of float [n, k], with the pooled mean and std (columns with std 0 become 0).

    Pooling both sets is label-free, so it does not leak labels into the leave-one-out test.
    """
    std = features.std(axis=0)
    return (features - features.mean(axis=0)) / np.where(std > 0, std, 1.0)


def loo_nearest_centroid_accuracy(x: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out balanced accuracy of a nearest-centroid classifier.

    Args:
        x: float [n, k] feature vectors.
        labels: int [n] in {0, 1}, each class with at least 2 members.

    Returns:
        Mean over the two classes of the share of members whose own-class centroid (computed without them) is
        nearer than the other class's centroid (Euclidean); a tie counts as half. 0.5 = chance.
    """
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    sums = np.stack([x[labels == c].sum(axis=0) for c in (0, 1)])
    own = (sums[labels] - x) / (counts[labels] - 1)[:, None]
    other = sums[1 - labels] / counts[1 - labels][:, None]
    d_own, d_other = np.linalg.norm(x - own, axis=1), np.linalg.norm(x - other, axis=1)
    correct = (d_own < d_other) + 0.5 * (d_own == d_other)
    return float(np.mean([correct[labels == c].mean() for c in (0, 1)]))


def permutation_test(x: np.ndarray, labels: np.ndarray, n_permutations: int = 200, seed: int = 0) -> dict[str, float]:
    """The classifier two-sample test: observed accuracy against accuracies with shuffled labels.

    Returns:
        ``{"accuracy", "p_value", "null_mean"}``; p = (1 + #{null >= observed}) / (1 + n_permutations), so the
        smallest possible p is 1 / (1 + n_permutations).
    """
    observed = loo_nearest_centroid_accuracy(x, labels)
    rng = np.random.default_rng(seed)
    null = np.array([loo_nearest_centroid_accuracy(x, rng.permutation(labels)) for _ in range(n_permutations)])
    p_value = (1 + int((null >= observed - 1e-12).sum())) / (1 + n_permutations)
    return {"accuracy": observed, "p_value": p_value, "null_mean": float(null.mean()) if n_permutations else None}


def smd(a: np.ndarray, b: np.ndarray) -> float:
    """(mean a - mean b) / sqrt((var a + var b) / 2), 0 when both sets are constant."""
    pooled = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2) if min(len(a), len(b)) > 1 else 0.0
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else 0.0


__all__ = ["halves_w1", "histogram_w1", "loo_nearest_centroid_accuracy", "permutation_test", "smd", "standardise"]
