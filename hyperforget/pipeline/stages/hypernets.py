"""Stage `hypernet`: train one DiHyFo variant on the zoo and report its prompt alignment."""

from __future__ import annotations

from typing import Any

import numpy as np

from hyperforget.base.artifacts import Artifacts
from hyperforget.base.io import jsonable, write_json
from hyperforget.config.params import Params
from hyperforget.data import datasets as data_mod
from hyperforget.hypernet.diffusion import load_hypernet, train_hypernet
from hyperforget.hypernet.honesty import prompt_alignment
from hyperforget.models.nets import load_model
from hyperforget.pipeline.stages.common import keep_build_timing, track
from hyperforget.zoo import shards

ALIGNMENT_SETS = 6  # held-out sets whose prompt alignment the hypernet stage reports (bench/ reports all)


def alignment_requests(params: Params, num_classes: int) -> list[list[int]]:
    """The first held-out sets when the zoo keeps some out, else every single class (then seen in training)."""
    held = params.zoo.held_out(num_classes)[:ALIGNMENT_SETS]
    return [list(h) for h in held] or [[c] for c in range(num_classes)]


def hypernet(params: Params, art: Artifacts, variant: str) -> dict[str, Any]:
    """Train one DiHyFo variant on the zoo; metrics: training summary and prompt alignment (R²) per request. The
    timing file keeps what training cost (`keep_build_timing`)."""
    zoo_tensors, _ = shards.load_zoo(art.zoo)
    out = art.hypernet(variant)
    summary = train_hypernet(zoo_tensors, params.hypernet.model_copy(update={"variant": variant}), out,
                             held_out=params.zoo.held_out(zoo_tensors.num_classes))
    net = load_hypernet(out, device="cpu")
    data, (_, spec) = data_mod.load_dataset(art.prepare), load_model(art.model)
    alignment = {"-".join(map(str, r)): prompt_alignment(net, zoo_tensors, r, spec, data, seed=params.seed)
                 for r in alignment_requests(params, data.num_classes)}
    metrics = {**{k: summary[k] for k in ("step", "final_loss", "num_params", "num_tokens")},
               "held_out": bool(params.zoo.holdout_sets), "alignment": alignment,
               "mean_r2": float(np.nanmean([a["r2"] for a in alignment.values()]))}
    write_json(out / "metrics.json", jsonable(metrics))
    keep_build_timing(art, f"hypernet-{variant}", summary["resumed_from"] != summary["step"],
                      {"seconds": summary["seconds"]})
    track(params, art, f"hypernet/{variant}", {**metrics, "seconds": summary["seconds"]}, [out / "metrics.json"])
    return metrics | {"seconds": summary["seconds"]}
