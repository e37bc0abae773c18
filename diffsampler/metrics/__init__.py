"""Metrics: Frechet distances (FID and pixel space), error against reference ODE solutions."""
