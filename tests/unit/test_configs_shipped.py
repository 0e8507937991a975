"""Every config shipped in configs/ validates (a renamed key would otherwise surface only at run time)."""

from pathlib import Path

import pytest

from cotdistill.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_validates(path):
    load_config(path)


def test_there_are_configs():
    assert any(p.name == "quickstart.yaml" for p in CONFIGS)
