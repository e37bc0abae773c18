"""The benchmark: solvers x NFE budgets on the same latents, a resumable result store, tables and plots."""
