"""Continuous-batching greedy decode (evaluate/backends/continuous.py) equals static ``generate`` batches.

The model is the tiny random Llama with large random weights, in bf16: there a row's greedy text depends on its
batch (kernel choice by row count, padding in attention), so a loop that mixed rows differently from the static
batches would give other tokens for some prompts. Rows end at different steps (an extra end token), the last
batch is smaller than the others, and the buffers are made to grow and move often (``_GROW`` = 3).
"""

from __future__ import annotations

import pytest
import torch

from cotdistill.evaluate.backends import continuous as C

QUESTIONS = [f"Question {i}: " + " ".join(["apples", "train", "7", "answer", "compute", "total"][: i % 6 + 1])
             * (1 + i % 3) for i in range(11)]


@pytest.fixture(scope="module")
def wild_bf16(tiny_model_dir):
    """(model, tokenizer, rendered prompts longest first, their ids) with prompt-dependent greedy outputs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
    m.eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
             for q in QUESTIONS]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
    return m, tok, [texts[i] for i in order], [ids[i] for i in order]


@pytest.fixture(scope="module")
def two_end_tokens(wild_bf16):
    """The end token plus a token the model often generates, so that rows end at different steps."""
    from collections import Counter

    m, tok, texts, _ = wild_bf16
    seen = Counter(t for ids, _ in _static(m, tok, texts, len(texts), 24, [tok.eos_token_id]) for t in ids)
    return [tok.eos_token_id, seen.most_common(3)[2][0]]


def _static(m, tok, texts, batch_size, max_new_tokens, eos):
    from cotdistill.models import generate_batch

    out = []
    for s in range(0, len(texts), batch_size):
        out += [(g.ids, g.finish_reason)
                for g in generate_batch(m, tok, texts[s:s + batch_size], max_new_tokens=max_new_tokens, eos_ids=eos)]
    return out


def _continuous(m, ids, batch_size, max_new_tokens, eos, pad_id):
    got = {}
    for i, new, fin in C.greedy_continuous(m, ids, max_new_tokens=max_new_tokens, eos_ids=eos,
                                           batch_size=batch_size, pad_id=pad_id):
        assert i not in got
        got[i] = (new, fin)
    return [got[i] for i in range(len(ids))]


@pytest.mark.parametrize("batch_size", [1, 3, 4, 11, 16])
def test_equals_static_generate_batches(wild_bf16, two_end_tokens, monkeypatch, batch_size):
    m, tok, texts, ids = wild_bf16
    monkeypatch.setattr(C, "_GROW", 3)
    eos = two_end_tokens
    ref = _static(m, tok, texts, batch_size, 24, eos)
    assert len({len(r[0]) for r in ref}) > 2 and {f for _, f in ref} == {"stop", "length"}
    assert _continuous(m, ids, batch_size, 24, eos, tok.pad_token_id) == ref
    assert m.config._attn_implementation == "sdpa"  # restored after the loop


def test_first_token_end_and_one_token_budget(wild_bf16):
    m, tok, texts, ids = wild_bf16
    ref = _static(m, tok, texts, 4, 1, [tok.eos_token_id])
    assert _continuous(m, ids, 4, 1, [tok.eos_token_id], tok.pad_token_id) == ref
    first = ref[5][0][0]  # prompt 5's first token ends it (and every other row starting with it)
    ref_end = _static(m, tok, texts, 4, 8, [first])
    assert ref_end[5] == ([], "stop")
    assert _continuous(m, ids, 4, 8, [first], tok.pad_token_id) == ref_end


def test_attention_restored_when_stopped_early(wild_bf16):
    m, tok, _, ids = wild_bf16
    gen = C.greedy_continuous(m, ids, max_new_tokens=6, eos_ids=[tok.eos_token_id], batch_size=3,
                              pad_id=tok.pad_token_id)
    next(gen)
    assert m.config._attn_implementation == C.ATTENTION_NAME
    gen.close()
    assert m.config._attn_implementation == "sdpa"


def test_hf_backend_continuous_equals_static(tiny_model_dir, wild_bf16, two_end_tokens):
    from cotdistill.evaluate.backends import EvalRequest
    from cotdistill.evaluate.backends.hf import HFBackend

    m, tok, _, _ = wild_bf16
    be = HFBackend(str(tiny_model_dir), model_obj=m, tokenizer=tok, batch_size=3)
    assert be.continuous
    be.eos_ids = two_end_tokens
    reqs = [EvalRequest(f"q{i}", [{"role": "user", "content": q}]) for i, q in enumerate(QUESTIONS)]
    chunks = list(be.generate(reqs, max_new_tokens=20))
    assert [len(c) for c in chunks] == [3, 3, 3, 2]  # yielded in groups of batch_size
    be.continuous = False
    static = {o.key: o for c in be.generate(reqs, max_new_tokens=20) for o in c}
    cont = {o.key: o for c in chunks for o in c}
    assert cont.keys() == static.keys() == {r.key for r in reqs}
    for k in cont:
        a, b = cont[k], static[k]
        assert (a.text, a.n_tokens, a.finish_reason, a.extra) == (b.text, b.n_tokens, b.finish_reason, b.extra)


def test_falls_back_where_not_exact(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from cotdistill.evaluate.backends.hf import HFBackend

    eager = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager")
    assert not C.supports_continuous(eager)
    sdpa = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert C.supports_continuous(sdpa)
    sdpa.config.sliding_window, sdpa.config.layer_types = 4, ["sliding_attention"] * sdpa.config.num_hidden_layers
    assert not C.supports_continuous(sdpa)  # sliding-window layers: the plain buffer would be wrong
    from transformers import AutoTokenizer

    be = HFBackend(str(tiny_model_dir), model_obj=eager, tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir))
    assert not be.continuous


def test_bounded_by_the_context_as_static_batches_are(tiny_model_dir, wild_bf16, two_end_tokens, monkeypatch):
    """An absurd budget stops at the context per static batch, and a prompt filling the context is counted
    over_context, not decoded (regression: the continuous loop sized its mask by max_new_tokens and asked for
    40 GB when an eval was given --max-new-tokens 1e9)."""
    from cotdistill.evaluate.backends import EvalRequest
    from cotdistill.evaluate.backends.hf import HFBackend

    m, tok, _, ids = wild_bf16
    monkeypatch.setattr(m.config, "max_position_embeddings", len(ids[0]) + 7)  # room: 7 tokens after the longest
    be = HFBackend(str(tiny_model_dir), model_obj=m, tokenizer=tok, batch_size=3)
    be.eos_ids = two_end_tokens
    reqs = [EvalRequest(f"q{i}", [{"role": "user", "content": q}]) for i, q in enumerate(QUESTIONS)]
    reqs.append(EvalRequest("huge", [{"role": "user", "content": "apples " * 200}]))
    cont = {o.key: o for c in be.generate(reqs, max_new_tokens=10**9) for o in c}
    be.continuous = False
    static = {o.key: o for c in be.generate(reqs, max_new_tokens=10**9) for o in c}
    assert cont.keys() == static.keys() == {r.key for r in reqs}
    assert cont["huge"].finish_reason == static["huge"].finish_reason == "over_context"
    assert cont["huge"].text == "" and cont["huge"].n_tokens == 0
    for k in cont:
        a, b = cont[k], static[k]
        assert (a.text, a.n_tokens, a.finish_reason) == (b.text, b.n_tokens, b.finish_reason), k
    room = {k: len(ids[0]) + 7 - o.extra["prompt_tokens"] for k, o in cont.items() if k != "huge"}
    assert all(o.n_tokens <= room[k] for k, o in cont.items() if k != "huge")
    assert any(o.finish_reason == "length" for o in cont.values())  # some row ran into the context
