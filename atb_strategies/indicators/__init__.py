"""backtrader indicators backed by registry models."""
