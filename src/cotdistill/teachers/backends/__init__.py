"""Teacher backends behind one small interface (see :mod:`.base`); this module owns the name -> class table.

Implementations import :mod:`.base` only, and are imported here lazily (vLLM and transformers are heavy), so
there is no import circle between the interface and its implementations.
"""

from __future__ import annotations

import importlib
from typing import Any

from cotdistill.errors import CotdistillError
from cotdistill.teachers.backends.base import GenRequest, GenResult, TeacherBackend

#: ``teachers[].backend`` -> (module, class); each class has ``from_config(teacher, where=...)``
BACKENDS: dict[str, tuple[str, str]] = {
    "openai": ("cotdistill.teachers.backends.openai_backend", "OpenAITeacherBackend"),
    "transformers": ("cotdistill.teachers.backends.transformers_backend", "TransformersBackend"),
    "vllm": ("cotdistill.teachers.backends.vllm_backend", "VLLMBackend"),
}


def make_backend(teacher: Any, *, where: str = "config") -> TeacherBackend:
    """Build the backend for a ``TeacherConfig``. ``where`` names the config entry in error messages."""
    if teacher.backend not in BACKENDS:
        raise CotdistillError(f"{where}: backend: unknown backend '{teacher.backend}' (one of {', '.join(BACKENDS)})")
    module, cls = BACKENDS[teacher.backend]
    return getattr(importlib.import_module(module), cls).from_config(teacher, where=where)


__all__ = ["BACKENDS", "GenRequest", "GenResult", "TeacherBackend", "make_backend"]
