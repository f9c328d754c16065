"""Delta log cleanup that changes no table setting, through the table's own storage API.

`cleanup_metadata()` only deletes what `delta.logRetentionDuration` allows, so the old purge
lowered the table's retention settings and restored them afterwards; a crash in between left
them at zero for good. Instead, after `create_checkpoint()` at version V, the purge deletes
the log files older than V itself:

- commit JSONs `NNN.json` with NNN < V and their checksums `NNN.crc`;
- checkpoints `NNN.checkpoint*.parquet|json` with NNN < V (classic, multi-part and V2), and
  V2 sidecars under `_delta_log/_sidecars/` that only those checkpoints reference;
- log compactions `X.Y.compacted.json` with Y < V.

`_last_checkpoint` and everything from V on is kept. The checkpoint at V still carries
"tombstones" (remove actions, with the removed file's path and partition values, kept for
`delta.deletedFileRetentionDuration`); tombstones of files that no longer exist (the purge's
VACUUM just deleted them) serve nothing and are dropped from that checkpoint.

All access goes through `deltalake.fs.DeltaStorageHandler`, so the same code serves local
folders and object stores (s3://, gs://, abfss://, az://). Paths are relative to the table
root, with `/` separators. No regular expression here is built from data: the patterns
below are fixed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

from ..keymatch import array_of

LOG = "_delta_log"
SIDECARS = f"{LOG}/_sidecars"
# A file that holds a key but that no commit or checkpoint names may be another writer's
# data file written but not yet committed. The purge deletes such an orphan only once its
# modification time is older than this; a younger one is left and verification reports it.
# The default of `[delta] orphan_grace` (DeltaSettings), which is what the purge reads.
ORPHAN_GRACE = timedelta(hours=1)

_COMMIT = re.compile(r"(\d{20})\.json")
_CRC = re.compile(r"(\d{20})\.crc")
_CHECKPOINT = re.compile(r"(\d{20})\.checkpoint(?:\.\d+\.\d+|\.[0-9A-Za-z-]+)?\.(?:parquet|json)")
_COMPACTED = re.compile(r"(\d{20})\.(\d{20})\.compacted\.json")


def storage(uri: str, options: dict[str, str] | None):
    """A pyarrow FileSystem rooted at the table (local folder or object-store prefix)."""
    from deltalake.fs import DeltaStorageHandler
    from pyarrow.fs import PyFileSystem

    return PyFileSystem(DeltaStorageHandler(uri, dict(options or {}) or None))


@dataclass
class LogFile:
    path: str                 # relative to the table root
    kind: str                 # commit | crc | checkpoint | compacted | sidecar
    version: int | None       # the version it belongs to (a compaction: its last version)


def list_log(fs) -> list[LogFile]:
    from pyarrow.fs import FileSelector, FileType

    out: list[LogFile] = []
    for info in fs.get_file_info(FileSelector(LOG, allow_not_found=True, recursive=False)):
        if info.type != FileType.File:
            continue
        name = info.path.rsplit("/", 1)[-1]
        for kind, rx in (("commit", _COMMIT), ("crc", _CRC), ("checkpoint", _CHECKPOINT)):
            m = rx.fullmatch(name)
            if m:
                out.append(LogFile(f"{LOG}/{name}", kind, int(m.group(1))))
                break
        else:
            m = _COMPACTED.fullmatch(name)
            if m:
                out.append(LogFile(f"{LOG}/{name}", "compacted", int(m.group(2))))
    for info in fs.get_file_info(FileSelector(SIDECARS, allow_not_found=True, recursive=False)):
        if info.type == FileType.File:
            out.append(LogFile(f"{SIDECARS}/{info.path.rsplit('/', 1)[-1]}", "sidecar", None))
    return sorted(out, key=lambda f: (f.version if f.version is not None else -1, f.path))


@dataclass
class LogNames:
    """Data and change-data files the log names, from every commit and checkpoint read."""

    added: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    cdc: dict[str, int] = field(default_factory=dict)          # path -> commit version
    sidecars: dict[str, set[str]] = field(default_factory=dict)  # checkpoint -> sidecar paths

    def named(self, rel: str) -> bool:
        return rel in self.added or rel in self.removed or rel in self.cdc


def _rel(path: Any) -> str | None:
    """A relative table path from an action (URL-encoded); absolute URIs (shallow clones)
    point outside the table and are never ours to delete."""
    if not isinstance(path, str) or not path:
        return None
    p = unquote(path)
    if "://" in p or p.startswith("/"):
        return None
    return p


def _take(actions: dict, names: LogNames, version: int | None, origin: str) -> None:
    for kind in ("add", "remove", "cdc", "sidecar"):
        a = actions.get(kind)
        if not isinstance(a, dict):
            continue
        p = _rel(a.get("path"))
        if p is None:
            continue
        if kind == "add":
            names.added.add(p)
        elif kind == "remove":
            names.removed.add(p)
        elif kind == "cdc":
            names.cdc.setdefault(p, version if version is not None else -1)
        else:
            names.sidecars.setdefault(origin, set()).add(f"{SIDECARS}/{p}")


def _read_parquet_actions(fs, path: str, names: LogNames, version: int | None) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    with fs.open_input_file(path) as f:
        pf = pq.ParquetFile(f)
        cols = [c for c in ("add", "remove", "sidecar") if c in pf.schema_arrow.names]
        if not cols:
            return
        t = pf.read(columns=cols)
    for col in cols:
        typ = t.schema.field(col).type
        if not hasattr(typ, "get_field_index") or typ.get_field_index("path") < 0:
            continue
        for p in pc.struct_field(t.column(col), "path").to_pylist():
            _take({col: {"path": p}}, names, version, path)


def read_names(fs, files: list[LogFile]) -> LogNames:
    names = LogNames()
    for f in files:
        if f.kind in ("commit", "compacted") or (f.kind == "checkpoint"
                                                 and f.path.endswith(".json")):
            with fs.open_input_stream(f.path) as s:
                text = s.read().decode("utf-8", "replace")
            for line in text.splitlines():
                try:
                    actions = json.loads(line) if line.strip() else {}
                except json.JSONDecodeError:
                    continue
                if isinstance(actions, dict):
                    _take(actions, names, f.version if f.kind == "commit" else None, f.path)
        elif f.kind in ("checkpoint", "sidecar"):
            _read_parquet_actions(fs, f.path, names, None)
    return names


def _put(fs, path: str, data: bytes) -> None:
    # pyarrow's PythonFile hands the handler a Buffer, which delta-rs' stream refuses: write
    # through the storage handler's own stream, which takes bytes
    stream = fs.handler._handler.open_output_stream(path, None)
    try:
        stream.write(data)
    finally:
        stream.close()


def exists(fs, rel: str) -> bool:
    from pyarrow.fs import FileType

    return fs.get_file_info([rel])[0].type != FileType.NotFound


def drop_dead_tombstones(fs, version: int) -> int:
    """Rewrite the classic checkpoint at `version` without the remove actions of files that
    no longer exist. Returns how many were dropped."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = f"{LOG}/{version:020d}.checkpoint.parquet"
    if not exists(fs, path):
        return 0
    with fs.open_input_file(path) as f:
        t = pq.ParquetFile(f).read()      # not read_table: pyarrow.dataset imports pandas
    if "remove" not in t.column_names:
        return 0
    removes = t.column("remove")
    paths = pc.struct_field(removes, "path").to_pylist()
    valid = pc.is_valid(removes).to_pylist()
    dead = {p for p, ok in zip(paths, valid)
            if ok and p and (rel := _rel(p)) and not exists(fs, rel)}
    if not dead:
        return 0
    keep = array_of([not (ok and p in dead) for p, ok in zip(paths, valid)], pa.bool_())
    out = t.filter(keep)
    sink = pa.BufferOutputStream()
    pq.write_table(out, sink)
    data = sink.getvalue()
    _put(fs, path, data.to_pybytes())       # a single put: atomic on object stores
    last = f"{LOG}/_last_checkpoint"
    if exists(fs, last):
        with fs.open_input_stream(last) as s:
            meta = json.loads(s.read().decode("utf-8") or "{}")
        if meta.get("version") == version and "parts" not in meta:
            meta["size"] = out.num_rows
            if "sizeInBytes" in meta:
                meta["sizeInBytes"] = data.size
            meta.pop("checksum", None)       # it covered the old content
            _put(fs, last, json.dumps(meta, separators=(",", ":")).encode("utf-8"))
    return len(dead)


def delete_before(fs, version: int, files: list[LogFile], names: LogNames) -> list[str]:
    """Delete the log files older than `version` (see the module docstring)."""
    removed: list[str] = []
    old_cp = {f.path for f in files if f.kind == "checkpoint" and f.version is not None
              and f.version < version}
    keep_sc = set().union(*(s for cp, s in names.sidecars.items() if cp not in old_cp))
    drop_sc = set().union(*(s for cp, s in names.sidecars.items() if cp in old_cp)) - keep_sc
    # checkpoints first, then commits from the oldest: a crash in between leaves a log that
    # still reads from the checkpoint at `version`
    order = {"checkpoint": 0, "compacted": 1, "commit": 2, "crc": 3, "sidecar": 4}
    for f in sorted(files, key=lambda f: (order[f.kind], f.version or 0)):
        old = f.version is not None and f.version < version
        if (f.kind in order and f.kind != "sidecar" and old) or (
                f.kind == "sidecar" and f.path in drop_sc):
            fs.delete_file(f.path)
            removed.append(f.path)
    return removed


def delete_dead_change_data(fs, version: int, names: LogNames, live: set[str]) -> list[str]:
    """Change-data files written by commits older than `version`: once those commits are
    deleted no reader can reach them, and they hold full copies of deleted rows."""
    removed = []
    for p, v in sorted(names.cdc.items()):
        if 0 <= v < version and p not in live and exists(fs, p):
            fs.delete_file(p)
            removed.append(p)
    return removed
