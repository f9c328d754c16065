"""JSON-lines files as an erasure connector, shipped as its own package (a test fixture).

A dataset is namespace "jsonl" and the absolute path of a `.jsonl` file; each line is one JSON
object and the key column is one of its fields (integers: key type "int64"; strings:
"string"). Erasure rewrites the file without the subject's lines to a temporary file in the
same folder and renames it over the original (atomic on POSIX): a reader sees the old file or
the new one, never half. The file keeps no history, so nothing else needs purging.

Only the engine's public plug-in surface is used: `connectors.base` (the protocol's data
types, `Presentation`, `ConnectorPlugin`), `erasure.config` (the section vocabulary) and
`erasure.errors`.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel

from connectors.base import (Capabilities, ConnectorPlugin, ConnectorRegistry, EraseResult,
                             Presentation, TargetCount)
from erasure.config import SECTION, Flag
from erasure.errors import ConnectorError, UnknownDatasetError

NAMESPACE = "jsonl"


class JsonlSettings(BaseModel):
    """`[jsonl]` of erasure.toml."""

    model_config = SECTION
    fsync: Flag = True          # flush the rewritten file (and its folder) before the rename


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _matches(cell: Any, value: Any) -> bool:
    """The key types are kept apart: 42 does not match "42", true does not match 1."""
    if _is_int(value):
        return _is_int(cell) and cell == value
    return isinstance(cell, str) and cell == value


class JsonlConnector:
    name = "jsonl"
    capabilities = Capabilities(
        residue_scan=True, batch=True, guard="exact", erase_order=0,
        notes=("the file is rewritten whole and renamed over the original; JSON-lines keeps "
               "no old versions",
               "no versions: a change since the plan trips the guard; re-plan and run again"))
    presentation = Presentation("JSON-lines file", "JSON-lines files",
                                "file rewritten without the subject's lines",
                                color="#7a5c99", path_names=True)

    def __init__(self, settings: JsonlSettings | None = None):
        self.settings = settings or JsonlSettings()

    # ---- where ---------------------------------------------------------------------------
    @staticmethod
    def path(namespace: str, name: str) -> Path | None:
        if namespace != NAMESPACE or not name.startswith("/") or not name.endswith(".jsonl"):
            return None
        return Path(name)

    def handles(self, namespace: str, name: str) -> bool:
        p = self.path(namespace, name)
        return p is not None and p.is_file()

    def existing(self, namespace: str, name: str) -> Path:
        p = self.path(namespace, name)
        if p is None or not p.is_file():
            raise UnknownDatasetError(f"no JSON-lines file at {name}")
        return p

    @staticmethod
    def stale_temps(p: Path) -> list[Path]:
        """Copies an interrupted rewrite of ours left: each may hold the subject's lines."""
        return sorted(p.parent.glob(f".{p.name}.erasure-*.tmp"))

    # ---- reading -------------------------------------------------------------------------
    @staticmethod
    def _lines(p: Path) -> list[tuple[bytes, dict[str, Any] | None]]:
        """Each line as written (line end kept) with its object; None for a blank line."""
        out: list[tuple[bytes, dict[str, Any] | None]] = []
        for n, raw in enumerate(p.read_bytes().splitlines(keepends=True), 1):
            if not raw.strip():
                out.append((raw, None))
                continue
            try:
                obj = json.loads(raw)
            except ValueError as exc:
                raise ConnectorError(f"{p}: line {n} is not JSON ({exc.msg}): cannot prove "
                                     "what it holds") from None
            if not isinstance(obj, dict):
                raise ConnectorError(f"{p}: line {n} is not a JSON object")
            out.append((raw, obj))
        return out

    def key_type(self, namespace: str, name: str, column: str) -> str | None:
        cells = [obj[column] for _, obj in self._lines(self.existing(namespace, name))
                 if obj is not None and obj.get(column) is not None]
        if not cells:
            return None
        if all(_is_int(c) for c in cells):
            return "int64"
        if all(isinstance(c, str) for c in cells):
            return "string"
        raise ConnectorError(f"{name}: field {column!r} mixes types "
                             f"({', '.join(sorted({type(c).__name__ for c in cells}))}): "
                             "not a key column")

    def count(self, namespace: str, name: str, column: str, values: Sequence[Any],
              with_residue: bool = True) -> TargetCount:
        p = self.existing(namespace, name)
        rows = {v: 0 for v in values}
        for _, obj in self._lines(p):
            if obj is None or column not in obj:
                continue
            for v in values:
                if _matches(obj[column], v):
                    rows[v] += 1
        files = {v: [p.name] if n else [] for v, n in rows.items()}
        stale = self.stale_temps(p)
        residue = {v: [f"{t.name} (temporary copy left by an interrupted rewrite)"
                       for t in stale] for v in values} if with_residue else {}
        return TargetCount(rows=rows, files=files, version=None, residue=residue)

    def live_rows(self, namespace: str, name: str, column: str,
                  values: Sequence[Any]) -> dict[Any, int]:
        return self.count(namespace, name, column, values, with_residue=False).rows

    # ---- erasing -------------------------------------------------------------------------
    def erase(self, namespace: str, name: str, column: str, values: Sequence[Any],
              tag: str) -> EraseResult:
        p = self.existing(namespace, name)
        for t in self.stale_temps(p):
            t.unlink(missing_ok=True)       # our own copy from a killed run: never live data
        lines = self._lines(p)
        kept = [raw for raw, obj in lines
                if obj is None or column not in obj
                or not any(_matches(obj[column], v) for v in values)]
        deleted = len(lines) - len(kept)
        if not deleted:
            return EraseResult(rows_deleted=0, version_before=None, version_after=None,
                               files_removed=0, files_added=0)
        tmp = p.with_name(f".{p.name}.erasure-{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.writelines(kept)
                fh.flush()
                if self.settings.fsync:
                    os.fsync(fh.fileno())
            os.replace(tmp, p)
            if self.settings.fsync:
                fd = os.open(p.parent, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        finally:
            tmp.unlink(missing_ok=True)
        return EraseResult(rows_deleted=deleted, version_before=None, version_after=None,
                           files_removed=1, files_added=1)

    def residue_after(self, namespace: str, name: str, mode: str | None = None) -> dict[str, Any]:
        return {"mode": "rewrite", "remains": [], "until": None,
                "note": "file rewritten without the subject's lines and renamed over the "
                        "original"}


def _build(config: Any, registry: ConnectorRegistry) -> JsonlConnector:
    return JsonlConnector(config.section("jsonl"))


PLUGIN = ConnectorPlugin("jsonl", JsonlConnector.presentation, _build, section="jsonl",
                         model=JsonlSettings, default=JsonlSettings)
