"""The flow-matching action expert (spanvla.md 1.3): a light transformer that reads the KV cache of sparse
VLM layers.

- Expert layer j reads VLM layer `kv_layers[j]`. Its queries are the suffix tokens (1 ego/history token +
  T = ceil(N / k) waypoint tokens, token i carrying poses i*k .. i*k + k - 1 through its input and output
  projections, k = `waypoints_per_token`; the last token's missing poses are zero inputs and dropped
  outputs); its keys/values are [the cached K/V of that VLM layer ; the suffix's own K/V]. The
  expert has the VLM's query heads, KV heads and head size but a smaller width, so the cached K/V (already
  rotated by the VLM) are used as they are. The suffix attends to itself bidirectionally; the prefix never
  sees the suffix (it is cached).
- Positions: suffix token i sits at text position `next_position + i`, `next_position` being one past the
  prefix's last text position. For text tokens Qwen2.5-VL's M-RoPE gives the three (t, h, w) components
  the same value, so its rotation equals a 1-D RoPE with the same inverse frequencies: the expert applies
  that 1-D RoPE (theta and head size of the VLM) and its keys are consistent with the cached ones.
- Flow time enters through adaptive RMSNorm (scale, shift and a residual gate from the time embedding,
  for all layers from one matrix).
- The history prior a_his (an MLP of the ego history and state) lives in the same normalised space as the
  trajectory (`rl.policy.trajectory`); the flow starts there (`init: history`) or at N(0, I) (`init: noise`).
- The cached K/V are detached by default, so expert losses never reach the VLM.
- An optional pace head (`policy.expert.pace`, `rl.policy.pace`) reads the expert's final features of the
  denoised plan at flow time 1, averaged over the waypoint tokens and without grad, and gives the pace z: the log of
  the fraction of the plan's speed it is driven at.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rl.policy.config import ExpertConfig, PolicyConfigError
from rl.policy.trajectory import TrajectoryNormalizer
from sim import conventions as C
from sim.scene import Scene

HISTORY_FEATURES = 3 * (C.NUM_HISTORY_FRAMES - 1) + 2 + 2 + len(C.DRIVING_COMMANDS)


def history_features(scene: Scene) -> np.ndarray:
    """(HISTORY_FEATURES,) float32: past rear-axle poses in the current ego frame (x, y / 10 m, heading),
    velocity / 10 m/s, acceleration / 2 m/s^2 (ego frame), the command one-hot."""
    past = scene.history_trajectory()[:-1]
    ego = scene.ego
    poses = np.concatenate([past[:, :2] / 10.0, past[:, 2:]], axis=-1).reshape(-1)
    dynamics = np.array([ego.vx / 10.0, ego.vy / 10.0, ego.ax / 2.0, ego.ay / 2.0])
    return np.concatenate([poses, dynamics, scene.command_one_hot]).astype(np.float32)


@dataclass(frozen=True)
class AttentionGeometry:
    """The VLM's text-attention geometry the expert must share."""

    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float


def resolve_kv_layers(cfg: ExpertConfig, num_layers: int) -> list[int]:
    """The VLM layers the expert reads (sorted, non-negative). Raises `PolicyConfigError` for a layer the VLM
    does not have."""
    if cfg.kv_layers is not None:
        layers = []
        for layer in cfg.kv_layers:
            index = layer + num_layers if layer < 0 else layer
            if not 0 <= index < num_layers:
                raise PolicyConfigError(
                    f"policy.expert.kv_layers names VLM layer {layer}, but the VLM has {num_layers} layers (0..{num_layers - 1})"
                )
            layers.append(index)
        if len(set(layers)) != len(layers):
            raise PolicyConfigError(f"policy.expert.kv_layers={list(cfg.kv_layers)} names a layer twice")
        return sorted(layers)
    if cfg.kv_layer_offset >= num_layers:
        raise PolicyConfigError(
            f"policy.expert.kv_layer_offset={cfg.kv_layer_offset}, but the VLM has {num_layers} layers (0..{num_layers - 1})"
        )
    return list(range(cfg.kv_layer_offset, num_layers, cfg.kv_layer_interval))


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D RoPE tables (B, S, head_dim) for integer positions (B, S), in the VLM's half-split layout."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim))
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE in the VLM's half-split layout: x * cos + rotate_half(x) * sin (cos/sin broadcast to x)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


def rotation_matrices(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The same rotation as matrices (..., D, D) acting on row vectors: rotate(x) = x @ R. The suffix's
    positions are fixed for a whole flow, so one matmul per layer replaces the element-wise formula."""
    d = cos.shape[-1]
    half = d // 2
    eye = torch.eye(d, dtype=cos.dtype, device=cos.device)
    # Column j of R: cos_j e_j + sin_j * (rotate_half basis): x_rot[j] = x[j] cos_j + (-x[j+h] | x[j-h]) sin_j.
    swap = torch.zeros(d, d, dtype=cos.dtype, device=cos.device)
    swap[torch.arange(half) + half, torch.arange(half)] = -1.0
    swap[torch.arange(half), torch.arange(half) + half] = 1.0
    return eye * cos[..., None, :] + swap * sin[..., None, :]


def time_embedding(t: torch.Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of flow times t (B,) in [0, 1]."""
    half = dim // 2
    fraction = torch.linspace(0.0, 1.0, half, device=t.device, dtype=torch.float32)
    period = min_period * (max_period / min_period) ** fraction
    angle = t.float()[:, None] * (2.0 * math.pi / period)[None]
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


class ExpertLayer(nn.Module):
    """One expert block: attention over [a VLM layer's cached K/V ; the suffix], then a gated MLP. Both are
    preceded by an adaptive RMSNorm (RMSNorm, then x * (1 + scale) + shift) and gated on the residual
    (h + (1 + gate) * f); the six modulations come from the flow time (`ActionExpert.modulation`)."""

    def __init__(self, hidden: int, intermediate: int, geometry: AttentionGeometry):
        super().__init__()
        g = geometry
        self.num_heads, self.num_kv_heads, self.head_dim = g.num_heads, g.num_kv_heads, g.head_dim
        self.qkv_proj = nn.Linear(hidden, (g.num_heads + 2 * g.num_kv_heads) * g.head_dim)
        self.o_proj = nn.Linear(g.num_heads * g.head_dim, hidden, bias=False)
        self.gate_up_proj = nn.Linear(hidden, 2 * intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, h, mods, prefix_k, prefix_v, attn_mask, rotation) -> torch.Tensor:
        """h (B, S, hidden); mods (B, 6, 1, hidden): (1 + scale, shift, 1 + gate) of the attention, then of
        the MLP; prefix K/V (B, kv_heads, P, head_dim); attn_mask additive (B, 1, 1, P + S); rotation
        (B, S, head_dim, head_dim) from `rotation_matrices`."""
        b, s, _ = h.shape
        attn_scale, attn_shift, attn_gate, mlp_scale, mlp_shift, mlp_gate = mods.unbind(1)
        x = torch.addcmul(attn_shift, F.rms_norm(h, (h.shape[-1],), eps=1e-6), attn_scale)
        qkv = self.qkv_proj(x).view(b, s, self.num_heads + 2 * self.num_kv_heads, self.head_dim)
        qk, v = qkv.split([self.num_heads + self.num_kv_heads, self.num_kv_heads], dim=2)
        q, k = torch.matmul(qk, rotation).transpose(1, 2).split([self.num_heads, self.num_kv_heads], dim=1)
        k = torch.cat([prefix_k, k], dim=2)
        v = torch.cat([prefix_v, v.transpose(1, 2)], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=self.num_heads != self.num_kv_heads)
        h = torch.addcmul(h, attn_gate, self.o_proj(out.transpose(1, 2).reshape(b, s, -1)))
        x = torch.addcmul(mlp_shift, F.rms_norm(h, (h.shape[-1],), eps=1e-6), mlp_scale)
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return torch.addcmul(h, mlp_gate, self.down_proj(F.silu(gate) * up))


@dataclass
class ExpertContext:
    """Everything the velocity field needs besides (x_t, t); built once per prefix, reused by every step.

    keys/values: per expert layer (B, kv_heads, P, head_dim); attn_mask: (B, 1, 1, P + 1 + T) additive
    (0 or -inf), T the waypoint tokens; rotation: (B, 1 + T, head_dim, head_dim) RoPE of the suffix's
    positions; ego_token: (B, 1, hidden); prior: a_his (B, N, 3) normalised (zeros for init noise);
    sigma0: std of the prior around a_his.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    attn_mask: torch.Tensor
    rotation: torch.Tensor
    ego_token: torch.Tensor
    prior: torch.Tensor
    sigma0: float


def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, out))


class ActionExpert(nn.Module):
    """Velocity field f(x_t, t | VLM K/V, history) of the flow in the normalised trajectory space."""

    def __init__(self, cfg: ExpertConfig, geometry: AttentionGeometry):
        super().__init__()
        self.cfg = cfg
        self.geometry = geometry
        self.kv_layers = resolve_kv_layers(cfg, geometry.num_layers)
        hidden = cfg.hidden_size or geometry.hidden_size // 2
        intermediate = int(round(hidden * cfg.intermediate_ratio))
        self.hidden_size = hidden
        self.horizon = cfg.horizon
        if not 1 <= cfg.waypoints_per_token <= cfg.horizon:
            raise PolicyConfigError(f"policy.expert.waypoints_per_token={cfg.waypoints_per_token}:"
                                    f" need 1 <= waypoints_per_token <= horizon ({cfg.horizon})")
        self.waypoints_per_token = k = cfg.waypoints_per_token
        self.num_waypoint_tokens = -(-cfg.horizon // k)
        self.normalizer = TrajectoryNormalizer(cfg.horizon, cfg.interval_s)
        self.history_token = _mlp(HISTORY_FEATURES, hidden, hidden)
        self.history_prior = _mlp(HISTORY_FEATURES, hidden, cfg.horizon * 3)
        # k = 1 gives the same parameter names and shapes as one token per pose (older saved policies load).
        self.waypoint_in = nn.Linear(3 * k, hidden)
        self.waypoint_embedding = nn.Parameter(torch.randn(self.num_waypoint_tokens, hidden) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.layers = nn.ModuleList([ExpertLayer(hidden, intermediate, geometry) for _ in self.kv_layers])
        # Every adaptive norm's (scale, shift, gate) from the time embedding in one matrix: 6 per layer, then
        # the final norm's scale and shift. Scales and gates act as 1 + output.
        self.modulation = nn.Linear(hidden, (6 * len(self.kv_layers) + 2) * hidden)
        one = torch.tensor([1.0, 0.0, 1.0] * (2 * len(self.kv_layers)) + [1.0, 0.0])
        self.register_buffer("modulation_one", one[:, None], persistent=False)
        self.out = nn.Linear(hidden, 3 * k)
        self.pace_head: Optional[nn.Sequential] = None
        if cfg.pace:
            self.add_pace_head()

    # --- the pace (rl.policy.pace) -------------------------------------------------------------------------
    def add_pace_head(self, seed: int = 0) -> None:
        """Give the expert a pace head (an MLP of the expert's features of a scene and its plan) whose output is
        0 until it trains: every plan is then driven as it is. Its hidden layer is drawn from `seed`, so every copy
        built from the same policy (learner, rollout workers) is the same. Sets `cfg.pace`."""
        hidden = self.hidden_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(head[-1].weight)
        nn.init.zeros_(head[-1].bias)
        self.pace_head = head.to(self.out.weight.device, self.out.weight.dtype)
        self.cfg.pace = True

    def pace_mean(self, plan: torch.Tensor, ctx: "ExpertContext") -> torch.Tensor:
        """The pace head's mean z (B,) for the denoised plans (B, N, 3) (normalised space): the head reads the
        expert's final features at flow time 1 averaged over the waypoint tokens, computed without grad (the pace
        trains its head alone, never the velocity field)."""
        if self.pace_head is None:
            raise ValueError("this expert has no pace head (policy.expert.pace is false)")
        with torch.no_grad():
            features = self.features(plan, torch.ones(plan.shape[0], device=plan.device), ctx).mean(1)
        return self.pace_head(features)[:, 0].float()

    # --- the prior ----------------------------------------------------------------------------------------
    def prior_mean(self, history: torch.Tensor) -> torch.Tensor:
        """a_his (B, N, 3) in the normalised space from history features (B, HISTORY_FEATURES)."""
        return self.history_prior(history).view(-1, self.horizon, 3)

    def prior(self, history: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(prior mean, sigma0) of x_0: (a_his, history_noise_std) or (0, 1) for init noise."""
        if self.cfg.init == "noise":
            return torch.zeros(history.shape[0], self.horizon, 3, device=history.device), 1.0
        return self.prior_mean(history), float(self.cfg.history_noise_std)

    # --- the prefix ---------------------------------------------------------------------------------------
    def context(
        self,
        layer_kv: Sequence[tuple[torch.Tensor, torch.Tensor]],
        key_mask: torch.Tensor,
        next_position: torch.Tensor,
        history: torch.Tensor,
        detach: bool = True,
    ) -> ExpertContext:
        """layer_kv: (K, V) of EVERY VLM layer, each (B, kv_heads, P, head_dim) (a DynamicCache's layers, or a
        list); key_mask (B, P) bool: real prefix tokens; next_position (B,) long; history (B, F) features."""
        if len(layer_kv) != self.geometry.num_layers:
            raise ValueError(f"expected the K/V of all {self.geometry.num_layers} VLM layers, got {len(layer_kv)}")
        dtype = self.out.weight.dtype
        keys, values = [], []
        for index in self.kv_layers:
            k, v = layer_kv[index]
            keys.append((k.detach() if detach else k).to(dtype))
            values.append((v.detach() if detach else v).to(dtype))
        b, suffix = key_mask.shape[0], 1 + self.num_waypoint_tokens
        visible = torch.cat([key_mask.bool(), torch.ones(b, suffix, dtype=torch.bool, device=key_mask.device)], dim=1)
        mask = torch.zeros(visible.shape, dtype=dtype, device=key_mask.device).masked_fill(~visible, float("-inf"))
        positions = next_position[:, None] + torch.arange(suffix, device=key_mask.device)[None]
        cos, sin = rotary_cos_sin(positions, self.geometry.head_dim, self.geometry.rope_theta)
        prior, sigma0 = self.prior(history)
        rotation = rotation_matrices(cos, sin).to(dtype)
        return ExpertContext(keys, values, mask[:, None, None, :], rotation, self.history_token(history)[:, None],
                             prior, sigma0)

    # --- the velocity field -------------------------------------------------------------------------------
    def velocity(self, x: torch.Tensor, t: torch.Tensor, ctx: ExpertContext) -> torch.Tensor:
        """v = f(x_t, t) (B, N, 3) for x_t (B, N, 3) normalised and flow time t (B,) (0 prior, 1 data)."""
        return self.out(self.features(x, t, ctx)).view(x.shape[0], -1, 3)[:, :self.horizon]

    def features(self, x: torch.Tensor, t: torch.Tensor, ctx: ExpertContext) -> torch.Tensor:
        """The waypoint tokens' final normalised states (B, T, hidden), which `out` projects to the velocity."""
        cond = self.time_mlp(time_embedding(t, self.hidden_size).to(x.dtype))
        mods = (self.modulation(cond).view(x.shape[0], -1, self.hidden_size) + self.modulation_one)[:, :, None]
        tokens = self.waypoint_in(self._to_tokens(x)) + self.waypoint_embedding[None]
        h = torch.cat([ctx.ego_token.to(tokens.dtype), tokens], dim=1)
        for j, (layer, k, v) in enumerate(zip(self.layers, ctx.keys, ctx.values)):
            h = layer(h, mods[:, 6 * j:6 * j + 6], k, v, ctx.attn_mask, ctx.rotation)
        return torch.addcmul(mods[:, -1], F.rms_norm(h[:, 1:], (self.hidden_size,), eps=1e-6), mods[:, -2])

    def _to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) poses -> (B, T, 3k) token inputs: consecutive chunks of k poses, the last one zero-padded."""
        pad = self.num_waypoint_tokens * self.waypoints_per_token - self.horizon
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
        return x.reshape(x.shape[0], self.num_waypoint_tokens, 3 * self.waypoints_per_token)
