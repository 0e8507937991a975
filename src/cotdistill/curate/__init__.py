"""Stage: curate."""
