"""Runs read back and compared: run directories and W&B runs, the table across runs, plots, W&B reports.

The layer above ``evaluation`` (accuracies) and ``tracking`` (what a run writes): it reads both.
"""
