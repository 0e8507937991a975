"""Collation of path-dataset rows into the micro-step batch of :mod:`cotdistill.methods.base` (METHODS.md §0.1–§0.7).

Every sequence is built per segment so no BPE merge crosses a boundary and the answer ids are identical
across a question's paths::

    ids(prompt) + ids(rationale) + ids("\\nThe answer is:") + ids(" " + gold) + ids(eot)

* ``prompt`` = the student's chat template over one user turn (``question`` + ``data.student_instruction``)
  with the generation prompt (the template's default system turn included).
* ``eot`` = the template's end-of-turn marker for an assistant message, derived by rendering a conversation
  and taking what follows the assistant content up to and including its first special token (``<|im_end|>``,
  ``<|eot_id|>``, ``<end_of_turn>``). The newline the template writes after it is not part of the target: the
  model never generates it (decoding stops at the end-of-turn token), so it would only add a trivial label.
* Labels are ``-100`` on the prompt and on padding; padding is decided by the attention mask, never by token id
  (SmolLM2's pad id equals its end-of-turn id, which must carry loss).

**Truncation** (``max_seq_len``): the prompt is always kept whole and the suffix (answer line + eot) survives
whenever it fits. By default (``truncation="middle"``) the rationale loses tokens from its middle, keeping its
opening and its final steps (which lead to the answer), so ``answer_valid`` stays True. ``"end"`` keeps the
rationale's beginning instead; ``"right"`` is plain right truncation of the whole sequence (the answer span may
be cut, then ``answer_valid`` is False). A sequence whose prompt + suffix alone exceed the budget is right-cut.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch

from cotdistill.data.prompts import eval_user_prompt
from cotdistill.data.types import Example
from cotdistill.errors import CotdistillError

IGNORE_INDEX = -100  # label of positions without loss (torch cross_entropy's default ignore_index)
_SENTINEL = "XQZSENTINELQZX"


def build_label_vocab(rows: Iterable[dict]) -> list[str]:
    """Sorted list of the path labels present in the dataset (``path_slot`` indexes into it)."""
    labels = set()
    for row in rows:
        for p in row["paths"]:
            labels.add(p["label"])
    return sorted(labels)


def end_of_turn_text(tokenizer) -> str:
    """The text the chat template writes right after an assistant message, cut after its first special token.

    Falls back to the eos token when the tokenizer has no chat template or the tail holds no special token.
    """
    eos = tokenizer.eos_token or ""
    if not getattr(tokenizer, "chat_template", None):
        return eos
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _SENTINEL}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False)
    tail = text[text.rindex(_SENTINEL) + len(_SENTINEL):]
    specials = sorted({t for t in tokenizer.all_special_tokens if t} | _added_special(tokenizer), key=len, reverse=True)
    best = None
    for tok in specials:
        i = tail.find(tok)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, tok)
    if best is None:
        return eos if not tail.strip() else tail.rstrip()
    return tail[: best[0] + len(best[1])]


def _added_special(tokenizer) -> set[str]:
    dec = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return {t.content for t in dec.values() if getattr(t, "special", False)}


def split_answer_suffix(answer_suffix: str) -> tuple[str, str]:
    """Split ``"The answer is: {a}"`` into the line head ``"The answer is:"`` and the value template ``" {a}"``."""
    if "{a}" not in answer_suffix:
        raise CotdistillError(f"config: data.answer_suffix: must contain '{{a}}' (got {answer_suffix!r})")
    head, rest = answer_suffix.split("{a}", 1)
    stripped = head.rstrip(" ")
    return stripped, head[len(stripped):] + "{a}" + rest


class PathCollator:
    """Turn a list of Q path-dataset rows into one micro-step batch (keys and shapes: ``methods/base.py``).

    Args:
        tokenizer: the student's tokenizer (must have a chat template for chat students).
        max_seq_len: token budget per sequence (see module docstring for truncation).
        student_instruction: appended to the question in the user turn (may be empty).
        answer_suffix: ``data.answer_suffix``, e.g. ``"The answer is: {a}"``.
        label_vocab: path labels; ``path_slot`` is the index of a path's label here.
        answer_span_scope: ``value`` = the answer-value tokens; ``line`` = the whole suffix line.
        truncation: ``middle`` (default), ``end`` or ``right``.
        user_prefix: text opening the user turn (SbS ``explain: ``).
        label_view_prefix: if not None, also emit the SbS label view per question, keys
            ``label_input_ids``/``label_attention_mask``/``label_labels``/``label_answer_mask`` [Q, T'],
            target ``"The answer is: {a}" + eot`` after a prompt opened with this prefix.
        pad_paths: pad every question to the micro-step's largest K with invalid slots (``path_valid`` False)
            so methods can view the batch as [Q, K, T].
        share_prompt: ``train.share_prompt``: mark every row as allowed to share its prompt with the other
            rows of its question in one packed forward (key ``share_prompt``; see ``methods/packing.py``).

    Extra keys always present: ``truncated`` [N] bool (the rationale lost tokens), ``num_paths`` [Q] long,
    ``prompt_len`` [N] long (prompt tokens at the start of the row), ``share_prompt`` [N] bool.
    """

    def __init__(
        self,
        tokenizer,
        *,
        max_seq_len: int,
        student_instruction: str,
        answer_suffix: str = "The answer is: {a}",
        label_vocab: Sequence[str],
        answer_span_scope: Literal["value", "line"] = "value",
        truncation: Literal["middle", "end", "right"] = "middle",
        user_prefix: str = "",
        label_view_prefix: str | None = None,
        pad_paths: bool = True,
        share_prompt: bool = False,
    ):
        self.tok = tokenizer
        self.max_seq_len = int(max_seq_len)
        self.instruction = student_instruction or ""
        self.head, self.value_tmpl = split_answer_suffix(answer_suffix)
        self.label_vocab = list(label_vocab)
        self._slot = {lab: i for i, lab in enumerate(self.label_vocab)}
        self.scope = answer_span_scope
        self.truncation = truncation
        self.user_prefix = user_prefix
        self.label_view_prefix = label_view_prefix
        self.pad_paths = pad_paths
        self.share_prompt = bool(share_prompt)
        self.eot_text = end_of_turn_text(tokenizer)
        self.eot_ids = self._ids(self.eot_text)
        # pad id only fills the tensor; padding is told apart by attention_mask
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    # ------------------------------------------------------------------ segments
    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"] if text else []

    def user_content(self, row: dict, prefix: str = "") -> str:
        """The user turn: ``prefix`` + the evaluation prompt (question, lettered options if any, instruction).

        Uses :func:`cotdistill.data.prompts.eval_user_prompt`, so training and evaluation prompts match.
        """
        choices = tuple(row["choices"]) if row.get("choices") else None
        ex = Example(
            id=str(row.get("question_id", "")), benchmark=str(row.get("source", "")), question=row["question"],
            answer=str(row["gold"]), kind=row.get("kind") or "number", choices=choices,
        )
        return prefix + eval_user_prompt(ex, self.instruction)

    def prompt_ids(self, row: dict, prefix: str = "") -> list[int]:
        """ids of the chat-templated user turn with the generation prompt (template's own bos/system)."""
        content = self.user_content(row, prefix)
        if getattr(self.tok, "chat_template", None):
            text = self.tok.apply_chat_template(
                [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
            )
            return self._ids(text)
        return self._ids(content + "\n")

    def suffix_segments(self, gold: str, *, newline: bool = True) -> tuple[list[int], list[int]]:
        """(ids of ``"\\nThe answer is:"``, ids of ``" " + gold``) — identical for every path of a question."""
        head = ("\n" if newline else "") + self.head
        return self._ids(head), self._ids(self.value_tmpl.replace("{a}", str(gold)))

    def encode(self, prompt: list[int], rationale: list[int], head: list[int], value: list[int]) -> dict[str, Any]:
        """Assemble one sequence with its labels and answer mask, truncating to ``max_seq_len``.

        Returns dict(ids, labels, answer_mask: list[bool], answer_valid, truncated, prompt_len).
        """
        budget = self.max_seq_len
        suffix_len = len(head) + len(value) + len(self.eot_ids)
        truncated = False
        if self.truncation != "right" and len(prompt) + len(rationale) + suffix_len > budget:
            keep = max(0, budget - len(prompt) - suffix_len)
            if keep < len(rationale):
                truncated = True
                if self.truncation == "middle":
                    front = keep // 2
                    rationale = rationale[:front] + (rationale[len(rationale) - (keep - front):] if keep - front else [])
                else:
                    rationale = rationale[:keep]
        completion = rationale + head + value + self.eot_ids
        span_start = len(prompt) + len(rationale) + (0 if self.scope == "line" else len(head))
        span_end = len(prompt) + len(rationale) + len(head) + len(value)
        ids = prompt + completion
        labels = [IGNORE_INDEX] * len(prompt) + completion
        if len(ids) > budget:  # plain right cut (truncation="right", or the prompt+suffix alone do not fit)
            truncated = truncated or len(prompt) + len(rationale) > budget
            ids, labels = ids[:budget], labels[:budget]
        answer_valid = span_end <= len(ids) and span_end > span_start
        amask = [span_start <= i < span_end for i in range(len(ids))]
        return {"ids": ids, "labels": labels, "answer_mask": amask, "answer_valid": answer_valid, "truncated": truncated,
                "prompt_len": min(len(prompt), len(ids))}

    # ------------------------------------------------------------------ batch
    def _pad(self, seqs: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        t = max(len(s["ids"]) for s in seqs)
        n = len(seqs)
        input_ids = torch.full((n, t), self.pad_id, dtype=torch.long)
        attn = torch.zeros((n, t), dtype=torch.long)
        labels = torch.full((n, t), IGNORE_INDEX, dtype=torch.long)
        amask = torch.zeros((n, t), dtype=torch.bool)
        for i, s in enumerate(seqs):
            L = len(s["ids"])  # right padding (§0.7): real tokens first
            input_ids[i, :L] = torch.tensor(s["ids"], dtype=torch.long)
            attn[i, :L] = 1
            labels[i, :L] = torch.tensor(s["labels"], dtype=torch.long)
            amask[i, :L] = torch.tensor(s["answer_mask"], dtype=torch.bool)
        return {"input_ids": input_ids, "attention_mask": attn, "labels": labels, "answer_mask": amask}

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """Collate Q rows (each with ``paths``; optional ``_row`` = dataset index) into the batch contract."""
        seqs: list[dict[str, Any]] = []
        qidx, slots, pvalid, label_views = [], [], [], []
        kmax = max(len(r["paths"]) for r in rows)
        for q, row in enumerate(rows):
            if not row["paths"]:
                raise CotdistillError(f"dataset: row {row.get('question_id')}: paths: empty")
            prompt = self.prompt_ids(row, self.user_prefix)
            head, value = self.suffix_segments(row["gold"])
            row_seqs = []
            for p in row["paths"]:
                if p["label"] not in self._slot:
                    raise CotdistillError(f"dataset: row {row.get('question_id')}: paths.label: unknown {p['label']!r}")
                row_seqs.append(self.encode(prompt, self._ids(p["text"]), head, value))
                slots.append(self._slot[p["label"]])
            n_real = len(row_seqs)
            if self.pad_paths:
                for _ in range(kmax - n_real):  # padding slot: a copy with no loss (avoids all-masked rows)
                    dummy = dict(row_seqs[0])
                    dummy["labels"] = [IGNORE_INDEX] * len(dummy["ids"])
                    dummy["answer_valid"] = False
                    row_seqs.append(dummy)
                    slots.append(0)
            seqs.extend(row_seqs)
            pvalid.extend([True] * n_real + [False] * (len(row_seqs) - n_real))
            qidx.extend([q] * len(row_seqs))
            if self.label_view_prefix is not None:
                lhead, lvalue = self.suffix_segments(row["gold"], newline=False)
                label_views.append(self.encode(self.prompt_ids(row, self.label_view_prefix), [], lhead, lvalue))
        batch = self._pad(seqs)
        assert bool((batch["attention_mask"][:, :-1] >= batch["attention_mask"][:, 1:]).all()), "right padding"
        batch["answer_valid"] = torch.tensor([s["answer_valid"] for s in seqs], dtype=torch.bool) & torch.tensor(pvalid)
        batch["path_valid"] = torch.tensor(pvalid, dtype=torch.bool)
        batch["truncated"] = torch.tensor([s["truncated"] for s in seqs], dtype=torch.bool)
        batch["question_index"] = torch.tensor(qidx, dtype=torch.long)
        batch["path_slot"] = torch.tensor(slots, dtype=torch.long)
        batch["question_row"] = torch.tensor([int(r.get("_row", -1)) for r in rows], dtype=torch.long)
        batch["num_paths"] = torch.tensor([len(r["paths"]) for r in rows], dtype=torch.long)
        batch["prompt_len"] = torch.tensor([s["prompt_len"] for s in seqs], dtype=torch.long)
        batch["share_prompt"] = torch.full((len(seqs),), self.share_prompt, dtype=torch.bool)
        if label_views:
            lv = self._pad(label_views)
            for k, v in lv.items():
                batch[f"label_{k}"] = v
        return batch
