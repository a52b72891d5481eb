"""Models trained here for the benchmarks (small enough to train on a CPU in a minute or two)."""
