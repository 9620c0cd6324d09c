"""ONNX export: parity with PyTorch on real digits, a dynamic batch axis, no local paths, no file on failure."""

from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_digits

import hyperforget
from hyperforget.base.errors import IntegrityError
from hyperforget.base.io import sha256_file
from hyperforget.models.nets import ModelSpec
from hyperforget.publish.onnx import export_onnx, onnx_outputs


@pytest.fixture(autouse=True)
def no_kept_graphs(monkeypatch):
    """Each test starts with no exported graph kept (`onnx._graphs`), so its exports run the exporter."""
    from hyperforget.publish import onnx

    monkeypatch.setattr(onnx, "_graphs", {})


@pytest.fixture(scope="module")
def digits():
    x = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1)
    return (x - x.mean()) / x.std()


@pytest.mark.parametrize("arch,width", [("mlp", 10), ("cnn", 8), ("lenet", 0)])
def test_export_matches_pytorch_for_any_batch_size(arch, width, digits, tmp_path):
    spec = ModelSpec(arch, (1, 8, 8), 10, width)
    model = spec.build(seed=0).eval()
    out = export_onnx(model, spec, tmp_path / "model.onnx", digits[:4], digits[:500])
    assert out["max_abs_diff"] < 1e-4 and out["argmax_agreement"] == 1.0 and out["n_checked"] == 500
    assert out["sha256"] == sha256_file(tmp_path / "model.onnx")
    for batch in (1, 37):
        x = digits[100 : 100 + batch]
        got = onnx_outputs(out["path"], x)
        assert got.shape == (batch, 10)
        assert abs(got - model(x).detach().numpy()).max() < 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temp file left
    data = (tmp_path / "model.onnx").read_bytes()
    assert b"stack_trace" not in data and str(Path(hyperforget.__file__).parent).encode() not in data


def test_failed_parity_leaves_no_file(digits, tmp_path):
    spec = ModelSpec("mlp", (1, 8, 8), 10, 10)
    with pytest.raises(IntegrityError, match="disagrees with PyTorch"):
        export_onnx(spec.build(seed=0), spec, tmp_path / "model.onnx", digits[:4], atol=-1.0)
    assert list(tmp_path.iterdir()) == []


def test_lenet_at_mnist_size_exports_with_parity(tmp_path):
    spec = ModelSpec("lenet", (1, 28, 28), 10, 0)
    model = spec.build(seed=0).eval()
    x = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    out = export_onnx(model, spec, tmp_path / "lenet.onnx", x[:4], x)
    assert out["max_abs_diff"] < 1e-4 and out["argmax_agreement"] == 1.0


def test_an_export_leaves_this_process_free_for_other_threads_torch_work(digits, tmp_path):
    """torch.export's process-global state (torch.compiler's is-exporting flag, fx's current_meta) is set in
    the export's own child process, never here: a thread that trains meanwhile (an Adam step, a seeded RNG) runs
    `fx.traceback.annotate` on that state otherwise, and one of the two threads fails with KeyError: 'custom'."""
    import threading

    spec = ModelSpec("mlp", (1, 8, 8), 10, 10)
    model = spec.build(seed=1)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    done, seen = threading.Event(), []

    def step():  # what another request's unlearning does meanwhile
        torch.manual_seed(0)
        opt.zero_grad()
        model(digits[:8]).sum().backward()
        opt.step()

    def export():
        try:
            export_onnx(spec.build(seed=0), spec, tmp_path / "model.onnx", digits[:4], digits[:50])
        finally:
            done.set()

    step()  # its one-off imports (torch._dynamo) done before the export starts
    exporter = threading.Thread(target=export)
    exporter.start()
    while not done.is_set():
        seen.append(torch.compiler.is_exporting())
        step()
    exporter.join()
    assert (tmp_path / "model.onnx").exists() and len(seen) > 10 and not any(seen)


def test_a_prewarmed_exporter_starts_once_and_writes_the_same_file_as_a_cold_one(digits, tmp_path, monkeypatch):
    """`prewarm` (a request's first step) starts the export child and has it export a tiny model; the real
    export then queues behind it on that child and must not differ by a byte from a freshly started child's."""
    from hyperforget.publish import onnx

    spec = ModelSpec("lenet", (1, 8, 8), 10, 0)
    model = spec.build(seed=0).eval()
    files = []
    for warm in (True, False):
        monkeypatch.setattr(onnx, "_worker", None)
        monkeypatch.setattr(onnx, "_graphs", {})  # both exports run the exporter
        try:
            if warm:
                warm_up = onnx.prewarm()
                assert warm_up is not None and onnx.prewarm() is None  # one child, warmed once
            files.append(export_onnx(model, spec, tmp_path / f"{warm}.onnx", digits[:4], digits[:50])["sha256"])
            if warm:
                warm_up.result()  # the warm-up itself exported without error
        finally:
            onnx._worker.shutdown()
    assert files[0] == files[1]


def test_a_second_model_of_a_spec_reuses_the_exported_graph_and_writes_a_fresh_exports_bytes(digits, tmp_path,
                                                                                              monkeypatch):
    """Only the weights differ between two models of one spec: the second export copies the first's graph with its
    own weights (the exporter is not run again) and its file is byte for byte what the exporter writes for it."""
    from hyperforget.publish import onnx

    spec = ModelSpec("lenet", (1, 8, 8), 10, 0)
    first, second = spec.build(seed=0).eval(), spec.build(seed=1).eval()
    export_onnx(first, spec, tmp_path / "first.onnx", digits[:4], digits[:50])
    fresh = export_onnx(second, spec, tmp_path / "fresh.onnx", digits[:4], digits[:50])  # the graph kept: reused
    monkeypatch.setattr(onnx, "_graphs", {})
    exported = export_onnx(second, spec, tmp_path / "exported.onnx", digits[:4], digits[:50])  # the exporter runs

    def no_exporter(*_args):
        raise AssertionError("the exporter ran although the spec's graph was kept")

    monkeypatch.setattr(onnx, "_export", no_exporter)
    again = export_onnx(second, spec, tmp_path / "again.onnx", digits[:4], digits[:50])
    assert fresh["sha256"] == exported["sha256"] == again["sha256"] != sha256_file(tmp_path / "first.onnx")
    assert again["max_abs_diff"] < 1e-4 and again["argmax_agreement"] == 1.0


def test_a_state_dict_that_is_not_the_graphs_initializers_is_exported_afresh(digits, tmp_path):
    from hyperforget.publish import onnx

    narrow, wide = ModelSpec("mlp", (1, 8, 8), 10, 10), ModelSpec("mlp", (1, 8, 8), 10, 12)
    export_onnx(narrow.build(seed=0), narrow, tmp_path / "narrow.onnx", digits[:4])
    graph = (tmp_path / "narrow.onnx").read_bytes()
    assert onnx._with_weights(graph, narrow.build(seed=1)) is not None
    assert onnx._with_weights(graph, wide.build(seed=1)) is None  # other shapes
    assert onnx._with_weights(graph, torch.nn.Sequential(torch.nn.Linear(64, 10))) is None  # other names
