"""Executors: how trials reach providers (real-time now; batch later)."""
