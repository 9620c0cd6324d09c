"""HyperForget: machine unlearning by sampling weights from a diffusion hypernetwork, with the MLOps around it.

Importing the package does nothing but define it: the entry points (`hyperforget.cli`, `flows/`) apply the
runtime settings (`hyperforget.base.runtime`) before torch runs.
"""

__version__ = "0.1.0"
