"""`[delta] residue = "rewrite-history"`: remove the subject from every retained version of
a local Delta table and keep time travel for everyone else (issue 16, first slice).

After the logical erase (the MERGE, which removed every live file holding a key), each data
or change-data file that the log still names (an `add`, `remove` or `cdc` action in any
commit JSON or classic checkpoint) and that holds a key is copied without the subject's rows
into a new file next to it; then the log is rewritten to name the new file, with its size,
`numRecords` and statistics recomputed; then the old files are deleted. Versions, timestamps,
operations and every other row stay as they were.

Order of operations (each phase is idempotent; the journal says which files are being
replaced, the files themselves say how far each phase got):

0. **Plan**: refuse what this slice does not handle (`unsupported`), read every retained
   version and record its row count and an order-independent hash of everyone else's rows
   (`digests`), find the files holding a key, choose the new names, and write the journal
   `_delta_log/_erasure_rewrite/journal.json` (old path -> new path, the digests; never a
   key). A journal left by a crashed run is finished first.
1. **New files** are written (temp file, then rename) before any log file changes.
2. **Tombstones first**: in every log file holding `remove(old)`, a `remove(new)` is added
   next to it. A reader of any version then sees `old` or `new` removed alike. Checksum
   files (`NNN.crc`) of the affected versions are deleted (they are optional, and their
   sizes would be stale).
3. **Adds swapped**: every `add(old)` / `cdc(old)` becomes `add(new)` / `cdc(new)` with the
   new size and statistics; commitInfo predicates naming a key are redacted; statistics of
   files no longer on disk that name a key lose that column's min/max.
4. **Old tombstones dropped**: `remove(old)` actions are deleted.
   Every log file is replaced by writing a temp file and renaming it over the original, and
   the original is first copied into the journal folder (`orig/`) for the rollback below.
   Across the phases, a reader of any version (the latest included) always finds exactly
   one of `old`/`new` added and, where the version removed it, removed: never both, never
   a resurrected file.
5. **Proof**: every retained version is read again with deltalake and compared with the
   digests of step 0: same row count, same hash of the others' rows, no subject row. A
   mismatch restores the original log files, deletes the new files and fails the step.
6. **Old files deleted**, with the log backups, and the journal last.

A reader of an old version that listed its files before step 3 and reads them after step 6
fails with "file not found" and must reload; between steps 1 and 6 (seconds on small
tables) a reader of an old version may still see the subject's rows.

Refused (the plan says so before anything changes, see `unsupported`): object stores,
deletion vectors, column mapping, any reader version other than 1 or writer version above 4
(table features), multi-part or V2 checkpoints, sidecars, log compaction files, checkpoints
with parsed statistics, absolute paths, and a key column that is a partition column.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import unquote

from erasure.errors import ErasureFailed

from .residue import PREDICATE_KEY, _Matcher, _parquet_hits, _value_array

LOG = "_delta_log"
JOURNAL_DIR = f"{LOG}/_erasure_rewrite"
JOURNAL = f"{JOURNAL_DIR}/journal.json"
BACKUP_DIR = f"{JOURNAL_DIR}/orig"
REDACTED = "[redacted: named an erased subject]"

_COMMIT = re.compile(r"(\d{20})\.json")
_CRC = re.compile(r"(\d{20})\.crc")
_CLASSIC_CP = re.compile(r"(\d{20})\.checkpoint\.parquet")
_ANY_CP = re.compile(r"(\d{20})\.checkpoint\..+")
_COMPACTED = re.compile(r"\d{20}\.\d{20}\.compacted\.json")

# what this slice was tested with: reader version 1, writer versions up to 4 (check
# constraints, change data feed, generated columns), no table features
MAX_READER = 1
MAX_WRITER = 4


# ---- the log as files -------------------------------------------------------------------
@dataclass
class LogFiles:
    commits: dict[int, Path] = field(default_factory=dict)
    checkpoints: dict[int, Path] = field(default_factory=dict)     # classic, single file
    crcs: dict[int, Path] = field(default_factory=dict)
    foreign: list[str] = field(default_factory=list)    # files this slice does not handle

    def ordered(self) -> list[Path]:
        """Checkpoints and commits, oldest version first."""
        items = [(v, 0, p) for v, p in self.checkpoints.items()]
        items += [(v, 1, p) for v, p in self.commits.items()]
        return [p for _, _, p in sorted(items)]

    def oldest_version(self) -> int | None:
        if 0 in self.commits:
            return 0
        if self.checkpoints:
            return min(self.checkpoints)
        return min(self.commits) if self.commits else None

    def latest_version(self) -> int | None:
        return max(self.commits) if self.commits else None


def list_log(root: Path) -> LogFiles:
    out = LogFiles()
    log = root / LOG
    for p in sorted(log.iterdir()):
        name = p.name
        if p.is_dir():
            if name == "_erasure_rewrite":
                continue
            if any(p.iterdir()):
                out.foreign.append(f"{LOG}/{name}/")      # _sidecars/, _staged_commits/ ...
            continue
        if m := _COMMIT.fullmatch(name):
            out.commits[int(m.group(1))] = p
        elif m := _CRC.fullmatch(name):
            out.crcs[int(m.group(1))] = p
        elif m := _CLASSIC_CP.fullmatch(name):
            out.checkpoints[int(m.group(1))] = p
        elif _ANY_CP.fullmatch(name):
            out.foreign.append(name)                      # multi-part or V2 checkpoint
        elif _COMPACTED.fullmatch(name):
            out.foreign.append(name)
        elif name.startswith(".") and name.endswith(".crc"):
            continue                                      # Hadoop sidecar of a log file
        elif name in ("_last_checkpoint", "_last_vacuum_info"):
            continue
        elif name.endswith(".tmp") or ".tmp." in name:
            continue
        else:
            out.foreign.append(name)
    return out


def _json_lines(p: Path) -> list[tuple[str, Any]]:
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append((line, json.loads(line)))
    return out


def _read_checkpoint(p: Path):
    import pyarrow.parquet as pq

    return pq.ParquetFile(p).read()


def _actions(p: Path) -> list[dict]:
    """Every action of a commit JSON or classic checkpoint, as dicts."""
    if p.suffix == ".json":
        return [a for _, a in _json_lines(p) if isinstance(a, dict)]
    t = _read_checkpoint(p)
    out = []
    for row in t.to_pylist():
        out.append({k: v for k, v in row.items() if v is not None})
    return out


# ---- what this slice refuses ------------------------------------------------------------
def unsupported(root: Path | None, column: str | None = None) -> list[str]:
    """Why rewrite-history cannot be applied to the table (empty: it can). No reason holds
    a subject value."""
    if root is None:
        return ["the table is on an object store; this slice rewrites local tables only"]
    reasons: list[str] = []
    files = list_log(root)
    if files.foreign:
        reasons.append("the log has files this slice does not rewrite (multi-part or V2 "
                       "checkpoints, sidecars, log compactions): "
                       + ", ".join(sorted(files.foreign)[:3]))
    last = root / LOG / "_last_checkpoint"
    if last.is_file():
        try:
            meta = json.loads(last.read_text(encoding="utf-8") or "{}")
        except ValueError:
            meta = {}
        if "parts" in meta or "v2Checkpoint" in meta:
            reasons.append("_last_checkpoint names a multi-part or V2 checkpoint")
    partitions: set[str] = set()
    for p in files.ordered():
        if p.suffix == ".parquet":
            names = _read_checkpoint(p).schema
            for col in ("add", "remove"):
                if col in names.names:
                    typ = names.field(col).type
                    for sub in ("stats_parsed", "partitionValues_parsed"):
                        if typ.get_field_index(sub) >= 0:
                            reasons.append(f"checkpoint {p.name} holds {col}.{sub}, which this "
                                           "slice does not rewrite")
        for a in _actions(p):
            proto = a.get("protocol")
            if isinstance(proto, dict):
                r, w = proto.get("minReaderVersion", 1), proto.get("minWriterVersion", 2)
                feats = sorted(set(proto.get("readerFeatures") or [])
                               | set(proto.get("writerFeatures") or []))
                # column mapping in name mode is reader 2 / writer 5, without table features
                cm = r == 2 and w == 5 and not feats
                if (r > MAX_READER or w > MAX_WRITER or feats) and not cm:
                    reasons.append(
                        f"protocol reader {r} / writer {w}"
                        + (f" with table features {', '.join(feats)}" if feats else "")
                        + f" (this slice handles reader {MAX_READER}, writer up to "
                          f"{MAX_WRITER}, no table features)")
            meta = a.get("metaData")
            if isinstance(meta, dict):
                conf = meta.get("configuration") or {}
                if isinstance(conf, list):
                    conf = dict(conf)
                if conf.get("delta.columnMapping.mode", "none") not in ("none", "name"):
                    reasons.append("column mapping in id mode is enabled (name mode is "
                                   "handled: files hold the physical names)")
                if str(conf.get("delta.enableDeletionVectors", "false")).lower() == "true":
                    reasons.append("deletion vectors are enabled")
                partitions.update(meta.get("partitionColumns") or [])
            for kind in ("add", "remove", "cdc"):
                act = a.get(kind)
                if not isinstance(act, dict):
                    continue
                if act.get("deletionVector"):
                    reasons.append("a file has a deletion vector")
                path = unquote(str(act.get("path", "")))
                if "://" in path or path.startswith("/"):
                    reasons.append("a file is named by an absolute path (shallow clone)")
    if column is not None and column in partitions:
        reasons.append(f"the key column {column} is a partition column (its folders and "
                       "partition values would have to be renamed)")
    return list(dict.fromkeys(reasons))


# ---- the proof: per version, the others' rows --------------------------------------------
def _as_binary(col: Any) -> Any:
    """A column's values as binary text, the same for the same values whatever the physical
    type (string or large_string, int32 or int64 holding the same numbers): Arrow's cast to
    string, or each value's repr where Arrow cannot cast (lists, structs)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
        return pc.cast(arr, pa.large_binary())
    try:
        text = pc.cast(arr, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        text = pa.array([None if v is None else repr(v) for v in arr.to_pylist()], pa.string())
    return pc.cast(text, pa.large_binary())      # 64-bit offsets: a version may pass 2 GB


def table_digest(t: Any) -> str:
    """An order-independent digest of a table's rows (hex SHA-256): each row's values as
    text (`_as_binary`, columns by name, a null as a NUL byte), the rows sorted by Arrow,
    then one SHA-256 over every row's length and bytes. The same rows in any order, file
    layout or physical type give the same digest; one changed value, row or row count
    another. Computed in Arrow, not per Python row (bench/bench_rewrite_history.py: the
    proof reads every retained version three times)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    h = hashlib.sha256(f"rows:{t.num_rows};cols:{','.join(sorted(t.column_names))};"
                       .encode())
    if t.num_rows == 0:
        return h.hexdigest()
    cols = [_as_binary(t.column(c)) for c in sorted(t.column_names)]
    rows = (pc.binary_join_element_wise(*cols, pa.scalar(b"\x1f", pa.large_binary()),
                                        null_handling="replace", null_replacement="\x00")
            if len(cols) > 1 else pc.fill_null(cols[0], pa.scalar(b"\x00", pa.large_binary())))
    rows = pc.take(rows, pc.sort_indices(rows))
    if isinstance(rows, pa.ChunkedArray):
        rows = rows.combine_chunks()
    # every row's length (int64, from a fresh array: no offset), then the bytes of all rows
    # in order
    lengths = pc.cast(pc.binary_length(rows), pa.int64())
    h.update(memoryview(lengths.buffers()[1])[:8 * len(lengths)])
    offsets = memoryview(rows.buffers()[1]).cast("q")      # int64 offsets of the rows
    first, last = offsets[rows.offset], offsets[rows.offset + len(rows)]
    data = rows.buffers()[2]
    if data is not None:
        h.update(memoryview(data)[first:last])
    return h.hexdigest()


def version_digest(root: Path, version: int, column: str, values: Sequence[Any]) -> dict:
    """Rows of everyone else in `version` (count and order-independent hash: `table_digest`)
    and the subject's rows there."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    from ..keymatch import comparable, key_mask

    from deltalake import QueryBuilder

    from ..keymatch import arrow_table

    try:
        # through DataFusion, not to_pyarrow_table: it maps column-mapped physical names to
        # the table's columns (to_pyarrow_table reads them as nulls) and honours deletion
        # vectors
        t = arrow_table(QueryBuilder().register("t", DeltaTable(str(root), version=version))
                        .execute("SELECT * FROM t").read_all())
    except Exception as exc:      # a version whose files were vacuumed cannot be read
        return {"readable": False, "why": type(exc).__name__}
    # DataFusion's view types as the plain ones pyarrow's filter takes
    t = t.cast(pa.schema([pa.field(f.name, pa.string() if pa.types.is_string_view(f.type)
                                   else pa.binary() if pa.types.is_binary_view(f.type)
                                   else f.type, f.nullable) for f in t.schema]))
    arr = comparable(t.column(column).combine_chunks())
    hit = pc.fill_null(key_mask(arr, _value_array(list(values), arr.type)), False)
    others = t.filter(pc.invert(hit))
    return {"readable": True, "rows": others.num_rows,
            "hash": table_digest(others),
            "subject_rows": t.num_rows - others.num_rows}


def digests(root: Path, column: str, values: Sequence[Any]) -> dict[str, dict]:
    """`version_digest` of every version the log can still load, by version (as text)."""
    files = list_log(root)
    first, last = files.oldest_version(), files.latest_version()
    if first is None or last is None:
        return {}
    return {str(v): version_digest(root, v, column, values) for v in range(first, last + 1)}


def compare(before: dict[str, dict], after: dict[str, dict]) -> dict[str, dict]:
    """Per version: the evidence of the proof (counts, whether hashes match, subject rows)."""
    out: dict[str, dict] = {}
    for v, a in sorted(after.items(), key=lambda kv: int(kv[0])):
        b = before.get(v)
        e: dict[str, Any] = {"readable": a.get("readable", False)}
        if a.get("readable"):
            e.update(rows_other_after=a["rows"], subject_rows_after=a["subject_rows"],
                     hash_other_after=a["hash"])
        if b is not None:
            e["readable_before"] = b.get("readable", False)
            if b.get("readable"):
                e.update(rows_other_before=b["rows"], subject_rows_before=b["subject_rows"],
                         hash_other_before=b["hash"])
            e["same_other_rows"] = bool(b.get("readable") and a.get("readable")
                                        and b["rows"] == a["rows"] and b["hash"] == a["hash"])
        else:
            e["written_since"] = True        # a commit of another writer during the rewrite
        out[v] = e
    for v, b in before.items():
        if v not in after:
            out[v] = {"readable": False, "readable_before": b.get("readable", False),
                      "same_other_rows": False}
    return out


def problems(proof: dict[str, dict]) -> list[str]:
    bad = []
    for v, e in proof.items():
        if e.get("readable_before") and not e.get("readable"):
            bad.append(f"version {v} no longer reads")
        elif e.get("readable_before") and not e.get("same_other_rows"):
            bad.append(f"version {v}: the other rows differ from before the rewrite")
        if e.get("subject_rows_after"):
            bad.append(f"version {v} still returns {e['subject_rows_after']} subject rows")
    return bad


# ---- new files -------------------------------------------------------------------------
def _stat_value(v: Any, typ) -> tuple[bool, Any]:
    """A min/max value as Delta's stats JSON holds it; (False, None) where this slice does
    not write one (the column then has no min/max: no data skipping, never a wrong one)."""
    import math

    import pyarrow as pa

    if v is None:
        return False, None
    if pa.types.is_integer(typ):
        return True, int(v)
    if pa.types.is_floating(typ):
        return (False, None) if math.isnan(v) else (True, float(v))
    if pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_string_view(typ):
        return True, str(v)
    if pa.types.is_date32(typ) or pa.types.is_date64(typ):
        return True, v.isoformat()
    return False, None


def _column_stats(arr, old_min: Any, old_max: Any, old_nulls: Any) -> tuple[Any, Any, Any]:
    """(min, max, nullCount) for the shape the old stats had (nested for structs)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    typ = arr.type
    if pa.types.is_struct(typ):
        mins: dict = {}
        maxs: dict = {}
        nulls: dict = {}
        for i in range(typ.num_fields):
            name = typ.field(i).name
            sub = pc.struct_field(arr, [i])
            mn, mx, nc = _column_stats(
                sub, (old_min or {}).get(name) if isinstance(old_min, dict) else None,
                (old_max or {}).get(name) if isinstance(old_max, dict) else None,
                (old_nulls or {}).get(name) if isinstance(old_nulls, dict) else None)
            if mn is not None:
                mins[name] = mn
            if mx is not None:
                maxs[name] = mx
            if nc is not None:
                nulls[name] = nc
        return (mins or None) if old_min is not None else None, \
            (maxs or None) if old_max is not None else None, \
            (nulls or None) if old_nulls is not None else None
    nulls_n = arr.null_count if old_nulls is not None else None
    mn = mx = None
    if (old_min is not None or old_max is not None) and len(arr) - arr.null_count > 0:
        cast = arr.cast(pa.string()) if pa.types.is_string_view(typ) else arr
        mm = pc.min_max(cast)
        ok_min, vmin = _stat_value(mm["min"].as_py(), typ)
        ok_max, vmax = _stat_value(mm["max"].as_py(), typ)
        if ok_min and old_min is not None:
            mn = vmin
        if ok_max and old_max is not None:
            mx = vmax
    return mn, mx, nulls_n


def new_stats(old_stats: str | None, table) -> str | None:
    """The stats JSON of the new file: numRecords, and min/max/nullCount recomputed for the
    columns the old stats had."""
    if not old_stats:
        return old_stats
    old = json.loads(old_stats)
    out: dict[str, Any] = {"numRecords": table.num_rows}
    for kind in ("minValues", "maxValues", "nullCount"):
        if kind in old:
            out[kind] = {}
    for name in table.column_names:
        arr = table.column(name).combine_chunks()
        mn, mx, nc = _column_stats(arr, (old.get("minValues") or {}).get(name),
                                   (old.get("maxValues") or {}).get(name),
                                   (old.get("nullCount") or {}).get(name))
        if mn is not None and "minValues" in out:
            out["minValues"][name] = mn
        if mx is not None and "maxValues" in out:
            out["maxValues"][name] = mx
        if nc is not None and "nullCount" in out:
            out["nullCount"][name] = nc
    for k, v in old.items():
        if k not in out and k not in ("minValues", "maxValues", "nullCount", "numRecords"):
            out[k] = v        # tightBounds and the like: still true of an exact recount
    return json.dumps(out, separators=(",", ":"))


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _no_views(t):
    """string_view / binary_view columns as string / binary: pyarrow has no filter kernel
    for views. Parquet stores both the same way (BYTE_ARRAY), so Delta's schema is kept."""
    import pyarrow as pa

    fields = []
    for f in t.schema:
        if pa.types.is_string_view(f.type):
            f = f.with_type(pa.string())
        elif pa.types.is_binary_view(f.type):
            f = f.with_type(pa.binary())
        fields.append(f)
    target = pa.schema(fields, metadata=t.schema.metadata)
    return t if target == t.schema else t.cast(target)


def write_without(old: Path, new: Path, names: set[str], values: Sequence[Any]) -> None:
    """`old` without the rows holding a key, written to `new` (temp file, then rename)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ..keymatch import comparable, key_mask

    t = _no_views(pq.ParquetFile(old).read())
    col = next((n for n in t.column_names if n in names), None)
    if col is None:
        raise ErasureFailed(f"{old.name} holds a key but has no key column to filter by")
    arr = comparable(t.column(col).combine_chunks())
    keep = pc.invert(pc.fill_null(key_mask(arr, _value_array(list(values), arr.type)), False))
    out = t.filter(keep)
    sink = pa.BufferOutputStream()
    pq.write_table(out, sink, compression="snappy")
    _atomic_write(new, sink.getvalue().to_pybytes())


# ---- the journal -----------------------------------------------------------------------
def load_journal(root: Path) -> dict | None:
    p = root / JOURNAL
    if not p.is_file():
        return None
    return json.loads(p.read_text(encoding="utf-8"))


def _save_journal(root: Path, journal: dict) -> None:
    (root / JOURNAL_DIR).mkdir(parents=True, exist_ok=True)
    _atomic_write(root / JOURNAL, json.dumps(journal, indent=1, sort_keys=True).encode())


# ---- the rewrite -----------------------------------------------------------------------
@dataclass
class Rewrite:
    """What one rewrite did (counts and per-version proof; never a path or a key)."""

    files_rewritten: int = 0
    log_files_rewritten: int = 0
    crc_files_removed: int = 0
    old_files_deleted: list[str] = field(default_factory=list)   # relative paths
    proof: dict[str, dict] = field(default_factory=dict)
    resumed: bool = False
    # the dry run's digests against those before the rewrite (`against_plan`); empty when
    # the plan held none, or the rewrite resumed after the check
    plan_check: dict[str, Any] = field(default_factory=dict)


class _Ctx:
    def __init__(self, root: Path, journal: dict, names: set[str], values: Sequence[Any]):
        self.root = root
        self.mapping: dict[str, str] = journal["mapping"]          # raw old -> raw new path
        self.by_rel = {unquote(o): n for o, n in self.mapping.items()}
        self.new_rels = {unquote(n) for n in self.mapping.values()}
        self.names = names
        self.values = list(values)
        self.matcher = _Matcher(self.values, names)
        self._meta: dict[str, tuple[int, Any]] = {}

    def new_of(self, raw_path: Any) -> str | None:
        if not isinstance(raw_path, str):
            return None
        return self.mapping.get(raw_path) or self.by_rel.get(unquote(raw_path))

    def meta(self, new_raw: str):
        """(size, pyarrow table) of a new file."""
        if new_raw not in self._meta:
            import pyarrow.parquet as pq

            p = self.root / unquote(new_raw)
            self._meta[new_raw] = (p.stat().st_size, pq.ParquetFile(p).read())
        return self._meta[new_raw]

    def key_in_crc(self, crc: Path) -> bool:
        hits: set = set()
        for line in crc.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                self.matcher.walk(json.loads(line), hits)
            except ValueError:
                continue
        return bool(hits)

    def key_in_stats(self, stats: Any) -> bool:
        if not isinstance(stats, str) or not stats.startswith("{"):
            return False
        hits: set = set()
        self.matcher.walk({"stats": stats}, hits)
        return bool(hits)


def _strip_key_stats(stats: str, ctx: _Ctx) -> str:
    """Statistics of a file no longer on disk: the key columns' min/max go when they name a
    key (the file cannot be recounted; min/max are optional in Delta)."""
    s = json.loads(stats)
    for kind in ("minValues", "maxValues"):
        d = s.get(kind)
        if isinstance(d, dict):
            for n in list(d):
                if n in ctx.names and ctx.matcher.equal(d[n]):
                    del d[n]
    return json.dumps(s, separators=(",", ":"))


def _scrub_info(info: Any, ctx: _Ctx) -> Any:
    """commitInfo with every predicate/condition field that names a key redacted."""
    if isinstance(info, dict):
        out = {}
        for k, v in info.items():
            if isinstance(v, str) and PREDICATE_KEY.search(k) and ctx.matcher.in_text(v):
                out[k] = REDACTED
            else:
                out[k] = _scrub_info(v, ctx)
        return out
    if isinstance(info, list):
        return [_scrub_info(x, ctx) for x in info]
    return info


def _transform_action(a: dict, phase: str, ctx: _Ctx) -> list[dict]:
    """One action in `phase` (tombstones | swap | drop): the actions that replace it."""
    if phase == "tombstones":
        rm = a.get("remove")
        if isinstance(rm, dict):
            new = ctx.new_of(rm.get("path"))
            if new is not None:
                size, table = ctx.meta(new)
                twin = dict(rm, path=new)
                if rm.get("size") is not None:
                    twin["size"] = size
                if rm.get("stats"):
                    twin["stats"] = new_stats(rm["stats"], table)
                return [a, {"remove": twin}]
        return [a]
    if phase == "swap":
        for kind in ("add", "cdc"):
            act = a.get(kind)
            if isinstance(act, dict):
                new = ctx.new_of(act.get("path"))
                if new is not None:
                    size, table = ctx.meta(new)
                    out = dict(act, path=new, size=size)
                    if kind == "add" and act.get("stats"):
                        out["stats"] = new_stats(act["stats"], table)
                    return [{kind: out}]
                if ctx.key_in_stats(act.get("stats")) and not (
                        ctx.root / unquote(str(act.get("path")))).exists():
                    return [{kind: dict(act, stats=_strip_key_stats(act["stats"], ctx))}]
        rm = a.get("remove")
        if isinstance(rm, dict) and ctx.key_in_stats(rm.get("stats")) \
                and unquote(str(rm.get("path"))) not in ctx.new_rels \
                and not (ctx.root / unquote(str(rm.get("path")))).exists():
            return [{"remove": dict(rm, stats=_strip_key_stats(rm["stats"], ctx))}]
        if "commitInfo" in a:
            return [{"commitInfo": _scrub_info(a["commitInfo"], ctx)}]
        return [a]
    # drop
    rm = a.get("remove")
    if isinstance(rm, dict) and ctx.new_of(rm.get("path")) is not None:
        return []
    return [a]


def _backup(root: Path, p: Path) -> None:
    """Keep the original of a log file before its first change (a failed proof restores
    it); its Hadoop checksum sidecar `.name.crc` (Spark's local file system) would no longer
    match, so it is moved into the backup too."""
    side = p.with_name(f".{p.name}.crc")
    if side.exists():
        _backup(root, side)
        side.unlink()
    b = root / BACKUP_DIR / p.name
    if not b.exists():
        b.parent.mkdir(parents=True, exist_ok=True)
        tmp = b.with_name(f".{b.name}.tmp")
        shutil.copyfile(p, tmp)
        os.replace(tmp, b)


def _present_removes(actions: list[Any]) -> set[Any]:
    return {a["remove"].get("path") for a in actions
            if isinstance(a, dict) and isinstance(a.get("remove"), dict)}


def _replacements(a: dict, phase: str, ctx: _Ctx, present: set[Any]) -> list[dict]:
    """`_transform_action`, without a tombstone twin the file already has (a rerun)."""
    new = _transform_action(a, phase, ctx)
    if phase == "tombstones":
        new = [x for x in new if x is a or x["remove"].get("path") not in present]
    return new


def _rewrite_commit(p: Path, phase: str, ctx: _Ctx) -> bool:
    lines = _json_lines(p)
    present = _present_removes([a for _, a in lines])
    out: list[str] = []
    changed = False
    for text, a in lines:
        new = _replacements(a, phase, ctx, present) if isinstance(a, dict) else [a]
        if len(new) == 1 and new[0] == a:
            out.append(text)      # untouched lines stay byte for byte
            continue
        changed = True
        out.extend(json.dumps(x, separators=(",", ":")) for x in new)
    if not changed:
        return False
    _backup(ctx.root, p)
    _atomic_write(p, ("\n".join(out) + "\n").encode("utf-8"))
    return True


def _rewrite_checkpoint(p: Path, phase: str, ctx: _Ctx) -> bool:
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = _read_checkpoint(p)
    rows = t.to_pylist()
    out: list[dict] = []
    changed = False
    present = _present_removes(rows)
    for r in rows:
        a = {k: v for k, v in r.items() if v is not None}
        new = _replacements(a, phase, ctx, present)
        if len(new) == 1 and new[0] == a:
            out.append(r)
            continue
        changed = True
        for x in new:
            row = dict.fromkeys(t.column_names)
            row.update(x)
            out.append(row)
    if not changed:
        return False
    table = pa.Table.from_pylist(out, schema=t.schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    data = sink.getvalue().to_pybytes()
    _backup(ctx.root, p)
    _atomic_write(p, data)
    _update_last_checkpoint(ctx.root, int(p.name[:20]), table, len(data))
    return True


def _update_last_checkpoint(root: Path, version: int, table, size_bytes: int) -> None:
    import pyarrow.compute as pc

    last = root / LOG / "_last_checkpoint"
    if not last.is_file():
        return
    meta = json.loads(last.read_text(encoding="utf-8") or "{}")
    if meta.get("version") != version:
        return
    meta["size"] = table.num_rows
    if "sizeInBytes" in meta:
        meta["sizeInBytes"] = size_bytes
    if "numOfAddFiles" in meta and "add" in table.column_names:
        meta["numOfAddFiles"] = int(pc.sum(pc.is_valid(table.column("add"))).as_py() or 0)
    meta.pop("checksum", None)       # it covered the old content
    _backup(root, last)
    _atomic_write(last, json.dumps(meta, separators=(",", ":")).encode("utf-8"))


def _log_phase(root: Path, phase: str, ctx: _Ctx) -> int:
    n = 0
    for p in list_log(root).ordered():
        rewrite = _rewrite_checkpoint if p.suffix == ".parquet" else _rewrite_commit
        if rewrite(p, phase, ctx):
            n += 1
    return n


def _holders(root: Path, names: set[str], values: Sequence[Any]) -> dict[str, str]:
    """Raw paths the log names (add, remove, cdc) whose file exists and holds a key, with
    their decoded relative paths."""
    import pyarrow.parquet as pq

    m = _Matcher(list(values), names)
    named: dict[str, str] = {}
    for p in list_log(root).ordered():
        for a in _actions(p):
            for kind in ("add", "remove", "cdc"):
                act = a.get(kind)
                if isinstance(act, dict) and isinstance(act.get("path"), str):
                    named.setdefault(act["path"], unquote(act["path"]))
    out: dict[str, str] = {}
    seen: set[str] = set()
    for raw, rel in named.items():
        f = root / rel
        if rel in seen or not f.is_file():
            continue
        seen.add(rel)
        hits, _ = _parquet_hits(pq.ParquetFile(f), names, m)
        if hits:
            out[raw] = rel
    return out


def _new_name(raw: str) -> str:
    folder, _, fn = raw.rpartition("/")
    prefix = "cdc" if fn.startswith("cdc") else "part"
    name = f"{prefix}-00000-{uuid.uuid4()}-erased.c000.snappy.parquet"
    return f"{folder}/{name}" if folder else name


def _restore(root: Path, ctx: _Ctx) -> None:
    """Put the original log files back and drop the new data files (proof failed)."""
    bdir = root / BACKUP_DIR
    for b in sorted(bdir.iterdir()) if bdir.is_dir() else []:
        os.replace(b, root / LOG / b.name)
    for new in ctx.mapping.values():
        (root / unquote(new)).unlink(missing_ok=True)
    shutil.rmtree(root / JOURNAL_DIR, ignore_errors=True)


def against_plan(planned: dict[str, dict], before: dict[str, dict]) -> dict[str, Any]:
    """The dry run's per-version digests (`planned`, taken when the request was planned)
    against those taken just before the rewrite: every version the plan saw must hold the
    same rows of everyone else (the erase only adds a version). Versions the log no longer
    holds (its own cleanup) are named; a version that differs is a problem."""
    out: dict[str, Any] = {"versions_compared": 0, "versions_gone": [], "differ": []}
    for v, p in sorted(planned.items(), key=lambda x: int(x[0])):
        b = before.get(v)
        if b is None or not b.get("readable", True):
            out["versions_gone"].append(int(v))
            continue
        out["versions_compared"] += 1
        if (p.get("rows"), p.get("hash")) != (b.get("rows"), b.get("hash")):
            out["differ"].append(int(v))
    return out


def rewrite_history(root: Path, column: str, names: set[str], values: Sequence[Any],
                    live: set[str], hook: Callable[[str], None] = lambda point: None,
                    planned: dict[str, dict] | None = None) -> Rewrite:
    """Remove the rows holding `values` from every file the log names (see the module
    docstring for the phases). `live`: the latest version's data files, relative paths; none
    may hold a key (the erase MERGE comes first). `planned`: the dry run's per-version
    digests (`digests`, from the plan); the versions it saw must be unchanged before
    anything is rewritten (ErasureFailed otherwise, nothing changed)."""
    res = Rewrite()
    journal = load_journal(root)
    if journal is not None:
        res.resumed = True
    if journal is None:
        reasons = unsupported(root, column)
        if reasons:
            raise ErasureFailed("rewrite-history cannot be applied: " + "; ".join(reasons)
                                + "; nothing was changed")
        before = digests(root, column, values)
        if planned:
            res.plan_check = against_plan(planned, before)
            if res.plan_check["differ"]:
                raise ErasureFailed(
                    "rewrite-history: the rows of other people in version(s) "
                    f"{', '.join(map(str, res.plan_check['differ'][:5]))} differ from what the "
                    "dry run recorded (the table's history changed since the plan); nothing "
                    "was rewritten. Re-plan with `erasure run --replan`")
        holders = _holders(root, names, values)
        still_live = sorted(rel for rel in holders.values() if rel in live)
        if still_live:
            raise ErasureFailed(f"{len(still_live)} live data file(s) of the latest version "
                                "hold the subject: the erase must run first; nothing was "
                                "rewritten")
        journal = {"format": 1, "phase": "planned", "before": before,
                   "mapping": {raw: _new_name(raw) for raw in sorted(holders)}}
        _save_journal(root, journal)
    hook("rewrite:planned")
    ctx = _Ctx(root, journal, names, values)
    # 1. new files, before any log file changes
    for old_raw, new_raw in sorted(ctx.mapping.items()):
        old, new = root / unquote(old_raw), root / unquote(new_raw)
        if new.exists():
            continue
        if not old.exists():
            raise ErasureFailed("a file to rewrite is gone and its replacement was never "
                                "written; the log was not changed")
        write_without(old, new, names, values)
        res.files_rewritten += 1
    hook("rewrite:files_written")
    if journal.get("phase") != "proved":
        # 2. tombstones of the new files next to those of the old; checksum files go: they
        # are optional, and their sizes (or file lists) would no longer be true
        for crc in list_log(root).crcs.values():
            if ctx.mapping or ctx.key_in_crc(crc):
                _backup(root, crc)           # a failed proof puts it back
                crc.unlink(missing_ok=True)
                res.crc_files_removed += 1
        res.log_files_rewritten += _log_phase(root, "tombstones", ctx)
        hook("rewrite:tombstones")
        # 3. adds and change data swapped, predicates redacted
        res.log_files_rewritten += _log_phase(root, "swap", ctx)
        hook("rewrite:swapped")
        # 4. the old tombstones dropped
        res.log_files_rewritten += _log_phase(root, "drop", ctx)
        hook("rewrite:dropped")
        # 5. the proof, before anything is deleted: a mismatch restores the original log
        after = digests(root, column, values)
        res.proof = compare(journal["before"], after)
        bad = problems(res.proof)
        if bad:
            _restore(root, ctx)
            raise ErasureFailed("rewrite-history proof failed (" + "; ".join(bad[:3]) + "); "
                                "the original log files were restored and the new files "
                                "deleted")
        journal = dict(journal, phase="proved", proof=res.proof)
        _save_journal(root, journal)
    else:
        res.proof = journal["proof"]
    hook("rewrite:proved")
    # 6. old files, the log backups, then the journal
    for old_raw in sorted(ctx.mapping):
        old = root / unquote(old_raw)
        if old.exists():
            old.unlink()
            res.old_files_deleted.append(unquote(old_raw))
        old.with_name(f".{old.name}.crc").unlink(missing_ok=True)
    hook("rewrite:old_deleted")
    shutil.rmtree(root / BACKUP_DIR, ignore_errors=True)
    (root / JOURNAL).unlink(missing_ok=True)
    shutil.rmtree(root / JOURNAL_DIR, ignore_errors=True)
    return res
