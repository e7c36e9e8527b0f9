"""Percentile bootstrap intervals that resample patients (or cases).

Slides of one patient are not independent: they share tissue, scanner and
pathologist. Resampling slides as if they were treats a patient with four
slides as four independent observations and gives intervals that are too
narrow; resampling patients (all of a patient's cases together, the cluster
bootstrap) keeps that dependence. Resampling cases is offered too, because it
is what the HistoStainAlign paper did.

A resample is drawn as multinomial counts per patient and expanded to case
weights, then every metric is evaluated on all resamples at once
(:func:`hsafast.evaluation.metrics.weighted_metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from hsafast.errors import InvalidParameterError

__all__ = ["Interval", "bootstrap", "percentile_interval", "resample_weights"]

#: Resamples evaluated per block: bounds memory to block x cases weights.
BLOCK = 250


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile bootstrap interval.

    ``valid`` counts the resamples on which the statistic was defined (AUC is
    not when a resample holds one class only); the interval uses those.
    """

    estimate: float
    low: float
    high: float
    confidence: float
    valid: int
    resamples: int

    def __str__(self) -> str:
        if math.isnan(self.estimate):
            return "undefined"
        if math.isnan(self.low):
            return f"{self.estimate:.3f}"
        return f"{self.estimate:.3f} ({self.low:.3f}-{self.high:.3f})"


def cluster_index(groups: Sequence[str]) -> np.ndarray:
    """Group labels -> integer index per item (0..G-1, in sorted group order)."""
    _, index = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    return index.astype(np.int64)


def resample_weights(
    clusters: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Case weights of ``n_resamples`` cluster-bootstrap draws (n_resamples x N).

    Each draw takes as many clusters as there are, with replacement, and every
    case weighs as often as its cluster was drawn.
    """
    n_clusters = int(clusters.max()) + 1
    # draws of cluster indices, counted per row in one bincount (a multinomial draw each)
    drawn = rng.integers(0, n_clusters, size=(n_resamples, n_clusters))
    drawn += np.arange(n_resamples)[:, None] * n_clusters
    counts = np.bincount(drawn.ravel(), minlength=n_resamples * n_clusters)
    return counts.reshape(n_resamples, n_clusters)[:, clusters].astype(np.float64)


def bootstrap(
    statistic: Callable[[np.ndarray], dict[str, np.ndarray]],
    clusters: np.ndarray,
    n_resamples: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Each statistic over ``n_resamples`` weight rows, evaluated block by block.

    ``statistic`` maps a (B x N) weight matrix to named arrays of length B.
    """
    if not (isinstance(n_resamples, int) and n_resamples >= 1):
        raise InvalidParameterError(f"n_resamples must be a positive integer, got {n_resamples}")
    rng = np.random.default_rng(seed)
    blocks: dict[str, list[np.ndarray]] = {}
    for start in range(0, n_resamples, BLOCK):
        weights = resample_weights(clusters, min(BLOCK, n_resamples - start), rng)
        for name, values in statistic(weights).items():
            blocks.setdefault(name, []).append(values)
    return {name: np.concatenate(parts) for name, parts in blocks.items()}


def percentile_interval(estimate: float, samples: np.ndarray, confidence: float) -> Interval:
    """Percentile interval of the finite ``samples`` around ``estimate``."""
    finite = samples[np.isfinite(samples)]
    tail = 100.0 * (1.0 - confidence) / 2.0
    if len(finite) == 0 or not math.isfinite(estimate):
        low = high = math.nan
    else:
        low, high = (float(v) for v in np.percentile(finite, [tail, 100.0 - tail]))
    return Interval(
        estimate=float(estimate),
        low=low,
        high=high,
        confidence=confidence,
        valid=len(finite),
        resamples=len(samples),
    )
