"""Command-line tools: pccheck-inspect, pccheck-validate, pccheck-bench."""
