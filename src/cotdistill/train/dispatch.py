"""``train_method``: the entry point that knows the methods made of several training runs (MoDE, EDIT).

Kept apart from :mod:`cotdistill.train.run` (one training run) and :mod:`cotdistill.train.mode` (MoDE's experts
and composition, which call :func:`~cotdistill.train.run.train`), so neither of those imports the other back.
"""

from __future__ import annotations

import os
from pathlib import Path

from cotdistill.config import Config
from cotdistill.train.mode import train_mode
from cotdistill.train.run import _is_main_process, train


def train_method(config: Config, dataset_dir: str | os.PathLike, run_dir: str | os.PathLike) -> Path:
    """Train ``config.method``, including the methods made of several training runs.

    - ``mode``: one Std-CoT expert per unit, then LoraHub composition (:mod:`cotdistill.train.mode`).
    - ``edit`` with ``edit.init_from = std_cot``: a Std-CoT run in ``run_dir/edit_init`` first, then KRSL
      continues training its adapter (full fine-tuning: its weights).
    - everything else: :func:`train`.
    """
    run_dir = Path(run_dir)
    if _is_main_process():  # before the first sub-run writes into it (edit_init/, experts/)
        from cotdistill.utils.runfolder import claim_folder

        claim_folder(run_dir)
    if config.method == "mode":
        return train_mode(config, dataset_dir, run_dir)
    if config.method == "edit" and config.edit.init_from == "std_cot":
        init_cfg = config.model_copy(deep=True)
        init_cfg.method = "std_cot"
        init_cfg.std_cot = init_cfg.std_cot.model_copy(update={"train": dict(config.edit.train)})
        init_dir = train(init_cfg, dataset_dir, run_dir / "edit_init")
        cfg = config.model_copy(deep=True)
        tc = config.effective_train("edit")
        if tc.finetune == "lora":
            cfg.edit = cfg.edit.model_copy(update={"train": dict(config.edit.train) | {"init_adapter": str(init_dir)}})
        else:
            cfg.edit = cfg.edit.model_copy(update={"train": dict(config.edit.train) | {"model": str(init_dir)}})
        return train(cfg, dataset_dir, run_dir)
    return train(config, dataset_dir, run_dir)
