"""The DDPM U-Net of the paper's published code, built from diffusers parts.

Layout (widths ``base_width`` x 1, 2, 4, 8 at 256 px: 256-512-1024-2048, about 558.5M
parameters): a 1x1 input convolution; per level ``layers_per_block`` residual blocks, linear
attention after the last, a skip after each block, then a pixel-unshuffle downsampling (a
3x3 convolution at the last level); a residual block, full attention and a residual block at
the bottleneck; the mirror image upwards, each block on the concatenation with one skip;
a final residual block on the concatenation with the input convolution's output; a 1x1
output convolution. Time enters every residual block as a scale and shift after its first
normalisation, from a sinusoidal embedding and a GELU MLP.

From diffusers: the attention modules (``Attention``, full attention through its own
scaled-dot-product processor, linear attention through ``LinearAttnProcessor`` below), the
time embedding (``Timesteps``, ``TimestepEmbedding``) and the upsampling (``Upsample2D``).
Written here because diffusers has no equivalent: the residual block (the published one
runs weight-standardised convolution, GroupNorm, scale-shift, SiLU twice; diffusers'
``ResnetBlock2D`` normalises before each convolution and has no weight standardisation)
and the pixel-unshuffle downsampling (diffusers' downsamplers are strided or pooled).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.upsampling import Upsample2D
from torch import nn
from torch.utils.checkpoint import checkpoint


class WeightStandardizedConv2d(nn.Conv2d):
    """A convolution whose kernel is standardised per output channel before use (Qiao et al.
    2019), in fp32 with eps 1e-5, the published code's function at its fp32 precision; with
    ``eps_by_dtype``, the published rule to the letter: eps 1e-3 for activations of any other
    dtype, so that under bf16 autocast the function, not only its rounding, changes."""

    eps_by_dtype = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = 1e-3 if self.eps_by_dtype and x.dtype != torch.float32 else 1e-5
        w = self.weight.float()
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        return F.conv2d(x, (w - mean) * (var + eps).rsqrt(), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)


class ConvNormAct(nn.Module):
    """Weight-standardised 3x3 convolution, GroupNorm, optional time scale-shift, SiLU."""

    def __init__(self, channels_in: int, channels_out: int, groups: int):
        super().__init__()
        self.proj = WeightStandardizedConv2d(channels_in, channels_out, 3, padding=1)
        self.norm = nn.GroupNorm(groups, channels_out)

    def forward(self, x, scale_shift=None):
        x = self.norm(self.proj(x))
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return F.silu(x)


class StandardizedResnetBlock(nn.Module):
    """The published residual block; ``time_dim = None`` (or ``temb = None``) skips the time term."""

    def __init__(self, channels_in: int, channels_out: int, groups: int, time_dim: int | None):
        super().__init__()
        self.time_mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * channels_out)) if time_dim else None
        self.block1 = ConvNormAct(channels_in, channels_out, groups)
        self.block2 = ConvNormAct(channels_out, channels_out, groups)
        self.shortcut = nn.Conv2d(channels_in, channels_out, 1) if channels_in != channels_out else nn.Identity()

    def forward(self, x, temb=None):
        scale_shift = None
        if self.time_mlp is not None and temb is not None:
            scale_shift = self.time_mlp(temb)[:, :, None, None].chunk(2, dim=1)
        return self.block2(self.block1(x, scale_shift)) + self.shortcut(x)


class LinearAttnProcessor:
    """Linear attention (Shen et al. 2021) for a diffusers ``Attention``: queries softmaxed over
    their channels, keys over positions, so the cost grows linearly with the pixel count. The
    published module ends in a GroupNorm of one group after the output projection, which
    ``linear_attention`` appends to ``to_out``."""

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        residual = hidden_states
        b, c, h, w = hidden_states.shape
        x = attn.group_norm(hidden_states).view(b, c, h * w).transpose(1, 2)
        q, k, v = (proj(x).view(b, h * w, attn.heads, -1).transpose(1, 2) for proj in (attn.to_q, attn.to_k, attn.to_v))
        q = q.softmax(dim=-1) * attn.scale  # over each head's channels
        k = k.softmax(dim=-2)  # over positions
        context = torch.einsum("bhnd,bhne->bhde", k, v)
        out = torch.einsum("bhde,bhnd->bhne", context, q).transpose(1, 2).reshape(b, h * w, -1)
        out = attn.to_out[1](attn.to_out[0](out)).transpose(1, 2).reshape(b, c, h, w)
        return attn.to_out[2](out) + residual


def linear_attention(channels: int, heads: int, head_dim: int) -> Attention:
    attention = Attention(channels, heads=heads, dim_head=head_dim, norm_num_groups=1, residual_connection=True,
                          processor=LinearAttnProcessor())
    attention.to_out.append(nn.GroupNorm(1, channels))
    return attention


def full_attention(channels: int, heads: int, head_dim: int) -> Attention:
    """Softmax attention, pre-normalised by a GroupNorm of one group, with a residual."""
    return Attention(channels, heads=heads, dim_head=head_dim, norm_num_groups=1, residual_connection=True)


def downsample(channels_in: int, channels_out: int) -> nn.Module:
    """Halve the resolution without striding: each 2x2 patch into channels, then a 1x1 convolution."""
    return nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(4 * channels_in, channels_out, 1))


class Level(nn.Module):
    """One resolution of the U-Net: residual blocks, linear attention after the last, then a
    resize (or a 3x3 convolution at the innermost level going down, the outermost going up)."""

    def __init__(self, blocks: list[nn.Module], attention: Attention, resize: nn.Module):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attention = attention
        self.resize = resize


class PublishedUNet(nn.Module):
    """``forward(x, timesteps)`` predicts noise; with ``timesteps = None`` (the detector) every
    block skips its time term, and ``drop_time_embedding`` removes those weights."""

    def __init__(self, in_channels: int, out_channels: int, base_width: int, multipliers: list[int],
                 layers_per_block: int = 2, norm_groups: int = 4, heads: int = 4, head_dim: int = 32,
                 eps_by_dtype: bool = False):
        super().__init__()
        widths = [base_width] + [base_width * m for m in multipliers]
        pairs = list(zip(widths[:-1], widths[1:]))
        time_dim = 4 * base_width
        self.time_proj = Timesteps(base_width, flip_sin_to_cos=False, downscale_freq_shift=1)
        self.time_embedding = TimestepEmbedding(base_width, time_dim, act_fn="gelu")
        self.init_conv = nn.Conv2d(in_channels, base_width, 1)

        def blocks(channels_in, channels_out, skip=0):
            return [StandardizedResnetBlock(channels_in + skip, channels_out, norm_groups, time_dim)
                    for _ in range(layers_per_block)]

        self.down = nn.ModuleList(
            Level(blocks(c_in, c_in), linear_attention(c_in, heads, head_dim),
                  downsample(c_in, c_out) if i < len(pairs) - 1 else nn.Conv2d(c_in, c_out, 3, padding=1))
            for i, (c_in, c_out) in enumerate(pairs)
        )
        mid = widths[-1]
        self.mid_block1 = StandardizedResnetBlock(mid, mid, norm_groups, time_dim)
        self.mid_attention = full_attention(mid, heads, head_dim)
        self.mid_block2 = StandardizedResnetBlock(mid, mid, norm_groups, time_dim)
        self.up = nn.ModuleList(
            Level(blocks(c_out, c_out, skip=c_in), linear_attention(c_out, heads, head_dim),
                  Upsample2D(c_out, use_conv=True, out_channels=c_in) if i < len(pairs) - 1
                  else nn.Conv2d(c_out, c_in, 3, padding=1))
            for i, (c_in, c_out) in enumerate(reversed(pairs))
        )
        self.final_block = StandardizedResnetBlock(2 * base_width, base_width, norm_groups, time_dim)
        self.final_conv = nn.Conv2d(base_width, out_channels, 1)
        self.gradient_checkpointing = False  # the published code's memory saving
        for module in self.modules():
            if isinstance(module, WeightStandardizedConv2d):
                module.eps_by_dtype = eps_by_dtype

    def drop_time_embedding(self) -> None:
        self.time_proj = self.time_embedding = None
        for module in self.modules():
            if isinstance(module, StandardizedResnetBlock):
                module.time_mlp = None

    def _run(self, module, *args):
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | None = None) -> torch.Tensor:
        temb = None
        if timesteps is not None:
            temb = self.time_embedding(self.time_proj(timesteps).to(x.dtype))
        x = self.init_conv(x)
        first = x
        skips = []
        for level in self.down:
            for i, block in enumerate(level.blocks):
                x = self._run(block, x, temb)
                if i == len(level.blocks) - 1:
                    x = self._run(level.attention, x)
                skips.append(x)
            x = self._run(level.resize, x)
        x = self._run(self.mid_block1, x, temb)
        x = self._run(self.mid_attention, x)
        x = self._run(self.mid_block2, x, temb)
        for level in self.up:
            for block in level.blocks:
                x = self._run(block, torch.cat([x, skips.pop()], dim=1), temb)
            x = self._run(level.attention, x)
            x = self._run(level.resize, x)
        x = self._run(self.final_block, torch.cat([x, first], dim=1), temb)
        return self.final_conv(x)
