"""Local models: cross-encoders, bi-encoders and ColBERT on this machine, with what makes them fast and safe.

The shared forward pass (:mod:`.model`), long documents as passages (:mod:`.passages`), length buckets,
latency budgets, the score cache, and the runtimes a model can run on (torch, ONNX Runtime, OpenVINO;
``runtime="auto"`` picks one per CPU).
"""
