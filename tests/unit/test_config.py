"""Config validation: unknown keys and bad values are one-line errors naming file and dotted key."""

import pytest

from cotdistill.config import Config, dump_config, load_config
from cotdistill.errors import CotdistillError


def test_defaults_validate():
    cfg = Config()
    assert cfg.mind.beta == 0.5 and cfg.train.lr == 1e-5 and cfg.compact.beta_difficulty == 0.5
    assert "\n" not in str(CotdistillError("a\nb"))


@pytest.mark.parametrize(
    "yaml_text, needle",
    [
        ("train:\n  lrr: 1\n", "train.lrr: unknown key"),
        ("mind:\n  beta: 2\n", "mind.beta:"),
        ("train:\n  lora:\n    r: x\n", "train.lora.r:"),
        ("method: nope\n", "method:"),
        ("teachers:\n  - {name: a, model: m}\n  - {name: a, model: m}\n", "duplicate teacher"),
        ("mind:\n  train: {lrr: 1}\n", "mind.train: unknown key"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("train: [1, \n", "invalid YAML"),
    ],
)
def test_bad_configs_are_one_line(tmp_path, yaml_text, needle):
    p = tmp_path / "c.yaml"
    p.write_text(yaml_text)
    with pytest.raises(CotdistillError) as e:
        load_config(p)
    msg = str(e.value)
    assert needle in msg and str(p) in msg and "\n" not in msg


def test_method_train_override_and_roundtrip(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("method: mind\ntrain: {lr: 0.001}\nmind:\n  train: {lr: 0.01, epochs: 1}\n")
    cfg = load_config(p)
    eff = cfg.effective_train()
    assert eff.lr == 0.01 and eff.epochs == 1 and cfg.train.lr == 0.001
    p2 = tmp_path / "d.yaml"
    p2.write_text(dump_config(cfg))
    assert load_config(p2) == cfg


def test_cli_validate_exit_codes(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lrr: 1\n")
    r = subprocess.run([sys.executable, "-m", "cotdistill", "validate", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "train.lrr" in r.stderr
    good = tmp_path / "good.yaml"
    good.write_text("method: std_cot\n")
    r = subprocess.run([sys.executable, "-m", "cotdistill", "validate", str(good)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_atomic_write_gives_normal_file_mode(tmp_path):
    import os

    from cotdistill.utils.io import atomic_write_text

    p = tmp_path / "x.txt"
    atomic_write_text(p, "hi")
    umask = os.umask(0)
    os.umask(umask)
    assert p.read_text() == "hi" and (p.stat().st_mode & 0o777) == (0o666 & ~umask)
