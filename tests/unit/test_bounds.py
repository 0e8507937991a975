"""Issue 17 beside the malformed-input table: what needs a live process, a bound socket, a read-only folder or a
successful run to show — generation bounded by the model context, over-long inputs counted, one writer per
folder, run folders claimed, a port in use, a read-only output, over-long store lines."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cotdistill.cli import app
from cotdistill.errors import CotdistillError
from cotdistill.utils.lock import LOCK_NAME, folder_lock
from cotdistill.utils.runfolder import MARKER, claim_folder

Q = '{"id": "short", "question": "Tom has 2 apples and buys 3. How many?", "answer": "5"}\n'


def _cli(args: list[str]) -> tuple[int, str]:
    res = CliRunner().invoke(app, args, env={"TQDM_DISABLE": "1"})
    if isinstance(res.exception, CotdistillError):
        return 2, res.stderr + f"error: {res.exception}\n"
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.stderr


@pytest.fixture(scope="module")
def short_context_model(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with a 160-token context (RoPE runs at any length; only the config says 160)."""
    dst = tmp_path_factory.mktemp("ctx") / "model"
    shutil.copytree(tiny_model_dir, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["max_position_embeddings"] = 160
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


# --------------------------------------------------------------------------- class 6: bounded generation


def test_generation_is_capped_at_the_context(short_context_model):
    from cotdistill.models import generate_batch, load_model_and_tokenizer

    model, tok, _ = load_model_and_tokenizer(str(short_context_model), dtype="float32", device="cpu")
    prompts = ["Tom has 2 apples.", "Tom has 2 apples and buys 3 more, then gives 1 away. How many?"]
    lens = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    gens = generate_batch(model, tok, prompts, max_new_tokens=10**9, eos_ids=[-1])  # no end token: runs to the cap
    room = 160 - max(lens)  # one left-padded batch: the longest prompt bounds every row
    assert [len(g.ids) for g in gens] == [room, room] and {g.finish_reason for g in gens} == {"length"}


def test_a_prompt_filling_the_context_is_not_generated(short_context_model):
    from cotdistill.models import generate_batch, load_model_and_tokenizer

    model, tok, _ = load_model_and_tokenizer(str(short_context_model), dtype="float32", device="cpu")
    gens = generate_batch(model, tok, ["Tom has 2 apples.", "x " * 400, "Ann has 3 pens."], max_new_tokens=4)
    assert [g.finish_reason for g in gens][1] == "over_context" and gens[1].text == "" and gens[1].ids == []
    assert gens[1].prompt_tokens >= 160
    assert all(g.finish_reason in ("stop", "length") and len(g.ids) <= 4 for g in (gens[0], gens[2]))


def test_eval_counts_over_long_questions_instead_of_scoring_them(short_context_model, tmp_path):
    bench = tmp_path / "q.jsonl"
    bench.write_text(Q + json.dumps({"id": "huge", "question": "Tom " * 50_000 + "how many?", "answer": "5"}) + "\n")
    code, err = _cli(["eval", "--model", str(short_context_model), "--benchmarks", f"jsonl:{bench}",
                      "--output", str(tmp_path / "ev"), "--max-new-tokens", "1000000000"])
    assert code == 0, err
    assert "1 of 2 question(s) are longer than the model's context" in err
    summary = json.loads((tmp_path / "ev" / "jsonl-q.summary.json").read_text())
    assert summary["over_context"] == 1 and summary["n"] == 2
    lines = {r["id"]: r for r in map(json.loads, (tmp_path / "ev" / "jsonl-q.jsonl").read_text().splitlines())}
    assert lines["huge"]["finish_reason"] == "over_context" and lines["huge"]["correct"] is False
    assert lines["short"]["n_tokens"] < 160  # the absurd budget was capped at the context


def test_store_line_longer_than_the_bound_is_one_line(tmp_path, monkeypatch):
    import cotdistill.utils.io as io

    monkeypatch.setattr(io, "MAX_LINE_BYTES", 4096)
    (tmp_path / "st").mkdir()
    rec = {"key": "k", "question_id": "q", "question": "x" * 10_000, "gold": "1", "kind": "number",
           "teacher": "t", "perspective": "p", "raw_response": "The answer is: 1", "status": "ok"}
    (tmp_path / "st" / "records.jsonl").write_text(json.dumps(rec) + "\n")
    (tmp_path / "c.yaml").write_text("curate:\n  eval_guard: []\n")
    code, err = _cli(["curate", str(tmp_path / "c.yaml"), "--store", str(tmp_path / "st"), "--out",
                      str(tmp_path / "ds")])
    assert code == 2 and f"{tmp_path}/st/records.jsonl:1: line longer than 4,096 bytes" in err


# --------------------------------------------------------------------------- class 3: one writer per folder

HOLDER = """
import sys, time
from pathlib import Path
from cotdistill.utils.lock import folder_lock
with folder_lock(sys.argv[1], sys.argv[2]):
    Path(sys.argv[3]).write_text("held")
    time.sleep(120)
"""


def _hold(folder: Path, what: str, tmp_path: Path) -> subprocess.Popen:
    flag = tmp_path / "held.flag"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), what, str(flag)])
    for _ in range(300):
        if flag.exists():
            return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("lock holder did not start")


def test_second_eval_on_one_folder_is_refused(tiny_model_dir, tmp_path):
    (tmp_path / "q.jsonl").write_text(Q)
    out = tmp_path / "ev"
    args = ["eval", "--model", str(tiny_model_dir), "--benchmarks", f"jsonl:{tmp_path}/q.jsonl", "--output",
            str(out), "--max-new-tokens", "2"]
    holder = _hold(out, "cotdistill eval", tmp_path)
    try:
        code, err = _cli(args)
    finally:
        holder.kill()
        holder.wait()
    assert code == 2 and f"{out}: another cotdistill eval (pid {holder.pid}) is writing" in err
    assert not list(out.glob("*.jsonl"))
    code, err = _cli(args)  # the holder died: its lock went with it
    assert code == 0, err
    assert len((out / "jsonl-q.jsonl").read_text().splitlines()) == 1 and not (out / LOCK_NAME).exists()


def test_second_run_on_one_run_folder_is_refused(tiny_model_dir, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "records.jsonl").write_text("")
    (tmp_path / "q.jsonl").write_text(Q)
    (tmp_path / "c.yaml").write_text(
        f"run:\n  name: r\n  output_dir: {tmp_path}/runs\ndata:\n  imports:\n    - format: store\n"
        f"      path: {tmp_path}/src\ncurate:\n  eval_guard: []\ntrain:\n  model: {tiny_model_dir}\n"
        f"eval:\n  benchmarks: ['jsonl:{tmp_path}/q.jsonl']\nanalysis:\n  enabled: false\n")
    holder = _hold(tmp_path / "runs" / "r", "cotdistill run", tmp_path)
    try:
        code, err = _cli(["run", str(tmp_path / "c.yaml")])
    finally:
        holder.kill()
        holder.wait()
    assert code == 2 and "another cotdistill run" in err and not (tmp_path / "runs" / "r" / "stages.json").exists()


def test_folder_lock_leaves_the_folder_as_found(tmp_path):
    with folder_lock(tmp_path / "new", "x") as lock:
        assert lock.read_text().strip() == str(os.getpid())
    assert not (tmp_path / "new").exists()  # created for the lock, still empty: removed
    (tmp_path / "old").mkdir()
    with folder_lock(tmp_path / "old", "x"):
        pass
    assert (tmp_path / "old").is_dir() and not list((tmp_path / "old").iterdir())


# --------------------------------------------------------------------------- class 4: run folders


def test_claim_folder(tmp_path):
    assert claim_folder(tmp_path / "a") == tmp_path / "a" and json.loads((tmp_path / "a" / MARKER).read_text())["kind"]
    (tmp_path / "b").mkdir()
    claim_folder(tmp_path / "b")
    assert (tmp_path / "b" / MARKER).is_file()
    (tmp_path / "legacy").mkdir()
    (tmp_path / "legacy" / "stages.json").write_text("{}")
    claim_folder(tmp_path / "legacy")  # a run folder from before the marker
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "config.yaml").write_text("mine")
    with pytest.raises(CotdistillError, match=r"user: run folder: not empty \(config.yaml\)"):
        claim_folder(tmp_path / "user")
    assert sorted(p.name for p in (tmp_path / "user").iterdir()) == ["config.yaml"]
    (tmp_path / "f").write_text("x")
    with pytest.raises(CotdistillError, match="is a file"):
        claim_folder(tmp_path / "f")
    claim_folder(tmp_path / "user", "eval", mark=False)  # results may sit next to the user's data
    (tmp_path / "user" / "summary.json").write_text('{"my": "numbers"}')
    with pytest.raises(CotdistillError, match="holds a summary.json that is not cotdistill's"):
        claim_folder(tmp_path / "user", "eval")
    assert not (tmp_path / "user" / MARKER).exists()


def test_train_refuses_a_user_folder_before_writing(tiny_model_dir, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_trainer import make_dataset, tiny_config

    from cotdistill.train.run import train

    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "notes.txt").write_text("mine")
    with pytest.raises(CotdistillError, match="not a cotdistill run folder"):
        train(tiny_config(tiny_model_dir, tmp_path, report_to=[]), make_dataset(tmp_path / "ds"), tmp_path / "proj")
    assert sorted(p.name for p in (tmp_path / "proj").iterdir()) == ["notes.txt"]


# --------------------------------------------------------------------------- class 8: port in use, read-only output


def test_serve_on_a_port_in_use_fails_before_loading_the_model(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        # the model does not exist: an error about the port proves the port was checked first
        code, err = _cli(["serve", str(tmp_path / "no_model"), "--port", str(port)])
    assert code == 2 and f"127.0.0.1:{port}: cannot listen" in err and "no_model" not in err


def test_read_only_output_is_one_line(tiny_model_dir, tmp_path):
    (tmp_path / "q.jsonl").write_text(Q)
    ro = tmp_path / "ro"
    ro.mkdir()
    as_root = os.geteuid() == 0
    if as_root and shutil.which("chattr") is None:
        pytest.skip("root without chattr: no way to make a folder read-only")
    subprocess.run(["chattr", "+i", str(ro)], check=True) if as_root else ro.chmod(0o555)
    try:
        code, err = _cli(["eval", "--model", str(tiny_model_dir), "--benchmarks", f"jsonl:{tmp_path}/q.jsonl",
                          "--output", str(ro / "ev"), "--max-new-tokens", "2"])
    finally:
        subprocess.run(["chattr", "-i", str(ro)], check=True) if as_root else ro.chmod(0o755)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and f"{ro}/ev: " in lines[0], err
    assert "permission denied" in lines[0] or "not permitted" in lines[0]
