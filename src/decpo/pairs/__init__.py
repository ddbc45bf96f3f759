"""Preference pairs built from a model's own samples, ranked by a scorer, and their cache."""
