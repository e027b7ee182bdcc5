# faiss ships SWIG-generated stubs that lag its API (no SearchParametersHNSW, downcast_index loses
# the concrete type): for mypy, faiss is untyped. mypy_path in pyproject.toml puts this first.
from typing import Any

def __getattr__(name: str) -> Any: ...
