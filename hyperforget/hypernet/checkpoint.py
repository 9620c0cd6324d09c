"""Hypernetwork checkpoints: safetensors (model, EMA, optimizer state, normaliser) + one JSON that commits them.

Weight files carry the step in their name and `checkpoint.json` is written last with their sha256s,
so a run killed mid-checkpoint leaves the previous checkpoint intact and loadable; older step files
are deleted only after the new JSON is in place. The optimizer state is stored as tensors too, so
nothing is pickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hyperforget.base.errors import IntegrityError
from hyperforget.base.io import load_tensors, read_json, save_tensors, sidecar, write_json
from hyperforget.hypernet.denoiser import Denoiser
from hyperforget.hypernet.tokenizer import Tokenizer

CHECKPOINT_JSON = "checkpoint.json"
_STEP_FILES = ("model", "ema", "optimizer")


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Per-parameter optimizer state as flat tensors ("<param index>.<name>")."""
    out = {}
    for i, state in opt.state_dict()["state"].items():
        for name, value in state.items():
            out[f"{i}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Restore state written by `optimizer_tensors`; hyperparameters come from the live optimizer (config)."""
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    sd["state"] = state
    opt.load_state_dict(sd)


def save_checkpoint(out: Path, step: int, model: Denoiser, ema: Denoiser, opt: torch.optim.Optimizer,
                    tokenizer: Tokenizer, meta: dict[str, Any]) -> None:
    files = {role: f"{role}-{step:09d}.safetensors" for role in _STEP_FILES}
    files["normaliser"] = "normaliser.safetensors"
    tensors = {"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer_tensors(opt),
               "normaliser": tokenizer.normaliser_tensors()}
    digests = {role: save_tensors(out / files[role], tensors[role]) for role in files}
    write_json(out / CHECKPOINT_JSON, {**meta, "step": step, "files": files, "sha256": digests})
    keep = set(files.values()) | {sidecar(f).name for f in files.values()}
    for role in _STEP_FILES:
        for old in out.glob(f"{role}-*.safetensors*"):
            if old.name not in keep:
                old.unlink()


def read_meta(out: Path) -> dict[str, Any]:
    path = out / CHECKPOINT_JSON
    if not path.exists():
        raise IntegrityError(f"no hypernetwork checkpoint in {out} ({CHECKPOINT_JSON} missing); train the hypernetwork")
    meta = read_json(path)
    missing = {"step", "config", "layout", "num_classes", "files", "sha256"} - set(meta)
    if missing:
        raise IntegrityError(f"{path} lacks {', '.join(sorted(missing))}; delete {out} and retrain")
    return meta


def _load(out: Path, meta: dict[str, Any], role: str) -> dict[str, torch.Tensor]:
    return load_tensors(out / meta["files"][role], expected_sha256=meta["sha256"][role])


def load_checkpoint(out: Path, meta: dict[str, Any], *, ema: Denoiser, model: Denoiser | None = None,
                    opt: torch.optim.Optimizer | None = None) -> None:
    """Load the checkpoint `meta` describes into the given objects (EMA + its normaliser always).
    Every file is checked against the sha256 recorded in the JSON."""
    normaliser = _load(out, meta, "normaliser")
    targets = [("ema", ema)] + ([("model", model)] if model is not None else [])
    for role, net in targets:
        net.tokenizer.load_normaliser(normaliser)
        try:
            net.load_state_dict(_load(out, meta, role))
        except RuntimeError as e:
            raise IntegrityError(f"{out / meta['files'][role]} does not fit the configured denoiser ({e})") from e
    if opt is not None:
        load_optimizer_tensors(opt, _load(out, meta, "optimizer"))
