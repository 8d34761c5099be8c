"""Orchestration: a matrix's pending runs scheduled on an executor, each group of runs taken
from data to result rows (``pipeline``), claimed, logged and written (``jobs``)."""
