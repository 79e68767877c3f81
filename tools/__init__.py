"""Command-line tools: pccheck-inspect (checkpoint inspection) and pccheck-bench (benchmarks)."""
