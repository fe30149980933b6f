"""Measuring models: perplexity (and, later, multiple choice and the cost model)."""
