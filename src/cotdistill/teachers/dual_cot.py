"""EDIT's dual chains of thought, synthesised as the paper builds them (METHODS.md §4.5, arXiv 2405.19737).

A second synthesis round over the teachers' standard paths already in the store:

- a *correct* standard path gets a CCP request ("the most likely wrong solution, step for step like this one"):
  the reply is stored with role ``rejected`` and ``twin`` = the correct path's record key;
- a *wrong* standard path gets an AHP request ("the correct answer is X; solve it"): the reply is stored with
  role ``chosen`` and ``twin`` = the wrong path's key (which curation keeps as a rejected path when
  ``curate.keep_rejected``).

Curation drops a CCP reply that came out correct and an AHP reply that came out wrong (counted in the data card);
``edit.pairing: twin`` trains on exactly these linked pairs, so the key-token masks mark a minimal flip.
"""

from __future__ import annotations

from typing import Any

from cotdistill.pathset.roles import CHOSEN, REJECTED, STANDARD, role_of_record
from cotdistill.teachers.prompts import build_dual_messages
from cotdistill.teachers.store import RationaleStore, record_key
from cotdistill.utils.io import stable_hash


def plan_dual(config: Any, store: RationaleStore) -> list[Any]:
    """The CCP/AHP requests for every scored standard record of the configured teachers (one per record)."""
    from cotdistill.data.types import Example
    from cotdistill.teachers.backends.base import GenRequest
    from cotdistill.teachers.synthesize import PlannedItem

    syn = config.synthesis
    teachers = {t.name: t for t in config.teachers}
    items: list[PlannedItem] = []
    for rec in store.iter_records(status="ok"):
        t = teachers.get(str(rec.get("teacher")))
        if t is None or role_of_record(rec) != STANDARD or rec.get("correct") is None:
            continue
        kind = "ccp" if rec["correct"] else "ahp"
        solution = (rec.get("raw_response") or "").strip() if kind == "ccp" else ""  # with its answer line
        if kind == "ccp" and not solution:
            continue
        messages = build_dual_messages(kind, rec["question"], answer=str(rec["gold"]), solution=solution,
                                       choices=rec.get("choices"), prompt_version=syn.dual_cot_prompt_version,
                                       system_prompt=syn.system_prompt)
        gen_params = {"temperature": t.temperature, "top_p": t.top_p, "max_new_tokens": t.max_new_tokens}
        prompt_hash = stable_hash(messages)
        key = record_key(question_id=rec["question_id"], backend=t.backend, teacher_model=t.model, perspective=kind,
                         prompt_version=syn.dual_cot_prompt_version, gen_params=gen_params, seed=t.seed,
                         sample_idx=int(rec.get("sample_idx") or 0), prompt_hash=prompt_hash)
        req = GenRequest(key=key, messages=messages, temperature=t.temperature, top_p=t.top_p,
                         max_new_tokens=t.max_new_tokens, seed=int(stable_hash([t.seed, key]), 16) % (2**31))
        record = {
            "key": key, "question_id": rec["question_id"], "question": rec["question"], "gold": rec["gold"],
            "kind": rec["kind"], "choices": rec.get("choices"), "source": rec.get("source"), "teacher": t.name,
            "teacher_model": t.model, "backend": t.backend, "perspective": kind,
            "role": REJECTED if kind == "ccp" else CHOSEN, "twin": rec["key"],
            "sample_idx": int(rec.get("sample_idx") or 0), "prompt": messages,
            "prompt_version": syn.dual_cot_prompt_version, "prompt_hash": prompt_hash,
            "gen_params": {**gen_params, "seed": t.seed, "request_seed": req.seed},
        }
        ex = Example(str(rec["question_id"]), str(rec.get("source") or ""), rec["question"], str(rec["gold"]),
                     rec["kind"], tuple(rec["choices"]) if rec.get("choices") else None)
        items.append(PlannedItem(t.name, req, record, ex))
    return items
