"""ML strategies for backtrader."""
