"""Tests of the command line (beto_search.cli): commands, messages, bad inputs."""
