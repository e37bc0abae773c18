"""Empirical model statistics (EMS) of DPM-Solver-v3 (arXiv 2310.13268): estimation (``estimate``, ``moments``),
the resumable ``compute-ems`` run (``run``) and its settings (``config``), and the file format with its loader
and prepare hook (``format``). The solver's math is ``diffsampler.solvers.dpm_solver_v3``."""
