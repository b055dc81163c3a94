"""Batch scoring: a whole data set scored on Ray with a proof for every row (`zkserve score`)."""

from serve.scoring.runner import ScoreOptions, ScoreSummary, score
from serve.scoring.verify_job import JobReport, verify_job

__all__ = ["JobReport", "ScoreOptions", "ScoreSummary", "score", "verify_job"]
