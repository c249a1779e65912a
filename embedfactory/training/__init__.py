"""Embedding training: contrastive loss, batching, trainer and sentence-transformers export."""
