import os

# As the CLI does: idle OpenMP threads sleep instead of spinning (set before torch loads). On a busy CPU
# spinning threads made the tests here 10x slower; a value set by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
