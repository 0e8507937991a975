"""Find a method by name: ``cotdistill.methods.<name>`` exposes its class as the module attribute ``METHOD``.

Imports are lazy so that loading one method never pulls in another's dependencies (e.g. MIND's encoder).
"""

from __future__ import annotations

import importlib
from typing import Any

from cotdistill.errors import CotdistillError
from cotdistill.methods.base import Method

# name -> module; every module defines ``METHOD = <Method subclass>``.
METHOD_MODULES = {
    "std_cot": "cotdistill.methods.std_cot",
    "sbs": "cotdistill.methods.sbs",
    "mcc_kd": "cotdistill.methods.mcc_kd",
    "mind": "cotdistill.methods.mind",
    "compact": "cotdistill.methods.compact",
    "mode": "cotdistill.methods.mode",
    "edit": "cotdistill.methods.edit",
}


def method_class(name: str) -> type[Method]:
    """The Method subclass registered under ``name`` (raises a one-line error if unknown or not installed)."""
    module_name = METHOD_MODULES.get(name, f"cotdistill.methods.{name}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise CotdistillError(f"config: method: {name!r} is not available (no module {module_name})") from None
        raise
    cls = getattr(module, "METHOD", None)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise CotdistillError(f"config: method: {module_name} has no METHOD = <Method subclass>")
    return cls


def student_user_prefix(config: Any) -> str:
    """The user-turn prefix the distilled student must be evaluated with ("" for most methods).

    SbS trains two tasks told apart by a prefix; without one at test time the student answers neither task
    (measured: "The answer is: 10" for every SVAMP question). ``sbs.eval_task`` picks the task.
    """
    if config.method != "sbs":
        return ""
    return config.sbs.rationale_prefix if config.sbs.eval_task == "explain" else config.sbs.label_prefix


def get_method(name: str, config: Any) -> Method:
    """Instantiate the method ``name`` with the whole run :class:`~cotdistill.config.Config`."""
    return method_class(name)(config)


def planned_role_kinds(config: Any) -> set[str] | None:
    """Role kinds the config's data stages will produce (:mod:`cotdistill.pathset.roles`), or None when that
    cannot be known before the data exists (a ``store`` import, or no data source: a dataset given to ``train``).
    ``multi`` = perspective or teacher paths; ``twin`` = EDIT's synthesised dual pairs."""
    if not config.data.imports and not config.teachers:
        return None
    kinds: set[str] = set()
    for spec in config.data.imports:
        if spec.format == "store":
            return None
        kinds |= {"eit": {"perspective"}}.get(spec.format, {"standard"})
        if spec.format == "eit" and "human" in (spec.options.get("teachers") or []):
            kinds.add("teacher")
    if config.teachers:
        if config.data.standard_path == "plain":
            kinds.add("standard")
        if any(p != "standard" for p in config.data.perspectives):
            kinds.add("perspective")
    if config.curate.keep_rejected:
        kinds.add("rejected")
    if config.teachers and config.synthesis.dual_cot:  # "twin": CCP/AHP-linked pairs (public sets have none)
        kinds |= {"rejected", "twin"}
    if kinds & {"perspective", "teacher"}:
        kinds.add("multi")
    return kinds


def missing_roles(config: Any) -> str | None:
    """One line naming what ``config.method`` needs and the config's data will not hold, else None (validate
    time; a comparison checks each row's config, ``Config.for_row``)."""
    from cotdistill.pathset.roles import METHOD_ROLES

    kinds = planned_role_kinds(config)
    if kinds is None:
        return None
    name = config.method
    need = get_method(name, config).needed_roles() - kinds
    if not need:
        return None
    have = ", ".join(sorted(kinds - {"multi"})) or "none"
    return (f"method {name} trains on {METHOD_ROLES.get(name, 'its paths')}; the configured data "
            f"(data.imports, teachers, curate.keep_rejected) yields no {'/'.join(sorted(need))} paths "
            f"(it yields: {have})")
