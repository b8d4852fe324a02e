"""Rerankers made of rerankers: fallback chains with circuit breakers, cascades, A/B splits, and the shared
lifetime (:mod:`.composite`) that warms up and closes every part.
"""
