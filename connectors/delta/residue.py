"""Find every file under a Delta table's folder that still holds given subject keys.

This is the physical check behind "nothing under the table's folder may still contain the
subject's identifier". It reads, for every file:
  - data and change-data Parquet files: the key column (logical or physical name, with
    row-group statistics to skip row groups), and the partition directories in the path;
  - `_delta_log` JSON commits, checkpoints (Parquet), `.crc` and `_last_checkpoint`:
    per-file statistics (minValues/maxValues) and partition values of the key column equal
    to a key, and predicates that DELETE/UPDATE/MERGE wrote verbatim containing one. Other
    log text is not searched: short keys ("42") would match paths, UUIDs and timestamps;
  - any other file: a byte search for string keys.
Deletion-vector files hold row positions only and are skipped.
Local folders are walked (`scan_table_folder`); an object-store prefix is listed and its
objects, and in a versioned S3 bucket every noncurrent version under it, are read in parallel
the same way (`scan_object_prefix`). What the store refuses to list or read is reported in
`FolderScan.not_verified`, never taken as clean.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote

from erasure.subject import has_token

from ..keymatch import admitted_row_groups, array_of, comparable, key_counts

STAT_KEYS = {"minValues", "maxValues", "partitionValues", "partitionValues_parsed"}
PREDICATE_KEY = re.compile("predicate|condition", re.I)


@dataclass
class FolderScan:
    """Where each key value was found: live data files, and every other trace by kind."""

    live: dict[Any, set[str]] = field(default_factory=dict)
    live_rows: dict[Any, int] = field(default_factory=dict)   # physical rows in live files
    traces: dict[Any, dict[str, str]] = field(default_factory=dict)   # value -> {file: kind}
    files_scanned: int = 0
    row_groups_skipped: int = 0
    # data and change-data files not read again: an earlier scan in this process read them
    # for the same keys and they are unchanged (same path, size and modification time)
    files_unchanged: int = 0
    # parts not looked at, each with the reason (object stores: a permission refused, no
    # versions listing): absence is NOT proven there
    not_verified: list[str] = field(default_factory=list)
    # object stores: every noncurrent version listed, and the object (version) behind each
    # trace that names one, so the purge can delete it by its version id
    noncurrent: list[Any] = field(default_factory=list)
    objects: dict[str, Any] = field(default_factory=dict)

    def add_live(self, v: Any, f: str) -> None:
        self.live.setdefault(v, set()).add(f)

    def add_trace(self, v: Any, f: str, kind: str) -> None:
        self.traces.setdefault(v, {})[f] = kind

    def residue(self, v: Any) -> dict[str, str]:
        return dict(self.traces.get(v, {}))


# fixed patterns only: no regular expression is ever built from a subject id (a regex of a
# 1 MB id took minutes to compile)
_TOKEN_RE = re.compile(r"'((?:[^']|'')*)'|([\w@.+-]+)")   # a quoted literal or a bare token
_BARE_RE = re.compile(r"[\w@.+-]+")
_MANY_KEYS = 200


def _find_whole(text: str, key: str) -> bool:
    """`key` (or its SQL-escaped form, quotes doubled) in `text` as a whole token."""
    return any(has_token(text, needle) for needle in dict.fromkeys((key, key.replace("'", "''"))))


class _Matcher:
    def __init__(self, values: Iterable[Any], names: set[str]):
        self.values = list(values)
        self.is_int = bool(self.values) and isinstance(self.values[0], int)
        self.as_str = {str(v): v for v in self.values}
        self.names = names
        if self.is_int:
            self.int_re = re.compile(r"(?<![\w.])-?\d+(?![\w.])")
        else:
            # "42" matches `name = '42'` or `(name#1 = 42)`, not "420". Few keys: each is
            # looked for with str.find and explicit word-boundary checks. Many keys: the text
            # is tokenized (quoted literals and bare tokens) and each token looked up, and only
            # keys a bare token cannot be (a space, a quote, ...) are looked for with find.
            strs = [v for v in self.values if isinstance(v, str) and v]
            self.find_keys = (strs if len(strs) <= _MANY_KEYS
                              else [v for v in strs if not _BARE_RE.fullmatch(v)])
            self.use_tokens = len(strs) > _MANY_KEYS

    def in_text(self, s: str) -> list[Any]:
        """Keys written into text (predicates): int keys as whole-number tokens, string keys
        as whole tokens (quoted and escaped forms included)."""
        if self.is_int:
            return [self.as_str[t] for t in self.int_re.findall(s) if t in self.as_str]
        found: dict[Any, None] = {}
        if self.use_tokens:
            for quoted, bare in _TOKEN_RE.findall(s):
                tok = quoted.replace("''", "'") if quoted else bare
                if tok in self.as_str:
                    found[self.as_str[tok]] = None
        for v in self.find_keys:
            if v not in found and _find_whole(s, v):
                found[v] = None
        return list(found)

    def value_array(self, typ):
        """The keys as an Arrow array of the column's type, built once per type."""
        cache = self.__dict__.setdefault("_arrays", {})
        if typ not in cache:
            cache[typ] = _value_array(self.values, typ)
        return cache[typ]

    def same_type(self, typ) -> bool:
        """Whether a key read from a column of Arrow type `typ` is one of the values itself
        (ints from an integer column for int values, str from a string column for str
        values), so `equal` need not map it back."""
        import pyarrow as pa

        if "_uniform" not in self.__dict__:     # once: every value of one plain type
            self._uniform = bool(self.values) and (
                all(type(v) is int for v in self.values) if self.is_int
                else all(type(v) is str for v in self.values))
        return self._uniform and (pa.types.is_integer(typ) if self.is_int
                                  else pa.types.is_string(typ))

    def equal(self, x: Any) -> list[Any]:
        if x is None or isinstance(x, (dict, list)):
            return []
        v = self.as_str.get(str(x))
        return [v] if v is not None else []

    def walk(self, obj: Any, hits: set, ctx: str = "") -> None:
        if isinstance(obj, dict):
            for k, x in obj.items():
                if ctx in STAT_KEYS and k in self.names:
                    hits.update(self.equal(x))
                if isinstance(x, str):
                    if k in ("stats", "stats_parsed") and x.startswith("{"):
                        try:
                            self.walk(json.loads(x), hits, k)
                        except json.JSONDecodeError:
                            pass
                    if PREDICATE_KEY.search(k):
                        # DELETE/UPDATE/MERGE write their predicate, keys included, verbatim
                        hits.update(self.in_text(x))
                else:
                    self.walk(x, hits, k if k in STAT_KEYS else ctx if ctx in STAT_KEYS else k)
        elif isinstance(obj, list):
            if ctx in STAT_KEYS and obj and all(isinstance(e, (list, tuple)) and len(e) == 2
                                                for e in obj):
                self.walk({str(k): v for k, v in obj}, hits, ctx)   # Parquet map as pairs
                return
            for x in obj:
                self.walk(x, hits, ctx)


def _parquet_hits(pf, names: set[str], m: _Matcher) -> tuple[dict, int]:
    """Rows per key value in one Parquet file (a pq.ParquetFile: its footer is read first,
    then only the key column of the row groups whose min/max statistics admit a key), and
    how many row groups the statistics skipped."""
    cols = [n for n in pf.schema_arrow.names if n in names]
    hits: dict = {}
    skipped = 0
    if not cols:
        return hits, skipped
    sorted_vals = sorted(m.values)
    for col in cols:
        groups, n_skipped = admitted_row_groups(pf, col, sorted_vals)
        skipped += n_skipped
        for rg in groups:
            arr = comparable(pf.read_row_group(rg, columns=[col]).column(0))
            counts = key_counts(arr, m.value_array(arr.type))
            if m.same_type(arr.type):      # each key found is one of the values as is
                for v, n in counts.items():
                    hits[v] = hits.get(v, 0) + n
                continue
            for key, n in counts.items():
                for v in m.equal(key):
                    hits[v] = hits.get(v, 0) + n
    return hits, skipped


def _value_array(values: list[Any], typ):
    import pyarrow as pa

    try:
        return array_of(values, typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return array_of([str(v) for v in values], pa.string()) if pa.types.is_string(typ) \
            else array_of([v for v in values if isinstance(v, int)], pa.int64())


def _log_entry_hits(text: str, m: _Matcher, hits: set) -> None:
    """The keys in a log file (a commit JSON, a `.crc`, `_last_checkpoint`): each JSON line
    walked (statistics, partition values, predicates); a line that is not JSON searched as
    text for string keys."""
    for line in text.splitlines():
        if line.strip():
            try:
                m.walk(json.loads(line), hits)
            except json.JSONDecodeError:
                hits.update(m.in_text(line) if not m.is_int else [])


def _partition_hits(rel: str, m: _Matcher) -> set:
    hits: set = set()
    for seg in rel.split("/")[:-1] if not rel.endswith("/") else rel.rstrip("/").split("/"):
        if "=" in seg:
            k, _, v = seg.partition("=")
            if unquote(k) in m.names:
                hits.update(m.equal(unquote(v)))
    return hits


class ScanMemo:
    """What earlier scans in this process found in each data and change-data file, per set
    of keys: a file with the same path, size and modification time (nanoseconds) holds
    the same rows, so a later scan for the same keys (the purge's leftover scan and the
    verification, after the plan's) does not read it again. Parquet data files are written
    once and never changed in place (Delta and Spark write new files); any rewrite gives a
    new size or time. Log files are always read again."""

    def __init__(self) -> None:
        self._by_keys: dict[tuple, dict[tuple, dict]] = {}

    def of(self, names: set[str], values: list[Any]) -> dict[tuple, dict]:
        return self._by_keys.setdefault((tuple(sorted(names)), tuple(values)), {})


def scan_table_folder(root: Path, live_files: set[str], names: set[str],
                      values: list[Any], memo: ScanMemo | None = None) -> FolderScan:
    """Scan every file and folder under `root` for `values` of the key column `names`.

    `live_files` are the data files (relative paths) of the current snapshot; a hit in one
    of them is "live" (the rows may still be readable, or hidden by a deletion vector);
    every other hit is a trace: an old data file, change data, or a log entry. With `memo`,
    data files an earlier scan read for the same keys and that have not changed since are
    not read again (`files_unchanged` counts them).
    """
    import pyarrow.parquet as pq

    scan = FolderScan()
    m = _Matcher(values, names)
    seen = memo.of(names, values) if memo is not None else None
    for dirpath, _, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        if rel_dir != ".":
            for v in _partition_hits(rel_dir + "/", m):
                # the folder's name is the key; it is a trace unless live rows are inside
                # (those are reported as live files)
                if not any(f.startswith(rel_dir + "/") for f in live_files):
                    scan.add_trace(v, rel_dir + "/", "partition folder named by the key")
        for fn in filenames:
            full = Path(dirpath) / fn
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            scan.files_scanned += 1
            in_log = rel.startswith("_delta_log/")
            hits: set = set()
            counts: dict = {}
            kind = "other file"
            try:
                if fn.endswith(".parquet") and in_log:
                    kind = "log checkpoint"
                    m.walk(pq.ParquetFile(full).read().to_pylist(), hits)   # no pandas
                elif fn.endswith(".parquet"):
                    kind = "change data file" if rel.startswith("_change_data/") else "data file"
                    if seen is None:
                        counts, skipped = _parquet_hits(pq.ParquetFile(full), names, m)
                        scan.row_groups_skipped += skipped
                    else:
                        st = full.stat()
                        ident = (str(full), st.st_size, st.st_mtime_ns)
                        if ident in seen:
                            counts = dict(seen[ident])
                            scan.files_unchanged += 1
                        else:
                            counts, skipped = _parquet_hits(pq.ParquetFile(full), names, m)
                            scan.row_groups_skipped += skipped
                            seen[ident] = dict(counts)
                    for v in _partition_hits(rel, m):
                        counts[v] = counts.get(v, 0) + pq.ParquetFile(full).metadata.num_rows
                    hits = set(counts)
                elif in_log and (fn.endswith(".json") or fn.endswith(".crc") or fn == "_last_checkpoint"):
                    kind = "log entry"
                    _log_entry_hits(full.read_text(encoding="utf-8", errors="replace"), m, hits)
                elif fn.startswith("deletion_vector_") and fn.endswith(".bin"):
                    continue
                elif not m.is_int:
                    data = full.read_bytes()
                    hits = {v for v in values if v.encode("utf-8") in data}
            except Exception as exc:  # an unreadable file is a finding, not a pass
                for v in values:
                    scan.add_trace(v, rel, f"unreadable ({type(exc).__name__}); cannot prove absence")
                continue
            if kind == "data file" and rel in live_files:
                live, live_rows = scan.live, scan.live_rows
                for v in hits:          # inlined add_live: a sweep meets 10^5 keys here
                    held = live.get(v)
                    if held is None:
                        live[v] = {rel}
                    else:
                        held.add(rel)
                    live_rows[v] = live_rows.get(v, 0) + counts.get(v, 0)
            else:
                for v in hits:
                    scan.add_trace(v, rel, kind)
    return scan


def _kind_of(rel: str) -> str | None:
    """What an object under a table is, by its path: None for deletion-vector files (row
    positions only, nothing to read)."""
    fn = rel.rsplit("/", 1)[-1]
    in_log = rel.startswith("_delta_log/")
    if fn.endswith(".parquet"):
        return "log checkpoint" if in_log else (
            "change data file" if rel.startswith("_change_data/") else "data file")
    if in_log and (fn.endswith(".json") or fn.endswith(".crc") or fn == "_last_checkpoint"):
        return "log entry"
    if fn.startswith("deletion_vector_") and fn.endswith(".bin"):
        return None
    return "other file"


def _object_hits(store, obj, kind: str, names: set[str], m: _Matcher) -> tuple[dict, int]:
    """Rows (or 1 per trace) per key in one object or object version, reading only what can
    hold a key: a data file's footer, then its key column where the statistics admit a key."""
    import pyarrow.parquet as pq

    counts: dict = {}
    skipped = 0
    if kind in ("data file", "change data file"):
        f = store.open(obj)
        try:
            pf = pq.ParquetFile(f)
            counts, skipped = _parquet_hits(pf, names, m)
            for v in _partition_hits(obj.rel, m):
                counts[v] = counts.get(v, 0) + pf.metadata.num_rows
        finally:
            f.close()
        return counts, skipped
    hits: set = set()
    if kind == "log checkpoint":
        f = store.open(obj)
        try:
            m.walk(pq.ParquetFile(f).read().to_pylist(), hits)     # no pandas
        finally:
            f.close()
    elif kind == "log entry":
        _log_entry_hits(store.read(obj).decode("utf-8", "replace"), m, hits)
    elif not m.is_int:
        data = store.read(obj)
        hits = {v for v in m.values if v.encode("utf-8") in data}
    return dict.fromkeys(hits, 1), skipped


def scan_object_prefix(store, live_files: set[str], names: set[str], values: list[Any],
                       memo: ScanMemo | None = None, versions: bool = True,
                       only: set[str] | None = None) -> FolderScan:
    """`scan_table_folder` for an object-store prefix (connectors/objectstore.ObjectPrefix):
    every object under it is listed and checked for `values`, in parallel; with `versions`,
    so is every noncurrent version in a versioned S3 bucket. A listing, read or version
    listing the store refuses goes to `not_verified` with the reason (never a pass); any other
    unreadable object is a trace ("cannot prove absence"), as in a local folder. `only`: the
    relative paths to look at (a single-object dataset), every object when None."""
    from concurrent.futures import ThreadPoolExecutor

    from ..objectstore import SCAN_THREADS, Denied, is_denied, versions_unchecked_reason

    scan = FolderScan()
    m = _Matcher(values, names)
    seen = memo.of(names, values) if memo is not None else None
    try:
        objs = store.listing()
    except Denied as exc:
        scan.not_verified.append(f"object store: {exc}, so nothing under {store.uri} was "
                                 "checked for the subject")
        return scan
    noncurrent = []
    if versions:
        why = versions_unchecked_reason(store)
        if why:
            scan.not_verified.append(f"object store: {why}")
        else:
            try:
                if store.versioning():
                    noncurrent = store.noncurrent()
            except Denied as exc:
                scan.not_verified.append(
                    f"object store: {exc}, so noncurrent versions under {store.uri} were not "
                    "checked for the subject")
    if only is not None:
        objs = [o for o in objs if o.rel in only]
        noncurrent = [o for o in noncurrent if o.rel in only]
    scan.noncurrent = noncurrent
    prefixes = {rel.rsplit("/", 1)[0] for rel in (o.rel for o in objs) if "/" in rel}
    for d in sorted({"/".join(p.split("/")[:i + 1]) for p in prefixes
                     for i in range(p.count("/") + 1)}):
        for v in _partition_hits(d + "/", m):
            if not any(f.startswith(d + "/") for f in live_files):
                scan.add_trace(v, d + "/", "prefix named by the key")

    def one(obj):
        kind = _kind_of(obj.rel)
        if kind is None:
            return obj, kind, None, 0, None, False
        ident = (store.uri, obj.ident, obj.size, obj.mtime)
        cacheable = seen is not None and kind in ("data file", "change data file")
        if cacheable and seen is not None and ident in seen:
            return obj, kind, dict(seen[ident]), 0, None, True
        try:
            counts, skipped = _object_hits(store, obj, kind, names, m)
        except Exception as exc:       # an unreadable object is a finding, not a pass
            if not isinstance(exc, Denied) and is_denied(exc):
                what = "a noncurrent version of " if obj.version_id else ""
                exc = Denied(f"reading {what}{obj.rel.rsplit('/', 1)[-1]} was refused")
            return obj, kind, None, 0, exc, False
        if cacheable and seen is not None:
            seen[ident] = dict(counts)
        return obj, kind, counts, skipped, None, False

    denied: list[str] = []
    with ThreadPoolExecutor(max_workers=SCAN_THREADS) as pool:
        for obj, kind, counts, skipped, err, cached in pool.map(one, objs + noncurrent):
            if kind is None:
                continue
            scan.files_scanned += 1
            scan.row_groups_skipped += skipped
            scan.files_unchanged += int(cached)
            old = obj.version_id is not None
            where = obj.ident
            if err is not None:
                if isinstance(err, Denied):
                    denied.append(str(err))
                else:
                    for v in values:
                        scan.add_trace(v, where, f"unreadable ({type(err).__name__}); "
                                                 "cannot prove absence")
                        scan.objects[where] = obj
                continue
            if not counts:
                continue
            if kind == "data file" and not old and obj.rel in live_files:
                for v, n in counts.items():
                    scan.add_live(v, obj.rel)
                    scan.live_rows[v] = scan.live_rows.get(v, 0) + n
                continue
            label = f"noncurrent version of {kind}" if old else kind
            for v in counts:
                scan.add_trace(v, where, label)
            scan.objects[where] = obj
    if denied:
        more = f" and {len(denied) - 1} more" if len(denied) > 1 else ""
        scan.not_verified.append(f"object store: {denied[0]}{more} under {store.uri}, so "
                                 "the subject's absence there is not proven")
    return scan
