"""Model latency benchmarks (random weights, bf16 on CUDA): one module per model family."""
