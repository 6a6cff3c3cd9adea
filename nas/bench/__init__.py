"""Benchmarks of the search strategies beyond one objective (fronts, budgets)."""
