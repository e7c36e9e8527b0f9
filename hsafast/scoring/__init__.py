"""Slide-scale inference: `Scorer` (score, score_iter, score_many, stream) and its results.

See docs/scoring.md. The pipeline overlaps reading, encoding and pooling; engines live in
`hsafast.engines`, pooling in `hsafast.pooling`, heatmaps in `hsafast.heatmaps`.
"""

from hsafast.scoring.accumulate import SlideInfo
from hsafast.scoring.results import MarkerResult, SlideResult
from hsafast.scoring.scorer import Scorer, ScoringOptions
from hsafast.scoring.stream import SlideStream

__all__ = ["MarkerResult", "Scorer", "ScoringOptions", "SlideInfo", "SlideResult", "SlideStream"]
