"""Behaviour of MIND on the tiny model: corrupted paths are ranked lowest after warm-up and lose weight.

The student first learns the clean paths a little (so shuffled-token paths have a higher CE), then
``prepare`` runs the real pipeline: packaged MiniLM vectors, L0 with the training collator, MetaNet warm-up.
"""

import random

import pytest
import torch

from cotdistill.config import Config
from cotdistill.methods.losses import sequence_ce
from cotdistill.methods.mind import MindMethod

import cotdistill.pathset.collate as collate  # noqa: E402  (a move must fail loudly, not skip)

LABELS = ["analogy", "decomposition", "intuitive", "planning"]


def _rows(n=8, seed=0):
    rng = random.Random(seed)
    rows, corrupt = [], []
    for i in range(n):
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        texts = [
            f"First, compute the total. Then {a + b} - {b} = {a}. So {a} apples are left.",
            f"Plan: subtract the eaten apples. So {a + b} - {b} = {a}.",
            f"Jack had {a + b} apples. He ate {b}. Therefore {a} are left.",
            f"Let x be the apples left. Hence x = {a + b} - {b} = {a}.",
        ]
        c = i % len(LABELS)  # every label gets corrupted on some question: the label alone tells nothing
        words = texts[c].split()
        rng.shuffle(words)
        texts[c] = " ".join(words[::-1])
        corrupt.append(c)
        rows.append({"question_id": f"q{i}", "question": f"Jack had {a + b} apples and ate {b}. How many are left?",
                     "gold": str(a),
                     "paths": [{"label": lab, "teacher": "t", "perspective": lab, "text": t}
                               for lab, t in zip(LABELS, texts)]})
    return rows, corrupt


def _spearman(x, y):
    rx, ry = torch.argsort(torch.argsort(x)).float(), torch.argsort(torch.argsort(y)).float()
    return float(torch.corrcoef(torch.stack([rx, ry]))[0, 1])


@pytest.fixture
def one_thread():
    # tiny ops on a shared 2-core box: two threads mostly wait for each other
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_corrupted_paths_ranked_lowest_and_lose_weight(tiny_model_dir, tmp_path, one_thread):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rows, corrupt = _rows()
    coll = collate.PathCollator(tok, max_seq_len=256, student_instruction="", answer_suffix="The answer is: {a}",
                                label_vocab=LABELS)
    # the student learns the clean paths a little
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for step in range(24):
        i = step % len(rows)
        clean = dict(rows[i], paths=[p for k, p in enumerate(rows[i]["paths"]) if k != corrupt[i]])
        b = coll([clean])
        loss = sequence_ce(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                           b["labels"]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    cfg = Config()
    cfg.mind.warmup_epochs = 25
    cfg.mind.tau_meta = 0.25
    cfg.mind.meta_lr_warmup = 2e-3
    cfg.mind.meta_warmup_accum = 2
    cfg.mind.meta_lr_joint = 1e-3
    cfg.mind.meta_joint_accum = 2
    cfg.mind.beta = 0.0  # keep every path so the corrupted ones' α can be watched shrinking
    method = MindMethod(cfg)
    method.prepare(rows, tok, model, collator=coll, run_dir=tmp_path)
    assert method.phase == "joint" and (tmp_path / "mind" / "prepare.pt").is_file()
    assert method.warmup_log[-1]["L_meta"] < method.warmup_log[0]["L_meta"]

    # L0: the corrupted path is the worst of its question
    l0 = method.l0
    assert all(int(l0[i].argmax()) == corrupt[i] for i in range(len(rows)))
    method.metanet.eval()
    with torch.no_grad():
        s, _ = method.metanet(method.emb, ~torch.isnan(l0), torch.arange(len(LABELS)).expand_as(l0))
    method.metanet.train()
    assert _spearman(s.flatten(), -l0.flatten()) > 0.5
    assert sum(int(s[i].argmin()) == corrupt[i] for i in range(len(rows))) >= 7

    # joint phase: α of the corrupted paths starts below uniform and shrinks further
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    per_epoch = []
    for _ in range(4):
        alphas = []
        for i in range(len(rows)):
            b = coll([dict(rows[i], _row=i)])
            _, sig = method.training_step(model, b, lambda loss: loss.backward())
            opt.step()
            opt.zero_grad()
            alphas.append(sig["alpha"][LABELS[corrupt[i]]])
        per_epoch.append(sum(alphas) / len(alphas))
    assert per_epoch[0] < 1 / len(LABELS)
    assert per_epoch[-1] < per_epoch[0]
    assert method.meta_steps == 4 * len(rows) // 2

    # a second prepare reuses the cached L0 and warmed-up MetaNet instead of warming up again
    again = MindMethod(cfg)
    again.prepare(rows, tok, model, collator=coll, run_dir=tmp_path)
    assert torch.equal(again.l0.nan_to_num(-1), l0.nan_to_num(-1))
