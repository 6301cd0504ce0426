"""Side-by-side benchmark of brick_agent and os-brick (see tools/bench_compare.py)."""
