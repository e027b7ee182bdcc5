"""The quality layer: evaluation, pseudo-queries, fusion tuning and model training/adaptation.

It uses only the engine's public methods, typed by ``beto_search.protocols`` (ARCHITECTURE.md):
nothing here imports ``engine.py`` or ``shards``. ``scoring`` is the one scorer (ir_measures) that
``evaluation/``, ``tuning/`` and ``training/``'s self-checks share; ``pseudoqueries`` makes the
label-free queries tuning and ``adapt`` use. ``adapt.py`` is the old import path of
``training/``'s names.
"""
