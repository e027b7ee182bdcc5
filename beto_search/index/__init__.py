"""The index core: one index folder's SQLite store, manifest, vector cache, write lock, and the
collaborators that write (indexer, reembed), read (searcher) and look after it (maintenance).

Nothing here imports the engine, shards, quality, server or cli layers (ARCHITECTURE.md, checked by
``lint-imports``).
"""
