"""Stage: teachers."""
