"""Batched generation and log-prob scoring of a causal LM: shared by pairs, evaluation and reports."""
