"""Params files as overlays: an experiment file over the base params.yaml, `--set` overrides over both, one
validation, and the same experiment as `dvc exp run -S` items.

Why a module apart from the typed sections (`hyperforget.config.params`): what a file stands for is a matter of
raw mappings and dotted keys, before any type is known. An experiment file (`configs/*.yaml`) is a partial
params file with a top-level `extends: FILE` (relative to the experiment file): `load_params` merges its chain
(the base, then each overlay's keys, the file's own last: a mapping merges key by key, any other value
replaces) and validates the result exactly as a params.yaml, unknown keys included. The base, the file the
chain ends in, is the project's params.yaml: its folder stays the project root (`Artifacts.for_params`), and
every other path in an experiment file is project-relative, as if it were written in params.yaml.
`dvc_overrides` gives the same experiment as `dvc exp run -S` items, so DVC and `--params` see one recipe
(configs/README.md).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hyperforget.base.artifacts import EXTENDS, params_chain
from hyperforget.base.errors import ConfigError
from hyperforget.config.params import Params


def _format(err: ValidationError, source: str) -> str:
    lines = [f"invalid params in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "params"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling and section)"
        value = e.get("input")
        shown = "" if isinstance(value, dict) or e["type"] == "missing" else f" (got {value!r})"
        lines.append(f"  {key}: {msg}{shown}")
    return "\n".join(lines)


def parse_params(raw: dict[str, Any], source: str = "params") -> Params:
    try:
        return Params.model_validate(raw or {})
    except ValidationError as e:
        raise ConfigError(_format(e, source)) from None


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Load and validate params; `overrides` maps dotted keys to values (e.g. {"forget.classes": [1]}).
    `path` may be an experiment file (`extends:`, the module docstring): its chain is merged first."""
    chain = params_chain(path)
    raw = _merged(chain)
    for dotted, value in (overrides or {}).items():
        apply_override(raw, dotted, value)
    forget = raw.get("forget")
    if isinstance(forget, dict) and isinstance(forget.get("samples"), str) and forget["samples"]:
        forget["samples"] = str(chain[-1][0].parent / forget["samples"])  # under the root; absolute stays as is
    source = str(path) if len(chain) == 1 else f"{path} (extends {' → '.join(str(p) for p, _ in chain[1:])})"
    # name what the user typed: a bad flow parameter or --set value is not a bad params.yaml
    given = ", ".join(f"{k}={v!r}" for k, v in (overrides or {}).items())
    return parse_params(raw, f"{source} with the overrides {given}" if given else source)


def read_params(path: str | Path) -> dict[str, Any]:
    """The raw params `path` stands for, its `extends` chain merged (no `extends` key left), not validated:
    what a bench writes as the params.yaml of a project folder of its own."""
    return _merged(params_chain(path))


def experiment_overrides(path: str | Path) -> dict[str, Any]:
    """Dotted key → value: every leaf the experiment file `path` and the files it extends (short of the base)
    set over the base params file, in the order they apply (a later file's value wins)."""
    return _overlay(params_chain(path))


def dvc_overrides(path: str | Path) -> list[str]:
    """The experiment `path` as `dvc exp run -S` items (Hydra overrides of the base params file): `key=value`,
    `++key=value` for a key the base lacks, `~forget.KIND` when the experiment asks another kind of request.
    Applied to the base they give what `load_params(path)` gives (tests/unit/test_config.py)."""
    chain = params_chain(path)
    base, overlay = chain[-1][1], _overlay(chain)
    items = [f"{'' if _holds(base, dotted) else '++'}{dotted}={_hydra(value)}" for dotted, value in overlay.items()]
    forget = base.get("forget")
    if isinstance(forget, dict) and any(d in overlay for d in _KIND_KEYS):
        items += [f"~{d}" for d in _KIND_KEYS if d not in overlay and _holds(base, d)]
    return items


def dvc_flags(path: str | Path) -> str:
    """`dvc_overrides(path)` as one shell line of `-S KEY=VALUE` words (quoted where the shell needs it)."""
    return " ".join(f"-S {shlex.quote(item)}" for item in dvc_overrides(path))


_FORGET_KINDS = ("classes", "fraction", "samples")  # one request kind: setting one drops the others
_KIND_KEYS = tuple(f"forget.{k}" for k in _FORGET_KINDS)
_PLAIN = re.compile(r"[A-Za-z_./][A-Za-z0-9_./-]*")  # a string Hydra and YAML both read unquoted, as itself


def _leaves(raw: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in raw.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")  # an empty mapping sets nothing
        else:
            yield f"{prefix}{key}", value


def _overlay(chain: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _, raw in reversed(chain[:-1]):
        for dotted, value in _leaves({k: v for k, v in raw.items() if k != EXTENDS}):
            out.pop(dotted, None)  # re-inserted: the order is the order of application
            out[dotted] = value
            if dotted in _KIND_KEYS:
                for other in _KIND_KEYS:
                    if other != dotted:
                        out.pop(other, None)
    return out


def _merged(chain: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    raw = chain[-1][1]
    for dotted, value in _overlay(chain).items():
        apply_override(raw, dotted, value)
    return raw


def _holds(raw: dict[str, Any], dotted: str) -> bool:
    node: Any = raw
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def _hydra(value: Any) -> str:
    """A YAML value as a Hydra override value that parses back to it (DVC's `-S` grammar)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_hydra(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if _PLAIN.fullmatch(text) and yaml.safe_load(text) == text and text.lower() not in ("true", "false", "null",
                                                                                         "inf", "nan"):
        return text
    # quoted: Hydra reads a backslash as an escape only in a run before a quote or the closing quote
    return "'" + re.sub(r"(\\*)('|\Z)", lambda m: m[1] * 2 + ("\\'" if m[2] else ""), text) + "'"


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` items (VALUE as YAML) → {dotted key: value}, for `load_params` / `apply_override`."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set forget.classes=[3]")
        overrides[key] = yaml.safe_load(value)
    return overrides


def apply_override(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {dotted}: {key} is not a section")
    node[leaf] = value
    if parents == ["forget"] and leaf in _FORGET_KINDS:  # a request given on the command line replaces the file's
        for other in _FORGET_KINDS:
            if other != leaf:
                node.pop(other, None)


def flat_params(params: Params) -> dict[str, Any]:
    """Dotted key → value, for logging to a tracker."""
    out: dict[str, Any] = {}

    def walk(prefix: str, obj: Any) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = obj

    walk("", params.model_dump())
    return out
