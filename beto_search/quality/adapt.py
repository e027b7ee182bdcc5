"""The path ``beto_search.quality.adapt`` of the module ``adapt.py`` was: its names, now in
``beto_search.quality.training`` (``adapt`` in ``training.adapt``, the options in
``training.options``, the loop in ``training.loop``, ...), imported from there on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

# the names ``training`` does not re-export (two are also its submodules' names); every other
# name comes from the training package's own table of where each is defined
_OWN = {
    "adapt": ".training.adapt",
    "distil": ".training.distil",
    "_examples": ".training.adapt",
    "_tsdae_noise": ".training.adapt",
}


def __getattr__(name: str) -> Any:
    module = importlib.import_module(_OWN.get(name, ".training"), __package__)
    try:
        value = getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_OWN, *dir(importlib.import_module(".training", __package__))})
