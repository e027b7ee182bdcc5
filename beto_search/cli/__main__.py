"""``python -m beto_search.cli``: the same command line as ``beto-search``."""

from . import main

main()
