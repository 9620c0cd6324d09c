"""Process-wide runtime settings, applied by the entry points (CLI, Prefect flows, DVC stages through the
CLI) before torch runs, never on import of the library.

Why these: the CPU kernels are pinned to AVX2 (torch, MKL and oneDNN read these at first use, not at
import), so float results do not depend on which x86 CPU ran them (AVX-512 sums in another order): a model
trained on one Intel machine is byte-identical on another and `dvc.lock` written on one reproduces on the next.
Not across vendors: on AMD, MKL takes other code paths under the same setting (the default pipeline's θ0, and so
every hash after it, differed between an AMD EPYC and an Intel Xeon, both 2 cores; on the Xeon MKL_CBWR=COMPATIBLE
and AVX each gave yet another θ0). The committed `dvc.lock` is the Intel Xeon's.
For the same reason torch runs on 2 threads, not one per core: a reduction split over another number of threads
sums in another order (the compare stage's LiRA AUC and probe log-odds differed in the 9th digit between 1 and 2
threads, so a machine with another core count wrote another `dvc.lock`). 2 is what the lock was written with; set
OMP_NUM_THREADS to use more cores, and expect the last digits of the metrics to move.
OpenMP threads wait passively: on 2 contended cores, spinning threads of these tiny models cost more than
the work (a request measured 4–10× slower under load without it). OpenMP reads its wait policy when its
runtime loads, so `configure()` must run before torch is imported to take effect. Any of them set in the
environment wins.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager

from threadpoolctl import threadpool_limits

SETTINGS = (
    ("ATEN_CPU_CAPABILITY", "avx2"),
    ("MKL_CBWR", "AVX2"),
    ("ONEDNN_MAX_CPU_ISA", "AVX2"),
    ("OMP_WAIT_POLICY", "PASSIVE"),
    ("OMP_NUM_THREADS", "2"),
    ("MLFLOW_DISABLE_TELEMETRY", "true"),
    ("DO_NOT_TRACK", "1"),
)


def configure() -> dict[str, str]:
    """Set each setting the environment does not already choose; return the values in force."""
    for name, value in SETTINGS:
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name, _ in SETTINGS}


def one_blas_thread() -> AbstractContextManager:
    """numpy's and scipy's BLAS (OpenBLAS, pthreads) on one thread for the block: scikit-learn's small solvers
    (the linear probe's logistic regressions on 2,400 × 84 features) call BLAS on matrices so small that handing
    each call to a second thread costs more than the work. Measured side by side (bench/verify_cost.py, LeNet-5,
    idle 2-core machine): the cross-fitted probe's 5 fits, median 3.86 s with OpenBLAS's 2 threads, 0.45 s with
    1, the same solver and result (docs/results/request-e2e.md). torch's own threads (MKL, OpenMP) are not
    touched."""
    return threadpool_limits(limits=1, user_api="blas")
