"""Leaderboards, statistics, figures and the report page, read from results folders."""
