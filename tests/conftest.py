"""Every test process runs with the settings the entry points apply (`hyperforget.base.runtime`): pinned CPU
kernels and passive OpenMP threads, set here before any test module imports torch."""

from hyperforget.base.runtime import configure

configure()
