"""The run directory (DESIGN §3): a local path or any fsspec URI, with an atomic manifest, and its layout.

``RunLayout`` names every stage and every file of a run once; the plan, the stages, the report and
``itool compare`` ask it rather than spelling paths.

Every stage writes its outputs under ``<run>/`` and records them in ``manifest.json``
(status, outputs with checksums, timings). A stage whose outputs are complete is skipped on rerun.
Writes are atomic: a temporary name, then a rename (local) or a single put (object stores), so a crash
never leaves a partial file that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from itool_ray import storage

log = logging.getLogger(__name__)


class RunDirError(RuntimeError):
    """The run directory cannot be used (unwritable, full, or inconsistent)."""


BASE, WARMUP = "base", "warmup"
CONTROLS = ("control", "control_targeted")  # the random and the targeted SFT control


@dataclass(frozen=True)
class RunLayout:
    """Every stage name and file path of a run, relative to its run directory.

    A *policy* is a model the run evaluates: ``base``, ``warmup``, ``iter_<k>``, ``control``,
    ``control_targeted``. Training stages and their outputs live in a folder named after the policy they
    make; iteration ``k`` has its steps under ``iter_<k>/``.
    """

    iterations: int
    controls: tuple[str, ...] = CONTROLS  # policy names of the controls this run trains
    difficulty: bool = False  # warmup.bucket_by: perplexity adds a difficulty stage

    @classmethod
    def of(cls, cfg: Any) -> RunLayout:
        """The layout a config makes (``run.iterations``, ``run.controls``, ``warmup.bucket_by``)."""
        names = {"random": "control", "targeted": "control_targeted"}
        return cls(
            iterations=cfg.run.iterations,
            controls=tuple(names[c] for c in ("random", "targeted") if c in cfg.run.controls),
            difficulty=cfg.warmup.bucket_by == "perplexity",
        )

    # -- stages of the run as a whole (the others are per policy or per iteration, below) ---------
    DATA_STAGE, MODEL_STAGE, DIFFICULTY_STAGE, REPORT_STAGE = "data", "model", "difficulty", "report"

    # -- run-level files --------------------------------------------------------------------------
    CONFIG = "config.yaml"
    MANIFEST = "manifest.json"
    LOG = "logs/itool.log"
    RESULTS = "results.json"
    REPORT = "report.md"
    BASE_MODEL = "model/base_path.txt"  # where the base model is (a directory, URI or hub id)
    BASE_UPLOAD = "model/base"  # the base model's copy in an object-store run root
    DIFFICULTY = "data/difficulty.json"
    PLOTS = ("accuracy", "benchmarks", "preference_training")
    COMPARE_DIR = "compare"  # itool compare: one run directory a variant below it, and the table
    COMPARE_RESULTS = "compare/results.json"
    COMPARE_TABLE = "compare/compare.md"

    @staticmethod
    def split(name: str) -> str:
        return f"data/{name}.jsonl"

    @staticmethod
    def plot(name: str) -> str:
        return f"plots/{name}.png"

    # -- policies ---------------------------------------------------------------------------------
    @staticmethod
    def iteration(k: int) -> str:
        return f"iter_{k}"

    def policies(self) -> list[str]:
        """Every policy the run evaluates, in the order of the learning table."""
        its = [self.iteration(k) for k in range(1, self.iterations + 1)]
        return [BASE, WARMUP, *its, *self.controls]

    def previous(self, k: int) -> str:
        """The policy iteration ``k`` starts from (mines and searches with)."""
        return WARMUP if k == 1 else self.iteration(k - 1)

    @staticmethod
    def policy_file(policy: str) -> str:
        """The file a training stage leaves: where its checkpoint is."""
        return f"{policy}/policy.txt"

    @staticmethod
    def is_model_ref(rel: str) -> bool:
        """Whether a run file holds a model reference (``RunDir.model_ref``)."""
        return rel == RunLayout.BASE_MODEL or (rel.endswith("/policy.txt") and rel.count("/") == 1)

    @staticmethod
    def checkpoint(policy: str) -> str:
        return f"{policy}/ckpt"

    @staticmethod
    def eval_file(policy: str) -> str:
        return "evals/base.json" if policy == BASE else f"{policy}/eval.json"

    # -- an iteration's files ---------------------------------------------------------------------
    def mined(self, k: int) -> str:
        return f"{self.iteration(k)}/deficient.parquet"

    def mining_summary(self, k: int) -> str:
        return f"{self.iteration(k)}/mining_summary.json"

    def trees(self, k: int) -> str:
        return f"{self.iteration(k)}/trees.jsonl"

    def search_stats(self, k: int) -> str:
        return f"{self.iteration(k)}/search_stats.json"

    def pairs(self, k: int) -> str:
        return f"{self.iteration(k)}/pairs.jsonl"

    def pair_stats(self, k: int) -> str:
        return f"{self.iteration(k)}/pair_stats.json"

    # -- stage names ------------------------------------------------------------------------------
    @staticmethod
    def eval_stage(policy: str) -> str:
        return f"{policy}/eval" if policy.startswith("iter_") else f"eval_{policy}"

    def train_stage(self, policy: str) -> str:
        """The stage that trains ``policy`` (``warmup``, ``iter_<k>/train``, a control)."""
        return f"{policy}/train" if policy.startswith("iter_") else policy

    @staticmethod
    def step(k: int, step: str) -> str:
        """An iteration's stage: ``mine``, ``search``, ``pairs``, ``train`` or ``eval``."""
        return f"{RunLayout.iteration(k)}/{step}"

    def files(self) -> Iterator[str]:
        """Every file path this layout names (checkpoint directories excluded)."""
        yield from (self.CONFIG, self.MANIFEST, self.LOG, self.RESULTS, self.REPORT)
        yield from (self.BASE_MODEL, self.DIFFICULTY, self.split("train"), self.split("heldout"))
        yield from (self.plot(p) for p in self.PLOTS)
        yield from (self.COMPARE_RESULTS, self.COMPARE_TABLE)
        for policy in self.policies():
            yield self.eval_file(policy)
            if policy != BASE:
                yield self.policy_file(policy)
        for k in range(1, self.iterations + 1):
            yield from (self.mined(k), self.mining_summary(k), self.trees(k), self.search_stats(k))
            yield from (self.pairs(k), self.pair_stats(k))


class RunDir:
    def __init__(self, uri: str):
        # A relative local root ("runs", the default) is made absolute here: model references resolved
        # against it (``model_at``) go to training workers and replicas, whose working directory is not the
        # driver's.
        self.uri = os.path.abspath(os.path.expanduser(uri)) if "://" not in uri else uri.rstrip("/")
        try:
            self.fs, self.root = storage.filesystem(self.uri)
        except storage.StorageError as e:
            raise RunDirError(f"run.root: {e}") from None
        self.local = storage.is_local(self.uri)
        try:
            self.fs.makedirs(self.root, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"cannot create run directory {self.uri}: {e.strerror or e}") from None

    # -- paths ------------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """A path inside the run directory, as the filesystem sees it (local path or bucket key)."""
        return "/".join([self.root, *parts])

    def url(self, *parts: str) -> str:
        return "/".join([self.uri, *parts])

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    # -- atomic writes ----------------------------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes) -> str:
        target = self.path(rel)
        try:
            self.fs.makedirs(os.path.dirname(target), exist_ok=True)
            storage.write_atomic(target if self.local else self.url(rel), data)
        except OSError as e:
            raise RunDirError(f"cannot write {self.url(rel)}: {e.strerror or e}") from None
        return target

    def write_text(self, rel: str, text: str) -> str:
        return self.write_bytes(rel, text.encode())

    def write_json(self, rel: str, obj: Any) -> str:
        return self.write_text(rel, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")

    def read_text(self, rel: str) -> str:
        with self.fs.open(self.path(rel), "r") as f:
            return f.read()

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_text(rel))

    def checksum(self, rel: str) -> str:
        """sha256 of a file, or of a directory's files (names and contents, sorted)."""
        h = hashlib.sha256()
        target = self.path(rel)
        files = sorted(self.fs.find(target)) if self.fs.isdir(target) else [target]
        for f in files:
            h.update(f[len(target) :].encode())
            with self.fs.open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        return h.hexdigest()

    # -- manifest ---------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        if not self.exists(RunLayout.MANIFEST):
            return {"stages": {}}
        try:
            return self.read_json(RunLayout.MANIFEST)
        except json.JSONDecodeError as e:
            raise RunDirError(
                f"{self.url(RunLayout.MANIFEST)} is corrupt ({e}); move it away to start over"
            ) from None

    def stage_done(self, name: str) -> bool:
        """Done = recorded as done and every recorded output still there, unchanged. Outputs are hashed
        once, when the stage ends; later checks compare their listing (names, sizes, modification times or
        ETags), which costs no reading: an 8B checkpoint is not re-hashed on every run. A listing that
        changed while the bytes did not (the run directory copied or moved: ``cp -r``, an object-store
        copy) is told apart by the checksum, once: the new listing is recorded."""
        entry = self.manifest()["stages"].get(name)
        if not entry or entry.get("status") != "done":
            return False
        listings = entry.get("listings", {})
        relisted = {}
        for rel, digest in entry.get("checksums", {}).items():
            if not self.exists(rel):
                return False
            key = self.listing_key(rel)
            if listings.get(rel) == key:
                continue
            if self.checksum(rel) != digest:  # rewritten, or a file added or removed
                return False
            relisted[rel] = key
        if relisted:
            if listings:
                log.info("%s: outputs copied or moved since the stage ended; their checksums match", name)
            self._update_stage(name, listings={**listings, **relisted})
        return True

    # -- model references (policy.txt, model/base_path.txt) ------------------------------------------
    def model_ref(self, model: str) -> str:
        """What a run file stores for ``model``: a path relative to the run directory (``./warmup/ckpt``)
        when the model lies inside it, so a copied or moved run finds its own checkpoints; else the model as
        given (a path or URI elsewhere, a hub id)."""
        here, there = self._comparable(self.uri), self._comparable(model)
        if not there.startswith(here + "/"):
            return model
        if storage.is_local(model) and not os.path.exists(there):
            return model  # not a path after all: a hub id that happens to look like one
        return "./" + there[len(here) + 1 :]

    def write_model(self, rel: str, model: str) -> str:
        """Write the file ``rel`` naming ``model`` (its reference, ``model_ref``)."""
        return self.write_text(rel, self.model_ref(model) + "\n")

    def read_model(self, rel: str) -> str:
        """The model the file ``rel`` names (its reference resolved, ``model_at``)."""
        return self.model_at(self.read_text(rel).strip())

    def model_at(self, ref: str) -> str:
        """The model a stored reference names: a relative one (``./``, ``../``) resolved against this run
        directory, anything else as it is."""
        if not ref.startswith(("./", "../")):
            return ref
        scheme, sep, path = self.uri.rpartition("://")
        resolved = posixpath.normpath(posixpath.join(path, ref))
        return f"{scheme}{sep}{resolved}" if sep else resolved

    def _rebase_ref(self, ref: str, source: RunDir) -> str:
        """``source``'s reference as seen from here: relative when both the model and this run lie in
        ``source`` (an ``itool compare`` variant under its base run), so copying the whole run keeps it."""
        model = source.model_at(ref)
        if model == ref:
            return ref
        here, inside = self._comparable(self.uri), self._comparable(source.uri)
        if here.startswith(inside + "/"):
            return posixpath.relpath(self._comparable(model), here)
        return model

    @staticmethod
    def _comparable(uri: str) -> str:
        """A form in which "lies inside" is a string prefix: an absolute local path, or the URI itself."""
        if storage.is_local(uri):
            return os.path.abspath(storage.local_path(uri))
        return uri.rstrip("/")

    def listing_key(self, rel: str) -> str:
        """A digest of an output's listing: changes when a file under it is added, removed or rewritten."""
        return hashlib.sha256(json.dumps(storage.listing(self.url(rel))).encode()).hexdigest()

    def _update_stage(self, name: str, **fields: Any) -> None:
        m = self.manifest()
        m["stages"].setdefault(name, {}).update(fields)
        self.write_json(RunLayout.MANIFEST, m)

    def note_stage(self, name: str, **fields: Any) -> None:
        """Add facts to a finished stage's record (what it left held, …)."""
        self._update_stage(name, **fields)

    def adopt(self, name: str, source: RunDir) -> None:
        """Record stage ``name`` as done here with ``source``'s outputs (``itool compare``: variants share a
        run's completed prefix). Its files are copied; its directories (checkpoints) stay where they are,
        referenced by the copied files (``policy.txt``, its reference rebased)."""
        entry = source.manifest()["stages"].get(name)
        if not entry or not source.stage_done(name):
            raise RunDirError(f"cannot share stage {name} of {source.uri}: it is not done there")
        files = [rel for rel in entry.get("outputs", []) if not source.fs.isdir(source.path(rel))]
        for rel in files:
            if RunLayout.is_model_ref(rel):
                self.write_text(rel, self._rebase_ref(source.read_text(rel).strip(), source) + "\n")
            else:
                self.write_bytes(rel, source.fs.cat_file(source.path(rel)))
        self._update_stage(
            name,
            **{
                **entry,
                "outputs": files,
                "checksums": {rel: self.checksum(rel) for rel in files if rel in entry.get("checksums", {})},
                "listings": {rel: self.listing_key(rel) for rel in files},
                "adopted_from": source.uri,
            },
        )

    def record_fleet(self, event: dict[str, Any]) -> None:
        """Append a fleet event (start, reload, close) to the manifest's ``fleet`` list."""
        m = self.manifest()
        m.setdefault("fleet", []).append({**event, "at": round(time.time(), 3)})
        self.write_json(RunLayout.MANIFEST, m)

    def forget_from(self, names: list[str]) -> None:
        """Mark stages as not done (for --restart-from)."""
        m = self.manifest()
        for n in names:
            m["stages"].pop(n, None)
        self.write_json(RunLayout.MANIFEST, m)

    @contextmanager
    def stage(self, name: str):
        """Record a stage's run: ``with run.stage("warmup") as st: ...; st.outputs = ["warmup/ckpt"]``."""
        rec = _StageRecord()
        start = time.time()
        self._update_stage(name, status="running", started=start)
        try:
            yield rec
        except BaseException as e:
            try:
                self._update_stage(
                    name, status="failed", error=f"{type(e).__name__}: {e}", seconds=time.time() - start
                )
            except RunDirError as record_error:  # e.g. the disk is full: the stage's own error is the news
                log.error("could not record the failure of %s: %s", name, record_error)
            raise
        checksums = {rel: self.checksum(rel) for rel in rec.outputs}
        listings = {rel: self.listing_key(rel) for rel in rec.outputs}
        self._update_stage(
            name,
            status="done",
            outputs=list(rec.outputs),
            checksums=checksums,
            listings=listings,
            summary=rec.summary,
            seconds=round(time.time() - start, 3),
            ended=time.time(),
        )


class _StageRecord:
    def __init__(self) -> None:
        self.outputs: list[str] = []
        self.summary: dict[str, Any] = {}
