"""Distillation methods: one file (or small folder) per method behind the :class:`Method` interface."""
