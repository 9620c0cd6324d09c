"""HyperForget: machine unlearning by sampling weights from a diffusion hypernetwork.

The CPU kernels are pinned to AVX2 before torch runs its first operation (torch, MKL and oneDNN read these
at first use, not at import): float results then do not depend on which x86 CPU ran them (AVX-512 sums in
another order), so a model trained on one machine is byte-identical on another and `dvc.lock` written on
one reproduces on the next. Set any of them in the environment to choose otherwise.
"""

import os as _os

for _name, _value in (("ATEN_CPU_CAPABILITY", "avx2"), ("MKL_CBWR", "AVX2"), ("ONEDNN_MAX_CPU_ISA", "AVX2")):
    _os.environ.setdefault(_name, _value)

__version__ = "0.1.0"
