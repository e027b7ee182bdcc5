"""Tests of beto_search.backends."""
