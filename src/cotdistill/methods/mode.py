"""MoDE-CoTD (LREC-COLING 2024): one LoRA expert per data slice, composed LoraHub-style (METHODS.md §4.4).

The experts are ordinary Std-CoT LoRA adapters, each trained on one perspective's (or teacher's) paths with
the student frozen (see :mod:`cotdistill.train.mode`). Composition follows LoraHub's
``lora-mixing/lorahub/algorithm.py``:

    θ(w) = Σ_i w_i θ_i   applied key by key, so lora_A and lora_B mix separately and the update is
                          (Σ_i w_i B_i)(Σ_i w_i A_i), not Σ_i w_i B_i A_i (reproduced on purpose)
    w*   = argmin_{w ∈ [−bound, bound]^E}  mean dev CE(θ(w)) + l1 · mean|w|      (nevergrad NGOpt, w₀ = 0)

This module holds the pure parts (composition and the gradient-free search); it knows nothing of training.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from cotdistill.errors import CotdistillError
from cotdistill.methods.base import Method
from cotdistill.pathset.roles import multi_paths


def compose_lora_states(
    states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """Key-by-key weighted sum of adapter state dicts, Σ_i w_i θ_i[key].

    Args:
        states: E adapter state dicts with identical keys and shapes (e.g. ``lora_A``: [r, d_in], ``lora_B``: [d_out, r]).
        weights: E mixing weights.

    Returns:
        The composed state dict (fp32 accumulation, cast back to each tensor's dtype).
    """
    if len(states) != len(weights) or not states:
        raise ValueError(f"{len(states)} expert states but {len(weights)} weights")
    keys = list(states[0])
    for i, s in enumerate(states[1:], 1):
        if list(s) != keys:
            raise ValueError(f"expert {i} has different adapter keys than expert 0 (different LoRA configs?)")
    out = {}
    for k in keys:
        acc = torch.zeros_like(states[0][k], dtype=torch.float32)
        for s, w in zip(states, weights):
            acc += float(w) * s[k].float()
        out[k] = acc.to(states[0][k].dtype)
    return out


def search_mixing_weights(
    loss_fn: Callable[[np.ndarray], float],
    n_experts: int,
    *,
    budget: int = 40,
    l1: float = 0.05,
    bound: float = 3.0,
    seed: int = 42,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Gradient-free search of LoraHub mixing weights with nevergrad's NGOpt.

    Args:
        loss_fn: maps weights [E] to the dev loss of the composed model (without the penalty).
        n_experts: E.
        budget: number of loss evaluations.
        l1: weight of the mean-absolute-value penalty.
        bound: weights live in [−bound, bound].
        seed: optimizer seed.
        progress: optional callback (evaluation index, objective).

    Returns:
        (best weights [E], history of {"w", "loss", "objective"} per evaluation).
    """
    import nevergrad as ng

    param = ng.p.Array(init=np.zeros(n_experts)).set_bounds(-bound, bound)
    param.random_state = np.random.RandomState(seed)
    opt = ng.optimizers.NGOpt(parametrization=param, budget=budget)
    history: list[dict] = []
    for i in range(budget):
        cand = opt.ask()
        w = np.asarray(cand.value, dtype=np.float64)
        loss = float(loss_fn(w))
        objective = loss + l1 * float(np.mean(np.abs(w)))
        opt.tell(cand, objective)
        history.append({"w": w.tolist(), "loss": loss, "objective": objective})
        if progress is not None:
            progress(i, objective)
    best = min(history, key=lambda h: h["objective"])
    return np.asarray(best["w"]), history


class ModeMethod(Method):
    """MoDE's entry in the method registry: its role needs and expert paths. Training is not one run of the
    trainer but experts + composition (:func:`cotdistill.train.mode.train_mode`, via ``train_method``)."""

    name = "mode"

    def needed_roles(self) -> set[str]:
        return {"standard", "multi"}  # experts on the multi-path set, composition on the standard paths

    def select_paths(self, row: dict) -> list[dict]:
        """The experts' paths: the perspective/teacher paths (each expert then keeps its unit's)."""
        return multi_paths(row["paths"])

    def compute_loss(self, model, batch):
        raise CotdistillError("method: mode trains experts and composes them: use cotdistill.train.dispatch."
                              "train_method (the CLI and pipeline do)")


METHOD = ModeMethod
