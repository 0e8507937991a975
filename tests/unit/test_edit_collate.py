"""EDIT data path: wrong paths pair with the most similar correct path; the collator marks key tokens."""

import torch

from cotdistill.methods.edit import pair_dual_cots
from cotdistill.pathset.collate import PathCollator
from cotdistill.pathset.dual import DualCotCollator


def test_pairing_prefers_same_teacher_and_similar_text():
    paths = [
        {"teacher": "a", "text": "5 - 2 = 3 apples are left."},
        {"teacher": "a", "text": "Plan: add then subtract. So 12 + 7 = 19."},
        {"teacher": "b", "text": "5 - 2 = 3 apples are left."},
    ]
    rejected = [{"teacher": "a", "text": "5 + 2 = 7 apples are left.", "answer": "7"}]
    pairs = pair_dual_cots(paths, rejected)
    assert len(pairs) == 1 and pairs[0][0] is paths[0]
    assert pair_dual_cots([], rejected) == []


def test_dual_collator_marks_only_differing_tokens(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = PathCollator(tok, max_seq_len=128, student_instruction="", label_vocab=["a"])
    row = {
        "question_id": "q1", "question": "Jack had 5 apples and ate 2. How many apples are left?", "gold": "3",
        "kind": "number",
        "paths": [{"teacher": "a", "perspective": "p", "label": "a", "text": "5 - 2 = 3"}],
        "rejected_paths": [{"teacher": "a", "perspective": "p", "label": "a", "text": "5 + 2 = 7", "answer": "7"}],
    }
    b = DualCotCollator(base)([row])
    for side in ("chosen", "rejected"):
        assert b[f"{side}_input_ids"].shape == b[f"{side}_key"].shape
        # prompt tokens carry no loss and are never key (the prompt is shared)
        assert not (b[f"{side}_key"] & (b[f"{side}_labels"] == -100) & b[f"{side}_attention_mask"].bool()).any()
    ids_c = b["chosen_input_ids"][0][b["chosen_attention_mask"][0].bool()]
    ids_r = b["rejected_input_ids"][0][b["rejected_attention_mask"][0].bool()]
    key_c = b["chosen_key"][0][: len(ids_c)]
    diff = tok.decode(ids_c[key_c])
    assert "-" in diff and "3" in diff and "+" not in diff
    # tokens outside the key set are identical on both sides (same length here)
    assert len(ids_c) == len(ids_r)
    assert torch.equal(ids_c[~key_c], ids_r[~b["rejected_key"][0][: len(ids_r)]])
