"""Teacher backends behind one small interface (see :mod:`.base`)."""

from cotdistill.teachers.backends.base import GenRequest, GenResult, TeacherBackend, make_backend

__all__ = ["GenRequest", "GenResult", "TeacherBackend", "make_backend"]
