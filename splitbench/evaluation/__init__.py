"""Evaluation of split pipelines: the three SC2 metrics, written as result records."""

from splitbench.evaluation.evaluate import EvaluationResult, evaluate, evaluate_classification
from splitbench.evaluation.records import append_record, versions

__all__ = ["EvaluationResult", "append_record", "evaluate", "evaluate_classification", "versions"]
