"""Versioned model registry on disk."""
