"""Diffusion hypernetwork (DiHyFo, after G.pt): conditioning, tokenizer, denoiser, diffusion training and
sampling, checkpoints, prompts and the honesty checks of what it samples.

Pure torch over the zoo (`hyperforget.zoo.trajectories`): no tracking, CLI or I/O beyond the checkpoint folder
it is given.
"""
