"""Embedding: typed encoder specs, backbones, engines (torch / onnxruntime), the saved
fine-tuned model format, the cross-encoder model and the embedding cache. Imports only
:mod:`shopee_match.data` (and the base helpers)."""
