"""LLM rerankers over any OpenAI-compatible chat API: pointwise judgements and listwise (RankGPT) sliding
windows; the chat client, templates and token budgets they share live in :mod:`.chat`.
"""
