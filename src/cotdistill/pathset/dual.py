"""Collation of dual chains of thought (EDIT): a correct and a wrong rationale for one question.

Rows carry ``paths`` (correct) and, aligned with them, ``rejected_paths`` (wrong; each with its own
``answer``), as produced by :meth:`cotdistill.methods.edit.EditMethod.select_paths`. Both sides reuse the
:class:`~cotdistill.pathset.collate.PathCollator` segments (same prompt, same suffix layout), so the only
differences between a pair are the rationale and the answer value — exactly what the alignment marks.
"""

from __future__ import annotations

from typing import Any

import torch

from rapidfuzz.distance import Levenshtein

from cotdistill.pathset.collate import PathCollator


def key_token_masks(chosen_ids: list[int], rejected_ids: list[int]) -> tuple[list[bool], list[bool]]:
    """Mark the key tokens of a dual CoT by token-level Levenshtein alignment.

    Chosen tokens are labelled by the chosen→rejected edit operations, rejected tokens by the
    rejected→chosen operations; replaced or deleted tokens are key, inserts are dropped (they name a
    position in the *other* sequence).

    Returns:
        (chosen_key [len(chosen_ids)], rejected_key [len(rejected_ids)]) boolean lists.
    """
    chosen_key = [False] * len(chosen_ids)
    rejected_key = [False] * len(rejected_ids)
    for op in Levenshtein.editops(chosen_ids, rejected_ids):
        if op.tag in ("replace", "delete"):
            chosen_key[op.src_pos] = True
    for op in Levenshtein.editops(rejected_ids, chosen_ids):
        if op.tag in ("replace", "delete"):
            rejected_key[op.src_pos] = True
    return chosen_key, rejected_key


def pair_dual_cots(paths: list[dict], rejected: list[dict]) -> list[tuple[dict, dict]]:
    """Pair every wrong path with the most similar correct one (same teacher preferred).

    Similarity is rapidfuzz's normalised Indel similarity of the rationale texts, so pairs share most steps.

    Returns:
        [(chosen, rejected)] in the order of ``rejected`` (empty when there is no correct path).
    """
    from rapidfuzz.distance import Indel

    pairs = []
    for r in rejected:
        same = [p for p in paths if p.get("teacher") == r.get("teacher")] or paths
        if not same:
            continue
        best = max(same, key=lambda p: Indel.normalized_similarity(p["text"], r["text"]))
        pairs.append((best, r))
    return pairs


def pair_dual_cots_by_twin(paths: list[dict], rejected: list[dict]) -> list[tuple[dict, dict]]:
    """EDIT's dual CoTs as synthesis built them: every rejected path whose ``twin`` names a correct path of the
    question (by record key), paired with it. A chosen (AHP) path may also name its rejected twin.

    Returns:
        [(chosen, rejected)] in the order of ``rejected``; rejected paths without a linked twin are left out.
    """
    by_key = {p.get("record_key"): p for p in paths}
    twin_of = {p.get("twin"): p for p in paths if p.get("twin")}  # chosen → its wrong original
    pairs = []
    for r in rejected:
        c = by_key.get(r.get("twin")) if r.get("twin") else None
        c = c or twin_of.get(r.get("record_key"))
        if c is not None:
            pairs.append((c, r))
    return pairs


class DualCotCollator:
    """Rows → ``chosen_*`` / ``rejected_*`` tensors [P, T] (P = pairs in the micro-step) with key-token masks.

    Keys: ``{side}_input_ids``, ``{side}_attention_mask``, ``{side}_labels``, ``{side}_key`` (bool, True on
    tokens the minimum-edit alignment marks as differing), for side in chosen / rejected.
    """

    def __init__(self, base: PathCollator):
        self.base = base

    def _encode(self, prompt: list[int], row: dict, path: dict, answer: str) -> dict[str, Any]:
        head, value = self.base.suffix_segments(answer)
        return self.base.encode(prompt, self.base._ids(path["text"]), head, value)

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        chosen, rejected = [], []
        for row in rows:
            prompt = self.base.prompt_ids(row)
            for c, r in zip(row["paths"], row["rejected_paths"]):
                ce = self._encode(prompt, row, c, str(row["gold"]))
                re_ = self._encode(prompt, row, r, str(r.get("answer") or ""))
                ck, rk = key_token_masks(ce["ids"], re_["ids"])
                ce["key"], re_["key"] = ck, rk
                chosen.append(ce)
                rejected.append(re_)
        out: dict[str, torch.Tensor] = {}
        for side, seqs in (("chosen", chosen), ("rejected", rejected)):
            padded = self.base._pad(seqs)
            key = torch.zeros_like(padded["attention_mask"], dtype=torch.bool)
            for i, s in enumerate(seqs):
                key[i, : len(s["key"])] = torch.tensor(s["key"], dtype=torch.bool)
            out.update({f"{side}_{k}": padded[k] for k in ("input_ids", "attention_mask", "labels")})
            out[f"{side}_key"] = key
        return out
