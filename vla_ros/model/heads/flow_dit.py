"""Evo-1's action expert: a cross-attention-only flow-matching DiT (reference/seeds.md §1).

Context = the decoder's normed hidden states at the exit layer plus one state token; action
tokens attend to it (no padding mask, as upstream). Time: noise at t = 0, data at t = 1,
uniform noise, v = a - noise; time enters every block as row int(t * 999) of a 1000-row
sinusoid table. `relu_mlps` selects upstream's activations (ReLU in the action encoder and
mlp_head); off, ours (SiLU, GELU) as our own models were trained. Keys match upstream's
module tree (`transformer_blocks.i.attn.in_proj_weight`, `state_encoder.fc1.linear`,
`action_encoder.W1.linear`, `time_pos_enc.pe`, ...).

The head is split for serving: `context()` projects the context to every block's keys and
values once per exit; `step()` is one velocity evaluation and is run N times per solve.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vla_ros.model.config import VLAConfig
from vla_ros.model.heads.common import Linear1, sinusoid_table


class CrossAttention(nn.Module):
    """Parameter layout of nn.MultiheadAttention (in_proj_weight/bias, out_proj), with the
    context projection callable on its own."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def project_context(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = ctx.shape[-1]
        w, b = self.in_proj_weight, self.in_proj_bias
        return F.linear(ctx, w[d:2 * d], b[d:2 * d]), F.linear(ctx, w[2 * d:], b[2 * d:])

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        hd = d // self.num_heads
        q = F.linear(x, self.in_proj_weight[:d], self.in_proj_bias[:d])
        q = q.view(b, n, self.num_heads, hd).transpose(1, 2)
        k = k.view(b, -1, self.num_heads, hd).transpose(1, 2)
        v = v.view(b, -1, self.num_heads, hd).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        return self.out_proj(o)


class DiTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, ffn: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))

    def forward(self, x: torch.Tensor, temb: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), k, v)
        return x + self.ff(self.norm2(x) + temb[:, None, :])


class FlowDiTHead(nn.Module):
    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        h = cfg.head
        d = cfg.lm.hidden_size  # Evo-1's embed_dim equals the LM width (896)
        self.chunk_len, self.action_dim = cfg.chunk_len, cfg.action_dim
        self.state_encoder = nn.Module()
        self.state_encoder.fc1 = Linear1(cfg.state_dim, h.state_hidden)
        self.state_encoder.fc2 = Linear1(h.state_hidden, d)
        self.action_encoder = nn.Module()
        self.action_encoder.W1 = Linear1(cfg.action_dim, d)
        self.action_encoder.W2 = Linear1(d, d)
        self.action_encoder.W3 = Linear1(d, d)
        self.register_buffer('action_pos', sinusoid_table(cfg.chunk_len, d), persistent=False)
        self.time_pos_enc = nn.Module()
        self.time_pos_enc.register_buffer('pe', sinusoid_table(1000, d))
        self.transformer_blocks = nn.ModuleList(
            DiTBlock(d, h.num_heads, h.intermediate_size) for _ in range(h.num_layers))
        self.norm_out = nn.LayerNorm(d)
        self.seq_pool_proj = nn.Linear(cfg.chunk_len * d, d)
        self.mlp_head = nn.Module()
        mlp_hidden = h.mlp_hidden or h.state_hidden
        self.mlp_head.fc1 = Linear1(d, mlp_hidden)
        self.mlp_head.fc2 = Linear1(mlp_hidden, cfg.chunk_len * cfg.action_dim)
        self.relu_mlps = h.relu_mlps

    def context(self, hidden: torch.Tensor, state: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden: normed (B, T, D) at the exit; state (B, S) -> K, V (B, blocks, T+1, D)."""
        s = self.state_encoder
        state_tok = s.fc2(torch.relu(s.fc1(state)))[:, None, :]
        ctx = torch.cat([hidden, state_tok], dim=1)
        ks, vs = zip(*(blk.attn.project_context(ctx) for blk in self.transformer_blocks),
                     strict=True)
        return torch.stack(ks, 1), torch.stack(vs, 1)

    def step(self, x_t: torch.Tensor, t: torch.Tensor, ctx_k: torch.Tensor,
             ctx_v: torch.Tensor) -> torch.Tensor:
        """One velocity evaluation: x_t (B, H, A), t (B,) in [0, 1] -> v (B, H, A)."""
        e = self.action_encoder
        if self.relu_mlps:  # Evo-1's MultiEmbodimentActionEncoder and CategorySpecificMLP
            x = torch.relu(e.W1(x_t)) + self.action_pos[None]
            x = e.W3(torch.relu(e.W2(x)))
        else:
            x = e.W1(x_t) + self.action_pos[None]
            x = e.W3(F.silu(e.W2(x)))
        temb = self.time_pos_enc.pe[(t * 999).long()]
        for i, blk in enumerate(self.transformer_blocks):
            x = blk(x, temb, ctx_k[:, i], ctx_v[:, i])
        x = self.norm_out(x).flatten(1)
        m = self.mlp_head
        act = torch.relu if self.relu_mlps else F.gelu
        out = m.fc2(act(m.fc1(self.seq_pool_proj(x))))
        return out.view(-1, self.chunk_len, self.action_dim)
