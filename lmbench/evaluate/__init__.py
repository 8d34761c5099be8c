"""Scoring: radial errors and detection rates, the paper's metric code, conformal uncertainty
regions, and the health verdict of each run."""
