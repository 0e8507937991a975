"""Collation of dual chains of thought (EDIT): a correct and a wrong rationale for one question.

Rows carry ``paths`` (correct) and, aligned with them, ``rejected_paths`` (wrong; each with its own
``answer``), as produced by :meth:`cotdistill.methods.edit.EditMethod.select_paths`. Both sides reuse the
:class:`~cotdistill.train.collate.PathCollator` segments (same prompt, same suffix layout), so the only
differences between a pair are the rationale and the answer value — exactly what the alignment marks.
"""

from __future__ import annotations

from typing import Any

import torch

from cotdistill.methods.edit import key_token_masks
from cotdistill.train.collate import PathCollator


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
