"""Two-process DDP on CPU (gloo) through torchrun: both ranks end with identical weights; rank 0 alone writes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cotdistill.utils.io import read_jsonl

HERE = Path(__file__).parent

_WORKER = """
import os, sys
sys.path.insert(0, {here!r})
import torch
from transformers import TrainerCallback
from test_trainer import tiny_config
from cotdistill.train.run import train

class DumpWeights(TrainerCallback):
    def on_train_end(self, args, state, control, model=None, **kw):
        sd = {{k: v.detach().cpu().clone() for k, v in model.named_parameters() if v.requires_grad}}
        torch.save(sd, os.path.join({out!r}, f"rank{{args.process_index}}.pt"))

cfg = tiny_config({model!r}, __import__("pathlib").Path({out!r}), max_steps=2, grad_accum=1, save_steps=1)
train(cfg, {ds!r}, {run!r}, callbacks=[DumpWeights()])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_ranks_identical(tiny_model_dir, tmp_path):
    from test_trainer import make_dataset

    ds = make_dataset(tmp_path / "ds", n=8)
    run = tmp_path / "run"
    worker = tmp_path / "worker.py"
    worker.write_text(_WORKER.format(here=str(HERE), model=str(tiny_model_dir), out=str(tmp_path), ds=str(ds),
                                     run=str(run)))
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(worker)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = torch.load(tmp_path / "rank0.pt")
    w1 = torch.load(tmp_path / "rank1.pt")
    assert w0.keys() == w1.keys() and len(w0) > 0
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    # training moved the adapter (lora_B starts at zero)
    assert any(v.abs().sum() > 0 for k, v in w0.items() if "lora_B" in k)
    # only rank 0 wrote: one dynamics line per step, checkpoints and the student once
    assert [r["step"] for r in read_jsonl(run / "dynamics.jsonl")] == [1, 2]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-1", "checkpoint-2"]
    assert (run / "student" / "adapter_config.json").is_file()
    import json

    assert json.loads((run / "student" / "cotdistill_train.json").read_text())["world_size"] == 2


@pytest.mark.parametrize("cfgname", ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_accelerate_configs_parse(cfgname):
    import yaml

    cfg = yaml.safe_load((HERE.parents[1] / "configs" / "accelerate" / f"{cfgname}.yaml").read_text())
    assert cfg["distributed_type"] in {"MULTI_GPU", "FSDP", "DEEPSPEED"} and cfg["num_processes"] >= 1
