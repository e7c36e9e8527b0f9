"""Do paired H&E and IHC slide embeddings align?

For each held-out case: the cosine similarity of its H&E embedding with its own
IHC embedding ("paired"), and the mean cosine with the IHC embeddings of other
patients' cases of the same marker and fold ("shuffled"); their difference is
the case's alignment gap. As the paper, the report gives the means with a
t-interval; hsafast adds a one-sided Wilcoxon signed-rank test that paired
exceeds shuffled, and cross-modal retrieval: how often a case's own IHC is
among the k nearest IHC embeddings of its H&E (recall@k), and the other way
round, beside the chance level k / candidates.

Comparisons stay inside one marker and fold, because each fold's model has its
own embedding space. Other cases of the same patient are left out of the
shuffled set (they may share tissue), but stay among the retrieval candidates.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from hsafast.errors import EvaluationError
from hsafast.evaluation.embeddings import SlideEmbeddings

__all__ = ["AlignmentResult", "MeanInterval", "alignment_analysis", "compare_alignment"]

#: Retrieval depths reported.
RECALL_AT = (1, 5, 10)


@dataclass(frozen=True)
class MeanInterval:
    """A mean with its Student-t interval (the paper's summary of similarities)."""

    mean: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.mean:.3f} ({self.low:.3f} to {self.high:.3f})"


@dataclass(frozen=True)
class AlignmentResult:
    """Per-case similarities, their summaries and retrieval recall."""

    case_ids: tuple[str, ...]
    markers: tuple[str, ...]
    paired: np.ndarray
    shuffled: np.ndarray
    paired_mean: MeanInterval
    shuffled_mean: MeanInterval
    gap_mean: MeanInterval
    p_value: float
    recall: dict[str, dict[int, float]]
    chance: dict[int, float]
    notes: tuple[str, ...] = ()

    @property
    def gap(self) -> np.ndarray:
        return self.paired - self.shuffled


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All pairwise cosine similarities of rows of a and rows of b."""
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return an @ bn.T


def _mean_interval(values: np.ndarray, confidence: float) -> MeanInterval:
    from scipy.stats import t

    mean = float(np.mean(values))
    if len(values) < 2:
        return MeanInterval(mean, math.nan, math.nan)
    half = float(np.std(values, ddof=1) / math.sqrt(len(values)))
    half *= float(t.ppf((1 + confidence) / 2, len(values) - 1))
    return MeanInterval(mean, mean - half, mean + half)


def alignment_analysis(
    embeddings: SlideEmbeddings, *, ks: tuple[int, ...] = RECALL_AT, confidence: float = 0.95
) -> AlignmentResult:
    """Paired vs shuffled cosine similarity and recall@k over the held-out rows."""
    from scipy.stats import wilcoxon

    notes: list[str] = []
    ids: list[str] = []
    markers: list[str] = []
    paired: list[float] = []
    shuffled: list[float] = []
    hits = {"H&E to IHC": {k: 0.0 for k in ks}, "IHC to H&E": {k: 0.0 for k in ks}}
    chance = {k: 0.0 for k in ks}
    ranked = 0
    for marker, fold in embeddings.groups():
        rows = embeddings.rows(marker, fold, "test")
        if len(rows) < 2:
            notes.append(f"{marker}, fold {fold}: one held-out case; no shuffled pair")
            continue
        sim = _cosine(embeddings.he[rows], embeddings.ihc[rows])
        patients = embeddings.patient_ids[rows]
        other = patients[:, None] != patients[None, :]
        lonely = ~other.any(axis=1)
        if lonely.all():
            notes.append(f"{marker}, fold {fold}: every case is of one patient; no shuffled pair")
            continue
        for i in np.flatnonzero(~lonely):
            ids.append(str(embeddings.case_ids[rows[i]]))
            markers.append(marker)
            paired.append(float(sim[i, i]))
            shuffled.append(float(sim[i, other[i]].mean()))
        n = len(rows)
        ranked += n
        # rank of the true partner among all candidates (0 = nearest); ties count against
        he_rank = (sim > np.diag(sim)[:, None]).sum(axis=1)
        ihc_rank = (sim.T > np.diag(sim)[:, None]).sum(axis=1)
        for k in ks:
            hits["H&E to IHC"][k] += float((he_rank < k).sum())
            hits["IHC to H&E"][k] += float((ihc_rank < k).sum())
            chance[k] += min(k, n)  # n cases, each with chance min(k, n) / n
    if not paired:
        raise EvaluationError("no held-out case has an unrelated case to compare with")
    p_arr, s_arr = np.array(paired), np.array(shuffled)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p_value = float(wilcoxon(p_arr, s_arr, alternative="greater").pvalue)
    return AlignmentResult(
        case_ids=tuple(ids),
        markers=tuple(markers),
        paired=p_arr,
        shuffled=s_arr,
        paired_mean=_mean_interval(p_arr, confidence),
        shuffled_mean=_mean_interval(s_arr, confidence),
        gap_mean=_mean_interval(p_arr - s_arr, confidence),
        p_value=p_value,
        recall={d: {k: v / ranked for k, v in r.items()} for d, r in hits.items()},
        chance={k: v / ranked for k, v in chance.items()},
        notes=tuple(notes),
    )


def compare_alignment(new: AlignmentResult, baseline: AlignmentResult) -> float:
    """The paper's test: one-sided Wilcoxon signed-rank that the new model's
    per-case gap exceeds the baseline's, over the cases both analysed."""
    from scipy.stats import wilcoxon

    where = {c: i for i, c in enumerate(baseline.case_ids)}
    common = [(i, where[c]) for i, c in enumerate(new.case_ids) if c in where]
    if len(common) < 2:
        raise EvaluationError("the two alignment analyses share fewer than two cases")
    a = new.gap[[i for i, _ in common]]
    b = baseline.gap[[j for _, j in common]]
    if not np.any(a != b):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(wilcoxon(b, a, alternative="less").pvalue)
