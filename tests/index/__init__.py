"""Tests of beto_search.index."""
