"""Evaluation: first-try and after-reflection accuracy, tables and result files."""

from r3exp.evaluation.accuracy import EvalResult, evaluate, format_table, save_results

__all__ = ["EvalResult", "evaluate", "format_table", "save_results"]
