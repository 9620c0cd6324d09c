"""ONNX export of a target classifier, proven against PyTorch before it is kept.

Why the dynamo exporter (`torch.onnx.export(dynamo=True)`): it is the maintained path, takes ~1 s per
model here after a one-off ~3 s warm-up, and the TorchScript exporter cannot export the CNN at all
(its AdaptiveAvgPool2d to 3×3 from a 2×2 map is "unsupported"). The batch axis is dynamic, so one
file serves any batch size. The file is written to a temp path, checked (onnx.checker) and compared
with PyTorch in onnxruntime; only then is it renamed into place, so a bad export never looks done.
The exporter's per-node stack traces are dropped: they hold this checkout's absolute paths and line
numbers, which have no place in a shipped model and would give identical weights a different sha256 in
every checkout.

Why the export runs in a child process: torch.export sets process-global state for as long as it traces
(`torch.compiler._is_exporting_flag`, torch.fx.traceback's `current_meta`), which every other thread's
torch calls read and write. A thread that steps an optimiser or seeds the RNG meanwhile (another request
unlearning, in the unlearn flow's thread runner) runs `torch._disable_dynamo`'s wrapper, which then enters
`torch.fx.traceback.annotate` on the exporter's global dict: its `del current_meta["custom"]` fails with
KeyError: 'custom' in either thread, and its annotations leak into the graph being exported. A lock can
only serialise exports with each other, not with every torch call elsewhere; a child process shares none of
that state. One child, spawned on first use and kept, so the exporter's warm-up is paid once per process.

Why a graph is exported once per architecture: every model of one `ModelSpec` exports to the same graph, its
parameters stored as initializers named by their state-dict keys; only their values differ. So the first export
of a spec in a process runs the exporter (≈ 1.2 s for LeNet-5 on 2 threads, in the child), and later ones copy
that graph with the new weights written into its initializers (under a millisecond): the bytes are those a
fresh export writes (tested), and every file is still checked and compared with PyTorch below. A model whose
state dict is not exactly the graph's initializers (a buffer folded away, a shape that differs) is exported
afresh.

Why `prewarm`: in a fresh process (a flow run on the process worker, `hyperforget request process`) that
child's start (a new interpreter importing torch and onnx) and the exporter's first use took 10 s of a 25 s
digits request, all of it after the answer had passed its gates. Started when a request begins, the child
pays it while the parent unlearns and verifies.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hyperforget.base.errors import IntegrityError
from hyperforget.base.io import atomic_path, sha256_file
from hyperforget.models.nets import ModelSpec

INPUT, OUTPUT = "x", "logits"
_EXPORTING = threading.Lock()
STACK_TRACE = "pkg.torch.onnx.stack_trace"


def _drop_stack_traces(graph) -> None:
    for node in graph.node:
        keep = [p for p in node.metadata_props if p.key != STACK_TRACE]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
        for attr in node.attribute:  # subgraphs (If/Loop bodies)
            for sub in [attr.g, *attr.graphs]:
                _drop_stack_traces(sub)


def mlflow_signature(spec: ModelSpec) -> Any:
    """The MLflow signature of an exported classifier: a float32 batch of inputs `(-1, *input_shape)` in,
    float32 logits `(-1, num_classes)` out (named `logits`, as the pyfunc returns them). The input is unnamed,
    as the pyfunc and `mlflow models serve` take a bare array for a one-input model."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    f32 = np.dtype(np.float32)
    return ModelSignature(inputs=Schema([TensorSpec(f32, (-1, *spec.input_shape))]),
                          outputs=Schema([TensorSpec(f32, (-1, spec.num_classes), OUTPUT)]))


def onnx_outputs(path: str | Path, x: torch.Tensor) -> np.ndarray:
    """Logits of an ONNX file on `x`, computed by onnxruntime on CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT], {INPUT: x.detach().cpu().numpy().astype(np.float32)})[0]


_worker: ProcessPoolExecutor | None = None
_graphs: dict[str, bytes] = {}  # per spec (its metadata as JSON), an exported file: the graph later exports reuse


def _with_weights(graph: bytes, model: nn.Module) -> Any:
    """The exported `graph` with `model`'s state dict written into its initializers, or None where the state dict
    is not exactly a set of the graph's initializers (same names, shapes and dtypes): export that model afresh."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.ModelProto()
    proto.ParseFromString(graph)
    weights = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    inits = {i.name: i for i in proto.graph.initializer if i.name in weights}
    if set(inits) != set(weights):
        return None
    for name, init in inits.items():
        old = numpy_helper.to_array(init)
        if old.shape != weights[name].shape or old.dtype != weights[name].dtype:
            return None
        init.CopyFrom(numpy_helper.from_array(weights[name], name))
    return proto


def _export(model: nn.Module, spec: ModelSpec, x_sample: torch.Tensor, path: Path) -> None:
    """Export `model` (an instance of `spec`) to `path` in the export child process (see the module
    docstring), one export at a time: torch.export is not reentrant either (two threads exporting at once
    fail with "SymInt is not tracked"). A daemonic process (a Dask worker) may not start children; it exports
    in-process, still one export at a time, as before."""
    weights = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}  # plain pickles, no shm
    x = x_sample.detach().cpu().numpy()
    with _EXPORTING:
        if multiprocessing.current_process().daemon:
            _export_in_child(spec, weights, x, str(path))
            return
        global _worker
        for attempt in range(2):
            if _worker is None:
                _worker = _start_child()
            try:
                _worker.submit(_export_in_child, spec, weights, x, str(Path(path).resolve())).result()
                return
            except BrokenProcessPool:  # the child died (killed, out of memory): one fresh child, once
                _worker.shutdown(wait=False)
                _worker = None
                if attempt == 1:
                    raise


def _start_child() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_child_init,
                               initargs=(torch.get_num_threads(),))


def prewarm() -> Future | None:
    """Start the export child now and have it export a tiny model once, so that its start and the exporter's
    first use (imports, registries) overlap the caller's unlearning instead of delaying the publish (see the
    module docstring). The real export queues behind it on the same child. Nothing to do where the child is
    up already or exports run in-process (a daemonic Dask worker); returns the warm-up's future, or None."""
    if multiprocessing.current_process().daemon:
        return None
    global _worker
    with _EXPORTING:
        if _worker is not None:
            return None
        _worker = _start_child()
        return _worker.submit(_warm_up)


def _warm_up() -> None:
    """In the child: one export of a tiny classifier of this project to a temporary file, thrown away."""
    import tempfile

    spec = ModelSpec("mlp", (1, 2, 2), 2, 2)
    with tempfile.TemporaryDirectory() as tmp:
        _export_unlocked(spec.build(seed=0).eval(), torch.zeros(2, *spec.input_shape), Path(tmp) / "warm.onnx")


def _child_init(threads: int) -> None:
    """The export child: the parent's torch thread count, and gone when the parent is (a killed flow run must
    not leave an idle exporter behind; the pool's own queue would keep it waiting forever)."""
    torch.set_num_threads(threads)
    parent = multiprocessing.parent_process()
    if parent is not None:
        def exit_with_parent() -> None:
            multiprocessing.connection.wait([parent.sentinel])
            os._exit(1)

        threading.Thread(target=exit_with_parent, name="exit-with-parent", daemon=True).start()


def _export_in_child(spec: ModelSpec, weights: dict[str, np.ndarray], x_sample: np.ndarray, path: str) -> None:
    """The model rebuilt from its spec and weights, the sample a fresh array (a view's base storage would add
    its own symbols to the file's range constraints), so the file depends on the weights alone."""
    model = spec.build()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    _export_unlocked(model.eval(), torch.from_numpy(x_sample), Path(path))


def _export_unlocked(model: nn.Module, x_sample: torch.Tensor, path: Path) -> None:
    if len(x_sample) < 2:  # a batch of 1 would be specialised to a constant by torch.export
        x_sample = x_sample.expand(2, *x_sample.shape[1:])
    batch = torch.export.Dim("batch")
    onnx_log = logging.getLogger("torch.onnx")  # "torchvision is not installed" notes are noise here
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # progress lines, deprecations
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x_sample,), str(path), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_shapes={INPUT: {0: batch}}, external_data=False, verbose=False)
    finally:
        onnx_log.setLevel(level)


def export_onnx(model: nn.Module, spec: ModelSpec, out_path: str | Path, x_sample: torch.Tensor,
                x_check: torch.Tensor | None = None, atol: float = 1e-4) -> dict:
    """Export `model` to `out_path` with a dynamic batch axis and verify it.

    Parity is measured on `x_check` (default `x_sample`): max |logit difference| and the fraction of
    inputs with the same argmax. IntegrityError (and no file) if the difference exceeds `atol` times
    max(1, largest |logit|) — float32 error grows with the logits' size.
    Returns {path, sha256, max_abs_diff, argmax_agreement, n_checked}.
    """
    import onnx

    model = model.eval()
    x_check = x_sample if x_check is None else x_check
    out_path = Path(out_path)
    key = json.dumps(spec.to_metadata(), sort_keys=True)
    with atomic_path(out_path) as tmp:
        proto = _with_weights(_graphs[key], model) if key in _graphs else None
        if proto is None:
            _export(model, spec, x_sample, tmp)
            proto = onnx.load(str(tmp))
            _drop_stack_traces(proto.graph)
            meta = {**spec.to_metadata(), "producer": "hyperforget", "input": INPUT, "output": OUTPUT}
            onnx.helper.set_model_props(proto, meta)
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
        with torch.no_grad():
            expected = model(x_check).numpy()
        got = onnx_outputs(tmp, x_check)
        diff = float(np.abs(got - expected).max()) if got.size else 0.0
        agree = float((got.argmax(1) == expected.argmax(1)).mean()) if got.size else 1.0
        limit = atol * max(1.0, float(np.abs(expected).max())) if expected.size else atol
        if got.shape != expected.shape or not diff <= limit:
            raise IntegrityError(
                f"ONNX export of {json.dumps(spec.to_metadata())} disagrees with PyTorch: shape {got.shape} vs "
                f"{expected.shape}, max |diff| {diff:.3g} > {limit:.3g}; nothing was written to {out_path}")
        _graphs.setdefault(key, proto.SerializeToString())
    return {"path": str(out_path), "sha256": sha256_file(out_path), "max_abs_diff": diff,
            "argmax_agreement": agree, "n_checked": len(x_check)}
