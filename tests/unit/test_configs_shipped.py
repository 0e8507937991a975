"""Every config shipped in configs/ validates (a renamed key would otherwise surface only at run time)."""

from pathlib import Path

import pytest

from cotdistill.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


# files a user brings or an earlier step writes: `validate` names them on this machine, by design
NEEDS_FILES = {"compare_gpu.yaml": "gpqa_diamond.csv: file not found",
               "mind_qwen7b.yaml": "curate.difficulty.hard_ids_file"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_validates(path):
    """`cotdistill validate` on it exits 0 (keys, files, model, the roles each method and comparison row needs),
    or names exactly the file it needs from the user or from a first step."""
    from typer.testing import CliRunner

    from cotdistill.cli import app
    from cotdistill.methods.registry import missing_roles

    cfg = load_config(path)
    rows = [cfg, *(cfg.for_row(r) for r in cfg.compare.methods if "compare" in cfg.model_fields_set)]
    assert not [p for c in rows if (p := missing_roles(c))]
    res = CliRunner().invoke(app, ["validate", str(path)])
    if path.name in NEEDS_FILES:
        assert res.exit_code != 0 and NEEDS_FILES[path.name] in str(res.exception), res.exception
    else:
        assert res.exit_code == 0, res.exception


def test_no_shipped_config_tunes_on_a_test_question():
    """Issue 13: a settings search (compare.tune) scores dev splits only; every comparison table states its
    reference row and never uses eval.limit on a test split for a search."""
    from cotdistill.compare import check_tuning

    for path in CONFIGS:
        cfg = load_config(path)
        check_tuning(cfg)  # raises for a search on test questions
        if cfg.compare.tune:
            assert all(b.endswith(":dev") for b in cfg.eval.benchmarks), path


def test_there_are_configs():
    assert any(p.name == "quickstart.yaml" for p in CONFIGS)
