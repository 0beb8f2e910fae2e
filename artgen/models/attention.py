"""Self-attention for CLIP's transformer blocks without nn.MultiheadAttention's detour through a copied weight.

Why: with gradients on, a batch-first nn.MultiheadAttention transposes its input to sequence-first and projects
that transposed view with F.linear; torch then multiplies it by a copy of the projection weight expanded once per
token (a batched matmul). On the CPU that copy and matmul took a quarter of a VQGAN+CLIP step (ViT-B-32, 32
cutouts, bf16 autocast). :func:`use_batch_first_attention` makes a model's self-attention modules project the
batch-first input as it is and attend with ``scaled_dot_product_attention``: the same computation, rounded
differently, so only runs whose arithmetic changes anyway (bf16 / fp16 autocast) use it and fp32 pictures stay
what they were.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn


class BatchFirstSelfAttention(nn.MultiheadAttention):
    """An nn.MultiheadAttention (same parameters and state-dict keys) whose plain batch-first self-attention
    projects without transposing; any other use (cross-attention, padding masks, attention weights asked for, a
    boolean mask, dropout while training) runs the original code."""

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Any]:
        if not self._direct(query, key, value, key_padding_mask, need_weights, attn_mask):
            return super().forward(query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights,
                                   is_causal)
        batch, length, width = query.shape
        qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                                  is_causal=is_causal and attn_mask is None)
        return self.out_proj(attended.transpose(1, 2).reshape(batch, length, width)), None

    def _direct(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None,
                need_weights: bool, attn_mask: Tensor | None) -> bool:
        return (self.batch_first and query is key and key is value and query.dim() == 3
                and self._qkv_same_embed_dim and self.in_proj_bias is not None and self.bias_k is None
                and not self.add_zero_attn and key_padding_mask is None and not need_weights
                and (attn_mask is None or attn_mask.is_floating_point())
                and (not self.training or self.dropout == 0.0))


def use_batch_first_attention(model: nn.Module) -> int:
    """Switch every batch-first nn.MultiheadAttention of ``model`` to :class:`BatchFirstSelfAttention` in place;
    returns how many were switched."""
    switched = 0
    for module in model.modules():
        if type(module) is nn.MultiheadAttention and module.batch_first:
            module.__class__ = BatchFirstSelfAttention
            switched += 1
    return switched
