"""User-facing errors: each carries one sentence the CLI prints before exiting 1."""


class BetoSearchError(Exception):
    """Base of every error a user can cause or fix; anything else is a bug."""


class ModelLoadError(BetoSearchError):
    """The encoder model could not be loaded."""


class ManifestMismatchError(BetoSearchError):
    """An encoder or setting disagrees with what the index was created with."""


class IndexNotFoundError(BetoSearchError):
    """The index folder does not exist or holds no index."""


class IndexCorruptError(BetoSearchError):
    """The index database cannot be read."""


class LockTimeoutError(BetoSearchError):
    """Another process holds the index's write lock."""


class InputError(BetoSearchError):
    """A bad argument or input file."""


class StorageError(BetoSearchError):
    """Writing to disk failed (disk full, permissions, I/O error)."""
