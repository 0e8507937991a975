"""MetaNet: MIND's teaching assistant that scores how well each path suits the current student (§2.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MetaNet(nn.Module):
    """Feature alignment → self-attention across a question's paths → several MLP scoring heads.

    Exactly the module of METHODS.md §2.3, with two guards: a question whose paths are all invalid
    attends to everything (its outputs are masked downstream, but MHA must not produce NaN), and the
    perspective embedding can be indexed by the path's label slot instead of its position (``slots``);
    the two coincide when paths are listed in perspective order.

    Args:
        enc_dim: encoder vector size; d_model, n_attn_heads, n_score_heads, dropout: ``mind.metanet.*``.
        n_paths: size of the perspective-embedding table (number of path labels).
        score_activation: ``none`` or ``softplus`` (positive scores for ``select_on=score``).
    """

    def __init__(self, enc_dim: int = 768, d_model: int = 256, n_attn_heads: int = 4, n_score_heads: int = 3,
                 n_paths: int = 8, dropout: float = 0.1, use_self_attention: bool = True,
                 perspective_embedding: bool = True, score_activation: str = "none"):
        super().__init__()
        self.align = nn.Sequential(nn.Linear(enc_dim, d_model), nn.GELU(), nn.Dropout(dropout),
                                   nn.Linear(d_model, d_model), nn.LayerNorm(d_model))  # stage 1
        self.persp = nn.Embedding(n_paths, d_model) if perspective_embedding else None
        self.attn = (nn.MultiheadAttention(d_model, n_attn_heads, dropout=dropout, batch_first=True)
                     if use_self_attention else None)  # stage 2
        self.norm = nn.LayerNorm(d_model)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(d_model, d_model // 2), nn.GELU(), nn.Linear(d_model // 2, 1))
            for _ in range(n_score_heads)
        )  # stage 3
        self.score_activation = score_activation

    def forward(self, emb: torch.Tensor, valid: torch.Tensor, slots: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Score every path of B questions.

        Args:
            emb: [B, K, enc_dim] cached path vectors (anything at invalid slots).
            valid: [B, K] bool, real paths.
            slots: optional [B, K] long label ids for the perspective embedding (default: position k).

        Returns:
            s: [B, K] one score per path (mean over heads); S: [B, K, H] the score matrix.
            Scores at invalid slots are finite but meaningless: mask them downstream.
        """
        h = self.align(emb)
        if self.persp is not None:
            if slots is None:
                h = h + self.persp.weight[None, : h.size(1)]
            else:
                h = h + self.persp(slots.clamp(0, self.persp.num_embeddings - 1))
        if self.attn is not None:
            pad = ~valid.bool()
            # a row with no valid key would softmax over all -inf → NaN; let it attend freely instead
            pad = pad & valid.bool().any(-1, keepdim=True)
            a, _ = self.attn(h, h, h, key_padding_mask=pad, need_weights=False)
            h = self.norm(h + a)
        S = torch.cat([head(h) for head in self.heads], dim=-1)
        if self.score_activation == "softplus":
            S = F.softplus(S)
        return S.mean(-1), S
