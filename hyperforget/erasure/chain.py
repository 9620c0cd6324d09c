"""What makes a ledger history valid: the legal moves between states, and the signed hash chain of its rows.

Why a chain: triggers refuse UPDATE and DELETE, but whoever can write the database can also drop a trigger or
INSERT a row. So every row carries `prev_hash` (the row before it in its request's history), `row_hash` (sha256
of its canonical content, its table, that link and the ledger's id) and `signature` (Ed25519 over row_hash, by
the ledger key). A reader recomputes each hash, checks each signature with the public key and follows the
links: an edited row no longer matches its hash, a forged one has no valid signature (only the key's holder can
sign), a row removed from the middle leaves its successor pointing at nothing, and a history whose moves break
ALLOWED is refused even when it is signed.

Chains: one per request (its `requests` row, then its transitions and notes in append order) and one for notes
about no request. Each starts at the ledger's genesis hash: the hash of its `genesis` row (format, a random
ledger id, the public key), so a signed row cannot be replayed into another ledger signed by the same key.
What no chain can show is a missing tail (the last rows of a history, or a whole request): that takes an anchor
kept elsewhere, such as the digest `audit` prints or a certificate's list of transitions.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hyperforget.base.errors import ConfigError
from hyperforget.erasure.certificate import ENV_VAR, fingerprint, load_or_create_key, public_key_b64

FORMAT = "hyperforget-ledger/2"
_DOMAIN = FORMAT.encode() + b" row "  # a ledger signature can never pass as a certificate's (those sign JSON)

PIPELINE = ("received", "scoped", "unlearned", "verified", "published", "closed")
STATES = (*PIPELINE, "failed")
# The one table of legal moves. A retry from `failed` resumes at the step after the last good state or earlier.
ALLOWED: dict[str, tuple[str, ...]] = {
    "received": ("scoped", "failed"),
    "scoped": ("unlearned", "failed"),
    "unlearned": ("verified", "failed"),
    "verified": ("published", "failed"),
    "published": ("closed", "failed"),
    "closed": (),
    "failed": ("received", "scoped", "unlearned"),
}
_RANK = {"requests": 0, "transitions": 1, "notes": 2}
MISSING = "missing"  # the key readers require when the project's key file is gone
log = logging.getLogger(__name__)


def allowed_next(states: Sequence[str]) -> tuple[str, ...]:
    """The states a request whose history is `states` (oldest first) may move to next."""
    current = states[-1]
    if current != "failed":
        return ALLOWED[current]
    last_good = next((s for s in reversed(states) if s != "failed"), "received")
    resume = PIPELINE.index(last_good) + 1  # never skip the step that had not yet succeeded
    return tuple(s for s in ALLOWED["failed"] if PIPELINE.index(s) <= resume)


def digest(obj: Any) -> str:
    """sha256 of canonical JSON (sorted keys, no whitespace, UTF-8)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def genesis_hash(ledger_id: str, public_key: str, created_at: str) -> str:
    return digest({"format": FORMAT, "ledger": ledger_id, "public_key": public_key, "created_at": created_at})


def row_hash(ledger_id: str, table: str, prev_hash: str, content: dict) -> str:
    return digest({"ledger": ledger_id, "table": table, "prev": prev_hash, "row": content})


def sign(key: Ed25519PrivateKey, hash_hex: str) -> str:
    return base64.b64encode(key.sign(_DOMAIN + hash_hex.encode())).decode()


def signed(key: Ed25519PublicKey, hash_hex: str, signature: str) -> bool:
    try:
        key.verify(base64.b64decode(signature, validate=True), _DOMAIN + hash_hex.encode())
        return True
    except (InvalidSignature, ValueError, TypeError, binascii.Error):
        return False


def public_key(b64: str) -> Ed25519PublicKey | None:
    """The Ed25519 public key that `b64` encodes, or None when it is not one."""
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(b64, validate=True))
    except (ValueError, TypeError, binascii.Error):
        return None


@dataclass(frozen=True)
class Genesis:
    """The ledger's first row: its id, its key and the hash every chain starts from."""

    ledger_id: str
    public_key: str  # base64
    hash: str

    @property
    def key(self) -> Ed25519PublicKey:
        return public_key(self.public_key)

    def seal(self, key: Ed25519PrivateKey, table: str, prev_hash: str, content: dict) -> dict[str, str]:
        """The chain columns of a new row of `table` after `prev_hash`."""
        h = row_hash(self.ledger_id, table, prev_hash, content)
        return {"prev_hash": prev_hash, "row_hash": h, "signature": sign(key, h)}


def new_genesis(key: Ed25519PrivateKey, ledger_id: str, created_at: str) -> tuple[Genesis, str]:
    """A genesis for `key` and its signature."""
    pub = public_key_b64(key)
    g = Genesis(ledger_id, pub, genesis_hash(ledger_id, pub, created_at))
    return g, sign(key, g.hash)


def genesis_problem(g: Genesis, fmt: str, created_at: str, stored_hash: str, signature: str) -> str | None:
    if fmt != FORMAT:
        return f"genesis row: format {fmt!r}, not {FORMAT!r}"
    if g.key is None:
        return "genesis row: its public_key is not an Ed25519 public key"
    if genesis_hash(g.ledger_id, g.public_key, created_at) != stored_hash or stored_hash != g.hash:
        return "genesis row: its content does not match its hash: it was changed after it was written"
    if not signed(g.key, g.hash, signature):
        return f"genesis row: its signature does not verify with its key {fingerprint(g.public_key)}"
    return None


@dataclass(frozen=True)
class Row:
    """One stored row as the chain sees it: where it is, its links and the content its hash covers."""

    table: str  # requests | transitions | notes
    id: int | str
    request_id: str | None
    prev_hash: str
    row_hash: str
    signature: str
    content: dict

    @property
    def label(self) -> str:
        if self.table == "requests":
            return f"requests row {self.id!r}"
        what = " ".join(str(self.content.get("state") or self.content.get("kind")).split())  # one line, always
        return f"{self.table} row {self.id} (request {self.request_id!r}, {what})"

    def problem(self, g: Genesis) -> str | None:
        """Why this row on its own is not what the ledger wrote, or None."""
        try:
            expected = row_hash(g.ledger_id, self.table, self.prev_hash, self.content)
        except (TypeError, ValueError):  # a column retyped by hand (a float NaN, bytes): not what the ledger wrote
            expected = None
        if expected != self.row_hash:
            return (f"{self.label}: its content does not match its row_hash: it was edited after it was written, "
                    "or forged")
        if not signed(g.key, self.row_hash, self.signature or ""):
            return (f"{self.label}: its signature does not verify with the ledger key {fingerprint(g.public_key)}: "
                    "it was not written by HyperForget (forged)")
        return None


def walk(g: Genesis, head: Row | None, rows: list[Row]) -> tuple[list[Row], list[str]]:
    """The history that starts at `head` (a request row; None: the chain of notes about no request) and every
    problem with it, first bad row first: rows that are not what the ledger wrote, rows off the chain (a row
    before them was deleted, or they were inserted by hand), forks, rows out of append order, illegal moves."""
    problems = []
    start = g.hash
    if head is not None:
        if p := head.problem(g):
            return [], [p]
        if head.prev_hash != g.hash:
            return [], [f"{head.label}: does not start at this ledger's genesis: it was copied from another "
                        "ledger or inserted by hand"]
        start = head.row_hash
    good = []
    for r in sorted(rows, key=lambda r: (_RANK[r.table], r.id)):
        if p := r.problem(g):
            problems.append(p)
        else:
            good.append(r)
    after: dict[str, list[Row]] = {}
    for r in good:
        after.setdefault(r.prev_hash, []).append(r)
    chain, forks, at = [], set(), start
    while nxt := after.get(at):
        problems += [f"{r.label}: a second row after {at[:12]}…: the history forks" for r in nxt[1:]]
        forks |= {r.row_hash for r in nxt[1:]}
        chain.append(nxt[0])
        at = nxt[0].row_hash
    seen = forks | {r.row_hash for r in chain}
    problems += [f"{r.label}: follows no row of its history (prev_hash {r.prev_hash[:12]}…): a row before it "
                 "was deleted, or it was inserted by hand" for r in good if r.row_hash not in seen]
    last: dict[str, Any] = {}
    for r in chain:
        if r.table in last and r.id <= last[r.table]:
            problems.append(f"{r.label}: out of append order (its id is not after the row before it)")
        last[r.table] = r.id
    if head is not None and not problems:
        problems += _moves(head, [r for r in chain if r.table == "transitions"])
    return chain, problems


def _moves(head: Row, transitions: list[Row]) -> list[str]:
    if not transitions:
        return [f"{head.label}: has no transitions (its `received` row was deleted)"]
    states = [str(t.content["state"]) for t in transitions]
    if states[0] != "received":
        return [f"{transitions[0].label}: a history starts at received, not at {states[0]}"]
    for i in range(1, len(states)):
        if states[i] not in (allowed := allowed_next(states[:i])):
            return [f"{transitions[i].label}: {states[i - 1]} → {states[i]} is not a legal move (allowed from "
                    f"{states[i - 1]}: {', '.join(allowed) or 'nothing, it is final'})"]
    return []


class Keys:
    """Who signs a ledger's rows and which public key its readers require (see `Ledger` for the kinds of `key`)."""

    def __init__(self, key: Ed25519PrivateKey | Ed25519PublicKey | str | Path | None) -> None:
        self.path = Path(key) if isinstance(key, Path) else None
        self._private = Ed25519PrivateKey.generate() if key is None else key if isinstance(
            key, Ed25519PrivateKey) else None
        if key is None or isinstance(key, Path):
            self._pinned = None
        elif isinstance(key, Ed25519PrivateKey | Ed25519PublicKey):
            self._pinned = public_key_b64(key)
        elif isinstance(key, str) and public_key(key.strip()) is not None:
            self._pinned = key.strip()
        else:
            raise ConfigError(f"{key!r} is not base64 of a 32-byte Ed25519 public key (`hyperforget request audit` "
                              "prints the one a ledger is signed with)")

    def pinned(self) -> str | None:
        """The public key (base64) readers require; None: the one the ledger records (a throwaway key); MISSING:
        the project's key file is gone. Never creates a key."""
        if self._pinned is None and self.path is not None:
            if not (os.environ.get(ENV_VAR, "").strip() or self.path.exists()):
                return MISSING
            self._private = load_or_create_key(self.path)[0]
            self._pinned = public_key_b64(self._private)
        return self._pinned

    def signer(self, url: str) -> Ed25519PrivateKey:
        """The private key that signs new rows (the project's file key is created here, on the first write)."""
        if self._private is None and self.path is not None:
            self._private, created = load_or_create_key(self.path)
            self._pinned = public_key_b64(self._private)
            if created:
                log.warning("created the ledger's signing key %s (keep it safe and backed up: the ledger is verified "
                            "against it); public key %s", self.path, self._pinned)
        if self._private is None:
            raise ConfigError(f"the ledger {url} was opened with a public key only, to verify it; writing to it "
                              "needs the ledger's private key")
        return self._private

    def wrong(self, g: Genesis, expected: str) -> str:
        """Why a genesis row signed by another key than `expected` is refused."""
        if expected == MISSING:
            return (f"genesis row: the ledger is signed by key {fingerprint(g.public_key)}, but its key {self.path} "
                    f"is missing (and ${ENV_VAR} is not set): restore the key from its backup")
        return (f"genesis row: the ledger is signed by key {fingerprint(g.public_key)}, not by the expected key "
                f"{fingerprint(expected)}: someone re-signed it with their own key (restore the ledger from a backup), "
                "or this is not the ledger's key")
