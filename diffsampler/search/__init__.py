"""Learned sigma grids: GITS (arXiv 2405.11326) and LD3 (arXiv 2405.15506), written as schedule files."""
