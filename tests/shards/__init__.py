"""Tests of beto_search.shards."""
