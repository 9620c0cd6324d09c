"""Settings of the diffusion hypernetwork: architecture, training and sampling.

Defaults are sized for a CPU (a 2-layer width-64 transformer); scale width/depth/heads/chunk_size up
on a GPU. The DDPM schedule itself (1,000 steps, linear β 1e-4→0.02) is fixed by G.pt, not a setting.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class HypernetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variant: Literal["dihyfo1", "dihyfo2"] = "dihyfo2"
    chunk_size: int = Field(64, ge=1, le=1_000_000, description="values per token (per-layer chunks)")
    width: int = Field(64, ge=8, le=8192, description="transformer width")
    depth: int = Field(2, ge=1, le=64, description="transformer layers")
    heads: int = Field(4, ge=1, le=128, description="attention heads; must divide width")
    steps: int = Field(2000, ge=1, le=100_000_000, description="optimizer steps")
    batch_size: int = Field(64, ge=1, le=1_000_000)
    lr: float = Field(4e-4, gt=0, le=1, description="peak AdamW learning rate")
    weight_decay: float = Field(0.1, ge=0, le=10, description="AdamW decay on matrices only")
    warmup: int = Field(100, ge=0, description="linear warmup steps before the cosine decay")
    ema: float = Field(0.999, ge=0, lt=1, description="EMA decay of the weights used for sampling")
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    permute_augment: bool = Field(False, description="permute MLP hidden units per example (MLP layout only)")
    sample_steps: int = Field(50, ge=1, le=1000, description="DDIM steps when sampling")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    checkpoint_every: int = Field(500, ge=1, description="steps between checkpoints")
    device: Literal["cpu", "cuda", "auto"] = "auto"

    @model_validator(mode="after")
    def _heads_divide_width(self) -> HypernetConfig:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads}")
        return self
