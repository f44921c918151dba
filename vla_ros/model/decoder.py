"""The language decoder with exit points, built from transformers' Qwen2 modules.

The layers are transformers' `Qwen2DecoderLayer`s, so a published Qwen2/Qwen2.5 state dict
loads by key (`layers.N.self_attn.q_proj.weight`, ...). The forward is written here with those
modules because the exporter needs what transformers' forward does not return: each layer's
post-RoPE keys and values (A1's expert attends to them) and a mask built from a (B, T) key
mask inside the graph. `test_decoder_matches_transformers` pins it to transformers' forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2DecoderLayer,
    Qwen2RMSNorm,
    Qwen2RotaryEmbedding,
    apply_rotary_pos_emb,
)

from vla_ros.model.config import LMConfig

# Additive mask value: exp() underflows to 0 in fp32 and fp16, and twice it is still finite
# in fp16, so a fully masked row never turns into NaN.
NEG = -30000.0


def hf_config(cfg: LMConfig) -> Qwen2Config:
    c = Qwen2Config(hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                    num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                    num_key_value_heads=cfg.num_kv_heads, vocab_size=cfg.vocab_size,
                    rope_theta=cfg.rope_theta, rms_norm_eps=cfg.rms_eps,
                    max_position_embeddings=32768)
    c._attn_implementation = 'sdpa'
    return c


def attention_bias(key_mask: torch.Tensor, causal: bool,
                   blocked_keys: tuple[int, int] | None = None) -> torch.Tensor:
    """(B, T) key mask (1 = valid) -> (B, 1, T, T) additive bias. `blocked_keys` = [start,
    end) columns no query may attend to (EdgeVLA's action positions)."""
    t = key_mask.shape[1]
    bias = (1.0 - key_mask.to(torch.float32))[:, None, None, :] * NEG  # (B, 1, 1, T)
    # Positions derived from the input, not torch.arange: with static shapes the exporter
    # would fold a (T, T) constant into every segment graph (4 MB each at T = 1024).
    idx = torch.cumsum(key_mask[0].to(torch.float32) * 0.0 + 1.0, 0) - 1.0
    if causal:
        bias = bias + (idx[None, :] > idx[:, None]).to(torch.float32)[None, None] * NEG
    if blocked_keys is not None:
        cols = ((idx >= blocked_keys[0]) & (idx < blocked_keys[1])).to(torch.float32) * NEG
        bias = bias + cols[None, None, None, :]
    return bias.expand(key_mask.shape[0], 1, t, t)


def positions_from_mask(key_mask: torch.Tensor, kind: str = 'mask') -> torch.Tensor:
    """RoPE positions. 'mask': skip padding, so a padded prompt keeps its trained distances;
    'arange': 0..T-1 whatever the mask (HF's default when no position_ids are given, which
    Evo-1's embedder relies on: its masked view and padding keep their slots)."""
    if kind == 'arange':
        # Derived from the input (not torch.arange) for the reason given in attention_bias.
        return torch.cumsum(key_mask.to(torch.int64) * 0 + 1, dim=1) - 1
    return (torch.cumsum(key_mask.to(torch.int64), dim=1) - 1).clamp(min=0)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
           scale: float) -> torch.Tensor:
    """(B, Hq, Tq, D) x (B, Hkv, Tk, D) grouped-query attention with an additive bias."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)


def layer_forward(layer: Qwen2DecoderLayer, h: torch.Tensor, bias: torch.Tensor,
                  cos: torch.Tensor, sin: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Qwen2 layer. Returns the new hidden state and this layer's post-RoPE K, V."""
    attn = layer.self_attn
    b, t, _ = h.shape
    x = layer.input_layernorm(h)
    q = attn.q_proj(x).view(b, t, -1, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(x).view(b, t, -1, attn.head_dim).transpose(1, 2)
    v = attn.v_proj(x).view(b, t, -1, attn.head_dim).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    o = attend(q, k, v, bias, attn.scaling).transpose(1, 2).reshape(b, t, -1)
    h = h + attn.o_proj(o)
    h = h + layer.mlp(layer.post_attention_layernorm(h))
    return h, k, v


class Decoder(nn.Module):
    """`embed_tokens`, `layers`, `norm`, `rotary_emb`: the key layout of transformers'
    Qwen2Model, so `language_model.model.*` checkpoint keys map one to one."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        hc = hf_config(cfg)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Qwen2DecoderLayer(hc, i) for i in range(cfg.num_layers))
        self.norm = Qwen2RMSNorm(cfg.hidden_size, eps=cfg.rms_eps)
        self.rotary_emb = Qwen2RotaryEmbedding(hc)

    def rope(self, h: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rotary_emb(h, positions)

    def run_layers(self, h: torch.Tensor, key_mask: torch.Tensor, start: int, end: int,
                   blocked_keys: tuple[int, int] | None = None
                   ) -> tuple[torch.Tensor, list[torch.Tensor], list[tuple]]:
        """Layers [start, end). Returns the hidden state, each layer's output, and each
        layer's (K, V)."""
        bias = attention_bias(key_mask, self.cfg.causal, blocked_keys).to(h.dtype)
        cos, sin = self.rope(h, positions_from_mask(key_mask, self.cfg.positions))
        outputs, kvs = [], []
        for layer in self.layers[start:end]:
            h, k, v = layer_forward(layer, h, bias, cos, sin)
            outputs.append(h)
            kvs.append((k, v))
        return h, outputs, kvs
