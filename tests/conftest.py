"""Shared fixtures: a tiny random model folder (built once per session) and data-dir discovery."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Folder with a 2-layer, hidden-64 random Llama (GQA) and a BPE tokenizer with a ChatML template."""
    from cotdistill.utils.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def data_dir():
    """The real shared data folder; tests needing it are skipped (not failed) only when it is absent."""
    from cotdistill.utils.paths import data_dir as find

    d = find(required=False)
    if d is None:
        pytest.skip("no data dir (set COTDISTILL_DATA_DIR)")
    return d
