"""Benchmarks: registry and loaders (local data dir or Hub), answer extraction and checking, eval prompts."""
