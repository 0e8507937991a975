"""COMPACT (METHODS.md §3): metrics (MI adaptability, graph consensus, difficulty), fusion, loss."""

from cotdistill.methods.compact.method import CompactMethod

METHOD = CompactMethod

__all__ = ["METHOD", "CompactMethod"]
