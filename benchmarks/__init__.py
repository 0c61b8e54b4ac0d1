"""Benchmarks and studies of il_tf: each script writes JSON and the Markdown table docs/benchmarks.md shows."""
