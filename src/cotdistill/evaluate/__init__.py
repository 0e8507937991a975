"""Stage: evaluate. Zero-shot greedy evaluation (METHODS.md §5.2) with hf / openai / vllm backends.

``run_eval(model, benchmarks, output_dir, ...)`` writes per-sample JSONL and summaries with a
bootstrap 95% CI and full provenance; re-running resumes.
"""

from cotdistill.evaluate.runner import model_tag, run_eval
from cotdistill.evaluate.scoring import accuracy_summary, bootstrap_ci

__all__ = ["accuracy_summary", "bootstrap_ci", "model_tag", "run_eval"]
