"""Deprecated location: model loading moved to :mod:`cotdistill.models` (it serves every stage)."""

from cotdistill.models import *  # noqa: F401,F403
from cotdistill.models import load_model_and_tokenizer, resolve_model_path  # noqa: F401
