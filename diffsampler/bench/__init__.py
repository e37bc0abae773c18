"""The benchmark engine: solvers x NFE budgets on the same latents, a resumable result store, tables and plots.

Owns its config (``config``), the cell plan (``plan``), the metric registry (``metric_registry``; the measurements
themselves are ``diffsampler.metrics``), the records (``store``), the run (``runner``, progress by callback) and the
report files (``report``, ``table``, ``plots``).
"""
