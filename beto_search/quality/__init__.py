"""The quality layer: evaluation, pseudo-queries, fusion tuning and model training/adaptation.

It uses only the engine's public methods, typed by ``beto_search.protocols`` (ARCHITECTURE.md).
"""
