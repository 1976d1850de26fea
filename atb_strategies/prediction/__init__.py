"""Prediction engine, configuration and registry (the seed project's import paths)."""
