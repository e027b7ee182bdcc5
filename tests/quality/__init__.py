"""Tests of beto_search.quality."""
