"""The workshop driver: run any stage on a backend and measure what it buys."""
