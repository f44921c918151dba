"""A1's flow-matching action expert (reference/seeds.md §2), pi0-style shared attention.

The expert is a Qwen2 body (`qwen2.model.layers.N`, `qwen2.model.norm`) as deep as the LLM.
Its layer i attends over [the LLM layer i's post-RoPE keys/values of the prefix ; its own
suffix keys/values]; the suffix is [state_proj(state)] + H action tokens, fully visible, with
positions continuing after the prefix. Published A1 differs from our defaults in five ways, each
a HeadConfig option the converter sets: RoPE base 1e4 (`rope_theta`), causal attention inside
the suffix (`causal_suffix`), the diffusion-policy time embedding (`time_embedding`), a
proprio token in the LLM prompt (`proprio_token`, filled by `proprio_projector`) and suffix
positions starting at the padded prompt length (`suffix_position_start`). At an exit after
LLM layer L the expert is truncated to layers 0..L (A1 sets num_hidden_layers =
len(past_key_values)). Time: noise at t = 1, data at t = 0, Gaussian noise, v = noise - a.
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

from vla_ros.model.config import VLAConfig
from vla_ros.model.decoder import NEG, attend
from vla_ros.model.heads.common import MLPResNet, diffusion_policy_sincos, posemb_sincos


class FlowExpertHead(nn.Module):
    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        lm, h = cfg.lm, cfg.head
        self.width = h.hidden_size
        self.chunk_len = cfg.chunk_len
        ec = Qwen2Config(hidden_size=h.hidden_size, intermediate_size=h.intermediate_size,
                         num_hidden_layers=lm.num_layers, num_attention_heads=h.num_heads,
                         num_key_value_heads=lm.num_kv_heads, head_dim=lm.head_dim,
                         rope_theta=h.rope_theta or lm.rope_theta, rms_norm_eps=lm.rms_eps,
                         vocab_size=1)
        ec._attn_implementation = 'sdpa'
        self.qwen2 = nn.Module()
        self.qwen2.model = nn.Module()
        self.qwen2.model.layers = nn.ModuleList(
            Qwen2DecoderLayer(ec, i) for i in range(lm.num_layers))
        self.qwen2.model.norm = Qwen2RMSNorm(h.hidden_size, eps=lm.rms_eps)
        self.rotary_emb = Qwen2RotaryEmbedding(ec)
        self.state_proj = nn.Linear(cfg.state_dim, h.hidden_size)
        self.action_in_proj = nn.Linear(cfg.action_dim, h.hidden_size)
        self.action_time_in = nn.Linear(2 * h.hidden_size, h.hidden_size)
        self.action_time_out = nn.Linear(h.hidden_size, h.hidden_size)
        self.action_out = MLPResNet(h.hidden_size, h.hidden_size, cfg.action_dim,
                                    h.resnet_blocks)
        self.causal_suffix = h.causal_suffix
        self.suffix_position_start = h.suffix_position_start
        self.time_embedding = (diffusion_policy_sincos if h.time_embedding == 'diffusion_policy'
                               else posemb_sincos)
        if h.proprio_token:
            d = lm.hidden_size
            self.proprio_projector = nn.Module()
            self.proprio_projector.fc1 = nn.Linear(cfg.state_dim, d)
            self.proprio_projector.fc2 = nn.Linear(d, d)

    def proprio(self, state: torch.Tensor) -> torch.Tensor:
        """A1's ProprioProjector (Linear, GELU, Linear): the LLM's proprio-token embedding."""
        p = self.proprio_projector
        return p.fc2(F.gelu(p.fc1(state)))

    def embed(self, x_t: torch.Tensor, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """(B, H, A), (B,), (B, S) -> suffix (B, 1 + H, W)."""
        a = self.action_in_proj(x_t)
        temb = self.time_embedding(t, self.width).to(a.dtype)[:, None, :].expand_as(a)
        a = self.action_time_out(F.silu(self.action_time_in(torch.cat([a, temb], -1))))
        return torch.cat([self.state_proj(state)[:, None, :], a], dim=1)

    def run_layers(self, suffix: torch.Tensor, key_mask: torch.Tensor,
                   kvs: list[tuple[torch.Tensor, torch.Tensor]], start: int) -> torch.Tensor:
        """Expert layers start .. start + len(kvs) - 1, each over its LLM layer's K, V."""
        b, n, _ = suffix.shape
        prefix_len = key_mask.shape[1]
        # A1 pads its prompt to a fixed length, masked out, so its suffix positions start
        # there (`suffix_position_start`); ours start right after the prefix.
        first = self.suffix_position_start or prefix_len
        positions = first + torch.arange(n, device=suffix.device)[None].expand(b, n)
        cos, sin = self.rotary_emb(suffix, positions)
        prefix_bias = (1.0 - key_mask.to(suffix.dtype))[:, None, None, :] * NEG
        own = torch.zeros(n, n, dtype=suffix.dtype)
        if self.causal_suffix:  # A1: HF's causal mask over the cache plus the new tokens
            own = torch.triu(torch.full((n, n), NEG, dtype=suffix.dtype), diagonal=1)
        bias = torch.cat([prefix_bias.expand(b, 1, n, prefix_len),
                          own[None, None].expand(b, 1, n, n)], dim=-1)
        for offset, (pk, pv) in enumerate(kvs):
            layer = self.qwen2.model.layers[start + offset]
            attn = layer.self_attn
            x = layer.input_layernorm(suffix)
            q = attn.q_proj(x).view(b, n, -1, attn.head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(b, n, -1, attn.head_dim).transpose(1, 2)
            v = attn.v_proj(x).view(b, n, -1, attn.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            o = attend(q, torch.cat([pk, k], 2), torch.cat([pv, v], 2), bias, attn.scaling)
            suffix = suffix + attn.o_proj(o.transpose(1, 2).reshape(b, n, -1))
            suffix = suffix + layer.mlp(layer.post_attention_layernorm(suffix))
        return suffix

    def out(self, suffix: torch.Tensor) -> torch.Tensor:
        """suffix (B, 1 + H, W) -> velocity (B, H, A) from the action tokens."""
        return self.action_out(self.qwen2.model.norm(suffix)[:, -self.chunk_len:])
