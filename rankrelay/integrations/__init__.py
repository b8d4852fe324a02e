"""Drop-in rerankers for RAG frameworks: any rankrelay spec, spec dict, fallback chain or Reranker inside a
LangChain, LlamaIndex or Haystack pipeline.

- :mod:`rankrelay.integrations.langchain`: ``RankRelayRerank``, a document compressor (``rankrelay[langchain]``)
- :mod:`rankrelay.integrations.llamaindex`: ``RankRelayRerank``, a node postprocessor (``rankrelay[llamaindex]``)
- :mod:`rankrelay.integrations.haystack`: ``RankRelayRanker``, a ranker component (``rankrelay[haystack]``)

Each module imports its framework when it is imported; without it the error names the extra to install.
Documents keep their metadata and gain the keys in :data:`~rankrelay.integrations.common.RERANK_KEYS`
(LangChain, Haystack; LlamaIndex sets ``NodeWithScore.score``).
"""
