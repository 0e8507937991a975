"""Stage: evaluate."""
