"""Diffusion hypernetwork (DiHyFo, after G.pt): tokenizer, denoiser, diffusion training/sampling, prompts.

Pure torch: no tracking, CLI or I/O beyond the checkpoint folder it is given.
"""

from hyperforget.hypernet.config import HypernetConfig
from hyperforget.hypernet.data import ZooTensors, conditioning
from hyperforget.hypernet.denoiser import Denoiser
from hyperforget.hypernet.diffusion import Hypernet, load_hypernet, sample, train_hypernet
from hyperforget.hypernet.prompts import make_prompt, r2, sweep_prompts
from hyperforget.hypernet.tokenizer import Tokenizer, permute_mlp_hidden

__all__ = [
    "Denoiser",
    "Hypernet",
    "HypernetConfig",
    "Tokenizer",
    "ZooTensors",
    "conditioning",
    "load_hypernet",
    "make_prompt",
    "permute_mlp_hidden",
    "r2",
    "sample",
    "sweep_prompts",
    "train_hypernet",
]
