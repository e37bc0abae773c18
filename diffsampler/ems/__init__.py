"""Empirical model statistics (EMS) of DPM-Solver-v3 (arXiv 2310.13268): estimation and file format."""
