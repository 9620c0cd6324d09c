"""HyperForget: machine unlearning by sampling weights from a diffusion hypernetwork."""

__version__ = "0.1.0"
