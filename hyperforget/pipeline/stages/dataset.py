"""Stages `import-data` (not a DVC stage: it writes what data.dvc tracks) and `prepare`."""

from __future__ import annotations

from hyperforget.base.artifacts import Artifacts
from hyperforget.config.params import Params
from hyperforget.data import datasets as data_mod
from hyperforget.data import readers
from hyperforget.pipeline.stages.common import data_config, track


def import_data(params: Params, art: Artifacts) -> dict:
    folder = readers.import_raw(data_config(params, art))
    return {"raw_dir": str(folder), "files": readers.raw_checksums(folder)}


def prepare(params: Params, art: Artifacts) -> dict:
    ds = data_mod.prepare(data_config(params, art))
    card = data_mod.save_dataset(ds, art.prepare)
    track(params, art, "prepare", {"size": card["sizes"]}, [art.card])
    return {"dataset": str(art.dataset), "card": card}
