"""PNG figures of the report: ROC curves, confusion matrices, intervals, embedding maps.

matplotlib's Agg backend only (no display needed); each figure is written
under a temporary name and renamed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hsafast._fileio import atomic_path
from hsafast.evaluation.assess import Evaluation
from hsafast.evaluation.bootstrap import Interval
from hsafast.evaluation.embeddings import SlideEmbeddings

__all__ = ["confusion_png", "embedding_map_png", "intervals_png", "roc_png"]

#: One colour per class label, then per mode (colour-blind safe, Okabe-Ito).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def roc_png(
    evaluations: Mapping[str, Evaluation], title: str, path: str | os.PathLike[str]
) -> Path:
    """ROC curves of several models on one task (one-vs-rest per class for > 2 classes)."""
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    styles = ("-", "--", ":", "-.")
    for j, (name, ev) in enumerate(evaluations.items()):
        y_true, _ = ev.predictions.indices()
        proba = ev.predictions.probabilities
        if len(ev.classes) == 2:
            targets = [(ev.classes.index(ev.positive_class or ev.classes[1]), "")]
        else:
            targets = [(c, f" {ev.classes[c]}") for c in range(len(ev.classes))]
        for c, suffix in targets:
            if (y_true == c).all() or (y_true != c).all():
                continue
            fpr, tpr, _ = roc_curve(y_true == c, proba[:, c])
            auc = ev.metrics["auc"]
            label = f"{name}{suffix}" + (f" (AUC {auc.estimate:.2f})" if not suffix else "")
            ax.plot(
                fpr,
                tpr,
                styles[c % len(styles)] if suffix else "-",
                color=PALETTE[j % len(PALETTE)],
                lw=1.6,
                label=label,
            )
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--", label="chance")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=7, frameon=False)
    return _save(fig, path)


def confusion_png(
    evaluations: Mapping[str, Evaluation], title: str, path: str | os.PathLike[str]
) -> Path:
    """One confusion matrix per model side by side: counts with row percentages."""
    plt = _pyplot()
    first = next(iter(evaluations.values()))
    n = len(first.classes)
    fig, axes = plt.subplots(
        1,
        len(evaluations),
        figsize=(0.6 + (1.4 + 1.0 * n) * len(evaluations), 1.3 + n),
        squeeze=False,
    )
    for ax, (name, ev) in zip(axes[0], evaluations.items(), strict=True):
        cm = ev.confusion
        share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                colour = "white" if share[i, j] > 0.6 else "black"
                ax.text(
                    j,
                    i,
                    f"{cm[i, j]}\n{100 * share[i, j]:.0f}%",
                    ha="center",
                    va="center",
                    color=colour,
                    fontsize=9,
                )
        ticks = np.arange(n)
        ax.set_xticks(ticks, ev.classes, rotation=20, ha="right", fontsize=8)
        ax.set_yticks(ticks, ev.classes if ax is axes[0][0] else [""] * n, fontsize=8)
        ax.set(xlabel="predicted", title=name)
    axes[0][0].set_ylabel("reference (IHC)")
    fig.suptitle(title, fontsize=10, y=1.02)
    return _save(fig, path)


def intervals_png(
    rows: Sequence[tuple[str, Interval | tuple[float, float, float]]],
    title: str,
    xlabel: str,
    path: str | os.PathLike[str],
) -> Path:
    """Estimates with their 95% intervals, one row each (a forest plot)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 0.9 + 0.42 * len(rows)))
    for y, (label, value) in enumerate(reversed(rows)):
        est, low, high = (
            (value.estimate, value.low, value.high) if isinstance(value, Interval) else value
        )
        colour = "0.45" if "paper" in label.lower() else PALETTE[0]
        ax.errorbar(est, y, xerr=[[est - low], [high - est]], fmt="o", color=colour, capsize=3)
    ax.set_yticks(range(len(rows)), [r[0] for r in reversed(rows)], fontsize=8)
    ax.set(xlabel=xlabel, title=title, xlim=(0, 1.0))
    ax.grid(axis="x", color="0.9")
    return _save(fig, path)


def embedding_map_png(
    embeddings: SlideEmbeddings,
    marker: str,
    title: str,
    path: str | os.PathLike[str],
    method: str = "umap",
    seed: int = 0,
) -> Path:
    """2-D map of held-out H&E and IHC embeddings, one panel per fold.

    Colour = label, marker shape = stain (circle H&E, triangle IHC), a grey line
    joins the two stains of a case. Each fold is mapped on its own, because each
    fold's model has its own embedding space.
    """
    plt = _pyplot()
    groups = [f for m, f in embeddings.groups() if m == marker]
    fig, axes = plt.subplots(1, len(groups), figsize=(3.0 * len(groups), 3.2), squeeze=False)
    labels = sorted(set(embeddings.labels[embeddings.markers == marker].tolist()))
    for ax, fold in zip(axes[0], groups, strict=True):
        rows = embeddings.rows(marker, fold, "test")
        points = np.vstack([embeddings.he[rows], embeddings.ihc[rows]])
        xy = _project(points, method, seed)
        he_xy, ihc_xy = xy[: len(rows)], xy[len(rows) :]
        for a, b in zip(he_xy, ihc_xy, strict=True):
            ax.plot([a[0], b[0]], [a[1], b[1]], color="0.85", lw=0.6, zorder=1)
        for c, label in enumerate(labels):
            pick = embeddings.labels[rows] == label
            colour = PALETTE[c % len(PALETTE)]
            ax.scatter(
                *he_xy[pick].T, s=16, color=colour, marker="o", zorder=2, label=f"H&E, {label}"
            )
            ax.scatter(
                *ihc_xy[pick].T,
                s=20,
                color=colour,
                marker="^",
                zorder=2,
                facecolors="none",
                label=f"IHC, {label}",
            )
        ax.set(title=f"fold {fold}", xticks=[], yticks=[])
    axes[0][0].legend(fontsize=6, loc="best", frameon=False)
    fig.suptitle(title, fontsize=10, y=1.03)
    return _save(fig, path)


def _project(points: np.ndarray, method: str, seed: int) -> np.ndarray:
    """UMAP (umap-learn) or PCA to two dimensions; tiny sets fall back to PCA."""
    centred = points - points.mean(axis=0)
    if method == "umap" and len(points) >= 6:
        import warnings

        import umap

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # n_jobs overridden by random_state
            reducer = umap.UMAP(
                n_neighbors=min(15, len(points) - 1), random_state=seed, metric="cosine"
            )
            return np.asarray(reducer.fit_transform(centred))
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    return u[:, :2] * s[:2]
