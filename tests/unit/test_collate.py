"""PathCollator: masks per chat template (SmolLM2, Qwen2.5, Llama-3, Gemma-3), truncation, views, padding."""

from __future__ import annotations

import pytest
import torch

from cotdistill.errors import CotdistillError
from cotdistill.pathset.collate import PathCollator, build_label_vocab, end_of_turn_text
from cotdistill.utils.tiny import build_tiny_tokenizer

INSTR = 'Reason step by step and finish with a last line of the form "The answer is: <answer>".'
EOT = {"smollm2": "<|im_end|>", "qwen2.5": "<|im_end|>", "llama3": "<|eot_id|>", "gemma3": "<end_of_turn>"}


def _row(i=0, k=3, gold="15"):
    texts = ["12 + 7 = 19 and 19 - 4 = 15.", "Plan: add, then subtract. So 15", "First, compute the total. Hence 15."]
    labels = ["decomposition", "planning", "intuitive"]
    return {
        "question_id": f"q{i}", "question": "Jack had 12 apples, got 7 and ate 4. How many are left?", "gold": gold,
        "kind": "number", "source": "svamp:train", "difficulty": None, "_row": i,
        "paths": [{"teacher": "t", "perspective": labels[j], "label": labels[j], "text": texts[j], "record_key": str(j)}
                  for j in range(k)],
    }


@pytest.fixture(scope="module", params=list(EOT))
def family(request):
    return request.param, build_tiny_tokenizer(chat_template=request.param)


def _collator(tok, **kw):
    kw.setdefault("max_seq_len", 512)
    return PathCollator(tok, student_instruction=INSTR, label_vocab=build_label_vocab([_row()]), **kw)


def test_eot_is_the_end_of_turn_special_token(family):
    name, tok = family
    assert end_of_turn_text(tok) == EOT[name]


def test_masks_per_template(family):
    name, tok = family
    col = _collator(tok)
    row = _row()
    b = col([row])
    prompt_text = tok.apply_chat_template(
        [{"role": "user", "content": f"{row['question']}\n\n{INSTR}"}], tokenize=False, add_generation_prompt=True
    )
    prompt = tok(prompt_text, add_special_tokens=False)["input_ids"]
    eot_id = tok.convert_tokens_to_ids(EOT[name])
    value_ids = tok(" 15", add_special_tokens=False)["input_ids"]
    answer_rows = []
    for i in range(b["input_ids"].size(0)):
        n = int(b["attention_mask"][i].sum())
        ids, labels = b["input_ids"][i], b["labels"][i]
        # the prompt is exactly the templated user turn and never carries loss
        assert ids[: len(prompt)].tolist() == prompt
        assert (labels[: len(prompt)] == -100).all()
        # every completion token is its own label; padding carries none
        assert torch.equal(labels[len(prompt) : n], ids[len(prompt) : n])
        assert (labels[n:] == -100).all() and (b["attention_mask"][i, n:] == 0).all()
        # the end-of-turn token is the last real token and carries loss
        assert ids[n - 1].item() == eot_id and labels[n - 1].item() == eot_id
        # the answer span is exactly the value tokens of " 15", right before eot
        span = ids[b["answer_mask"][i]].tolist()
        assert span == value_ids
        assert tok.decode(span) == " 15"
        pos = b["answer_mask"][i].nonzero().flatten()
        assert pos.max().item() == n - 2 and not b["answer_mask"][i, : len(prompt)].any()
        assert tok.decode(ids[pos.min() - len(tok("\nThe answer is:", add_special_tokens=False)["input_ids"]) : n - 1]) \
            == "\nThe answer is: 15"
        answer_rows.append(span)
    assert all(r == answer_rows[0] for r in answer_rows)  # identical answer ids across the question's paths
    assert b["answer_valid"].all() and b["path_valid"].all() and not b["truncated"].any()


def test_pad_equals_eos_masked_by_attention_not_id():
    tok = build_tiny_tokenizer()  # SmolLM2: pad == <|im_end|>
    assert tok.pad_token_id == tok.eos_token_id
    b = _collator(tok)([_row()])
    lens = b["attention_mask"].sum(-1)
    short = int(lens.argmin())
    n = int(lens[short])
    assert n < b["input_ids"].size(1)  # this row is padded
    assert b["labels"][short, n - 1].item() == tok.eos_token_id  # the real <|im_end|> keeps its label
    assert (b["input_ids"][short, n:] == tok.pad_token_id).all() and (b["labels"][short, n:] == -100).all()
    # right padding: once the mask drops to 0 it stays 0
    am = b["attention_mask"]
    assert (am[:, :-1] >= am[:, 1:]).all()


def test_metadata_keys_and_slots():
    tok = build_tiny_tokenizer()
    vocab = ["decomposition", "intuitive", "planning"]
    col = PathCollator(tok, max_seq_len=512, student_instruction=INSTR, label_vocab=vocab)
    b = col([_row(5, k=3), _row(9, k=2)])
    assert b["input_ids"].shape[0] == 6  # 2 questions padded to K=3
    assert b["question_index"].tolist() == [0, 0, 0, 1, 1, 1]
    assert b["path_valid"].tolist() == [True, True, True, True, True, False]
    assert b["answer_valid"].tolist() == [True, True, True, True, True, False]
    assert (b["labels"][5] == -100).all() and b["attention_mask"][5].sum() > 0  # padding slot: no loss, no NaN
    assert b["path_slot"].tolist()[:5] == [0, 2, 1, 0, 2]
    assert b["question_row"].tolist() == [5, 9]
    assert b["num_paths"].tolist() == [3, 2]
    assert b["answer_mask"].dtype == torch.bool and b["labels"].dtype == torch.long
    with pytest.raises(CotdistillError, match="label"):
        PathCollator(tok, max_seq_len=512, student_instruction=INSTR, label_vocab=["x"])([_row()])


def test_truncation_keeps_prompt_and_suffix():
    tok = build_tiny_tokenizer()
    row = _row()
    row["paths"][0]["text"] = " ".join(f"step {i}: 1 + 1 = 2." for i in range(60))
    full = _collator(tok)([row])
    prompt_len = int((full["labels"][0] == -100).sum() - (full["attention_mask"][0] == 0).sum())
    longest_short = int(full["attention_mask"][1:].sum(-1).max())
    budget = max(prompt_len + 30, longest_short)  # the long path must be cut, the others fit
    assert int(full["attention_mask"][0].sum()) > budget
    for mode in ("middle", "end"):
        b = _collator(tok, max_seq_len=budget, truncation=mode)([row])
        assert b["input_ids"].size(1) == budget
        assert b["truncated"][0] and not b["truncated"][1:].any()
        assert b["answer_valid"][0]
        n = int(b["attention_mask"][0].sum())
        assert tok.decode(b["input_ids"][0, b["answer_mask"][0]]) == " 15"
        assert tok.decode(b["input_ids"][0, : n]).endswith("The answer is: 15<|im_end|>")
        assert torch.equal(b["input_ids"][0, :prompt_len], full["input_ids"][0, :prompt_len])
    mid = _collator(tok, max_seq_len=budget, truncation="middle")([row])
    end = _collator(tok, max_seq_len=budget, truncation="end")([row])
    assert "step 59" in tok.decode(mid["input_ids"][0]) and "step 59" not in tok.decode(end["input_ids"][0])
    right = _collator(tok, max_seq_len=budget, truncation="right")([row])
    assert not right["answer_valid"][0] and right["truncated"][0] and not right["answer_mask"][0].any()


def test_line_scope_and_label_view():
    tok = build_tiny_tokenizer()
    b = _collator(tok, answer_span_scope="line")([_row()])
    assert tok.decode(b["input_ids"][0, b["answer_mask"][0]]) == "\nThe answer is: 15"
    b = _collator(tok, user_prefix="explain: ", label_view_prefix="predict: ")([_row(), _row(1, gold="7")])
    assert b["label_input_ids"].shape[0] == 2
    for q, gold in enumerate(["15", "7"]):
        n = int(b["label_attention_mask"][q].sum())
        text = tok.decode(b["label_input_ids"][q, :n])
        assert "<|im_start|>user\npredict: Jack had" in text
        assert text.endswith(f"<|im_start|>assistant\nThe answer is: {gold}<|im_end|>")
        labelled = b["label_labels"][q][b["label_labels"][q] != -100]
        assert tok.decode(labelled) == f"The answer is: {gold}<|im_end|>"
        assert tok.decode(b["label_input_ids"][q, b["label_answer_mask"][q]]) == f" {gold}"
    assert "<|im_start|>user\nexplain: Jack had" in tok.decode(b["input_ids"][0])


def test_bad_suffix_is_one_line_error():
    with pytest.raises(CotdistillError, match="answer_suffix"):
        PathCollator(build_tiny_tokenizer(), max_seq_len=64, student_instruction="", answer_suffix="no slot",
                     label_vocab=[])
