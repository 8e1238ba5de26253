"""Multi-head attention whose output projection is a factorized chain.

``nn.MultiheadAttention`` never calls its ``out_proj``: ``F.multi_head_attention_forward`` reads the
weight directly, so replacing the submodule would be ignored.  :class:`AttentionOutProj` takes the
attention's input projections (the same parameters), runs the attention itself with public torch ops
(``F.scaled_dot_product_attention``, or an explicit softmax when the weights are asked for) and calls
``out_proj`` (any module, e.g. a ``FactorizedLinear``) on the result.  With the dense ``out_proj`` it
returns what the original module returns, for ``batch_first`` either way, unbatched inputs, padding and
attention masks, ``need_weights`` and ``average_attn_weights``.  Attentions with ``bias_k``/``bias_v`` or
``add_zero_attn`` are not supported (:func:`attention_unsupported_reason`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from automtd._errors import ConfigError

__all__ = ["AttentionOutProj", "attention_unsupported_reason"]


def attention_unsupported_reason(mha: nn.MultiheadAttention) -> str | None:
    """Why the ``out_proj`` of ``mha`` cannot be factorized, or None."""
    if mha.bias_k is not None or mha.bias_v is not None:
        return "out_proj of a MultiheadAttention with bias_k/bias_v is not decomposed"
    if mha.add_zero_attn:
        return "out_proj of a MultiheadAttention with add_zero_attn is not decomposed"
    return None


def _as_float_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    if mask is None or mask.is_floating_point():
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))


class AttentionOutProj(nn.Module):
    """``nn.MultiheadAttention`` (same call signature and outputs) with ``out_proj`` any module."""

    def __init__(self, mha: nn.MultiheadAttention, out_proj: nn.Module) -> None:
        super().__init__()
        reason = attention_unsupported_reason(mha)
        if reason is not None:
            raise ConfigError(f"{reason}; leave this layer out of the plan")
        self.embed_dim = int(mha.embed_dim)
        self.num_heads = int(mha.num_heads)
        self.head_dim = self.embed_dim // self.num_heads
        self.dropout = float(mha.dropout)
        self.batch_first = bool(mha.batch_first)
        self.packed = mha.in_proj_weight is not None  # torch packs q, k, v when their dims agree
        # The packed (q, k, v) projection, or three separate ones when kdim/vdim differ from embed_dim.
        self.in_proj_weight = mha.in_proj_weight if self.packed else None
        self.q_proj_weight = None if self.packed else mha.q_proj_weight
        self.k_proj_weight = None if self.packed else mha.k_proj_weight
        self.v_proj_weight = None if self.packed else mha.v_proj_weight
        self.in_proj_bias = mha.in_proj_bias
        self.out_proj = out_proj

    def _project(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e = self.embed_dim
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:e], b[e:2 * e], b[2 * e:])
        w = self.in_proj_weight
        if w is not None:
            return F.linear(query, w[:e], bq), F.linear(key, w[e:2 * e], bk), F.linear(value, w[2 * e:], bv)
        wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        assert wq is not None and wk is not None and wv is not None  # set together in __init__
        return F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        n, lq, _ = query.shape
        s = key.shape[1]
        h, d = self.num_heads, self.head_dim
        q, k, v = self._project(query, key, value)
        q = q.reshape(n, lq, h, d).transpose(1, 2)
        k = k.reshape(n, s, h, d).transpose(1, 2)
        v = v.reshape(n, s, h, d).transpose(1, 2)
        # One additive float mask of shape broadcastable to (n, h, lq, s), like F.multi_head_attention_forward.
        mask = _as_float_mask(attn_mask, q.dtype)
        if mask is not None:
            mask = mask.reshape(n, h, lq, s) if mask.dim() == 3 else mask.reshape(1, 1, lq, s)
        if is_causal and mask is None:
            causal = torch.ones(lq, s, dtype=torch.bool, device=q.device).tril()
            mask = _as_float_mask(~causal, q.dtype)
        pad = _as_float_mask(key_padding_mask, q.dtype)
        if pad is not None:
            pad = pad.reshape(n, 1, 1, s)
            mask = pad if mask is None else mask + pad
        dropout = self.dropout if self.training else 0.0
        weights: torch.Tensor | None = None
        if need_weights:
            scores = (q * (float(d) ** -0.5)) @ k.transpose(-2, -1)
            if mask is not None:
                scores = scores + mask
            weights = torch.softmax(scores, dim=-1)
            probs = F.dropout(weights, p=dropout) if dropout > 0.0 else weights
            out = probs @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        out = self.out_proj(out.transpose(1, 2).reshape(n, lq, self.embed_dim))
        if unbatched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        if weights is not None:
            if average_attn_weights:
                weights = weights.mean(dim=1)
            if unbatched:
                weights = weights.squeeze(0)
        return out, weights
