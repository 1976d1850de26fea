"""Seed-compatible import paths for the model registry."""
