"""Evaluation: labelled-set loaders, metrics, runner, report and CLI."""
