"""Delta Lake connector (delta-rs): count, erase physically, purge residue, verify.

Erasure is a MERGE of the table against an Arrow table of keys (`when_matched_delete`), so
the keys never enter the transaction log as a predicate. In the default `purge` residue mode
the connector then removes every other trace: files still holding rows under Spark deletion
vectors are rewritten, old files are vacuumed (retention 0), the log is checkpointed and
older commits and checkpoints are deleted, change-data files are removed, and empty
partition folders named by the key are deleted. No table setting is changed on the way
(`logclean.py`), so a crash at any point leaves the table's configuration as it was. Time travel to versions before the purge is
lost; the table history the audit needs is recorded in the ledger first.
The `keep-history` mode stops after the logical delete and reports the residue that remains
and the date the table's own retention settings would remove it.
The `rewrite-history` mode (`rewrite.py`) removes the subject's rows from every file any
retained version reads and rewrites the log to name the new files, so time travel stays for
everyone else; a table it does not handle is left as keep-history leaves it, and the plan,
verification and request say "not verified: rewrite-history cannot be applied: <why>".
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence
from urllib.parse import unquote

from erasure.errors import (ConflictRetriesExhausted, ErasureError, ErasureFailed,
                            UnknownDatasetError)

from ..base import (Capabilities, ConnectorPlugin, ConnectorRegistry, EraseResult, Presentation,
                    PurgeResult, TargetCount)
from . import logclean, rewrite
from .config import DeltaSettings
from ..keymatch import array_of, arrow_table
from ..objectstore import OBJECT_STORE_SCHEMES, Denied, ObjectPrefix, options_for
from .residue import FolderScan, ScanMemo, scan_object_prefix, scan_table_folder
from .sql import count_by_key_sql, quote_ident

if TYPE_CHECKING:
    from erasure.config import Config

DEFAULT_LOG_RETENTION = "interval 30 days"
DEFAULT_FILE_RETENTION = "interval 1 weeks"
SQL_CHUNK = 500
KEY_FIELD = "__erasure_key"


def parse_interval(text: str) -> timedelta:
    m = re.fullmatch(r"\s*interval\s+(\d+)\s+(\w+?)s?\s*", text or "", re.I)
    if not m:
        return timedelta(days=30)
    n, unit = int(m.group(1)), m.group(2).lower()
    return {"second": timedelta(seconds=n), "minute": timedelta(minutes=n),
            "hour": timedelta(hours=n), "day": timedelta(days=n),
            "week": timedelta(weeks=n)}.get(unit, timedelta(days=30))


class DeltaConnector:
    name = "delta"
    capabilities = Capabilities(
        residue_scan=True, batch=True, guard="versioned", erase_order=0,
        notes=("residue scan covers local folders and object-store prefixes (every object "
               "listed and read; in a versioned S3 bucket every noncurrent version too); what "
               "the store refuses to list, read or delete is reported not verified",))
    presentation = Presentation("Delta Lake table", "Delta Lake tables",
                                "rows deleted, files rewritten; residue purged",
                                color="#2f6fb0", path_names=True)

    def __init__(self, settings: DeltaSettings | None = None,
                 before_commit: Callable[[str, int], None] | None = None,
                 hooks: dict[str, Callable[..., None]] | None = None,
                 storage: Sequence[Any] = ()):
        self.settings = settings or DeltaSettings()
        # `[[storage]]` entries (prefix, options): the longest prefix containing a table's
        # URI gives its storage options, else `[delta.storage_options]`
        self.storage = tuple(storage)
        self._stores: dict[str, ObjectPrefix] = {}
        self._is_delta: dict[str, bool] = {}
        # Failure injection for tests: called after the table is loaded, before the merge
        # commits (a real concurrent writer can commit in between).
        self.before_commit = before_commit
        # More failure injection for tests, by point of the purge: "before_checkpoint",
        # "after_checkpoint", "leftover_scan" (live files read, folder not yet walked),
        # "before_leftover_delete". Each is called with the table URI.
        self.hooks = dict(hooks or {})
        # the latest snapshot of each table this instance opened, brought up to date on each
        # open (see `open`)
        self._latest: dict[str, Any] = {}
        # what this instance's folder scans read, so that later scans for the same keys
        # read only the files that are new or changed (residue.ScanMemo)
        self._memo = ScanMemo()
        # rewrite-history: why a table cannot be rewritten, as its last count found (the
        # key column matters: a partition key is refused), for `residue_after`
        self._refusals: dict[str, list[str]] = {}

    def _hook(self, point: str, uri: str | None) -> None:
        if point in self.hooks:
            self.hooks[point](uri)

    # ---- identity -------------------------------------------------------------------
    def uri(self, namespace: str, name: str) -> str | None:
        if namespace == "file":
            return name if name.startswith("/") else None
        if namespace.startswith(OBJECT_STORE_SCHEMES):
            return namespace.rstrip("/") + "/" + name.lstrip("/")
        return None

    def handles(self, namespace: str, name: str) -> bool:
        uri = self.uri(namespace, name)
        if uri is None:
            return False
        if uri.startswith("/"):
            return Path(uri, "_delta_log").is_dir()
        if uri not in self._is_delta:
            # a prefix with a _delta_log/ is a Delta table; one without it may be a plain
            # Parquet dataset (connectors/parquet.py). A listing that fails is taken as
            # Delta's: opening it then says what is wrong
            from pyarrow.fs import FileSelector

            store = self.store(uri)
            try:
                self._is_delta[uri] = bool(store.fs.get_file_info(FileSelector(
                    store._path("_delta_log"), allow_not_found=True)))
            except Exception:
                self._is_delta[uri] = True
        return self._is_delta[uri]

    def storage_options(self, uri: str) -> dict[str, str]:
        """The options deltalake and the listing get for this table (`[[storage]]`)."""
        if uri.startswith("/"):
            return dict(self.settings.storage_options)
        return options_for(uri, self.storage, self.settings.storage_options)

    def store(self, uri: str) -> ObjectPrefix:
        """The table's prefix on its object store (one per table and process)."""
        if uri not in self._stores:
            self._stores[uri] = ObjectPrefix(uri, self.storage_options(uri))
        return self._stores[uri]

    def object_store(self, namespace: str, name: str) -> ObjectPrefix | None:
        uri = self.uri(namespace, name)
        return self.store(uri) if uri and not uri.startswith("/") else None

    def local_path(self, namespace: str, name: str) -> Path | None:
        """The table's real folder: symlinks resolved, as delta-rs resolves them in the
        file URIs it returns (live files are matched against this root)."""
        uri = self.uri(namespace, name)
        return Path(os.path.realpath(uri)) if uri and uri.startswith("/") else None

    def table_uri(self, namespace: str, name: str) -> str:
        """The table's URI; UnknownDatasetError when the dataset is no Delta table location."""
        uri = self.uri(namespace, name)
        if uri is None:
            raise UnknownDatasetError(f"{namespace}:{name} is not a Delta table location")
        return uri

    def open(self, namespace: str, name: str, version: int | None = None):
        """The table at `version`, or at its latest version (never a stale one).

        The latest is loaded once per table and then brought up to date with
        `update_incremental()` on each call (it lists the log and applies the commits since:
        0.1 ms instead of 4-11 ms for a full load, and a run opens each table a dozen
        times). Every caller asks for the latest, so they share one object; none keeps an
        older snapshot across a later `open`. Should the update fail (the log was cleaned
        past it by another writer, the table replaced), the table is loaded afresh."""
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError, TableNotFoundError

        uri = self.table_uri(namespace, name)
        if version is None and uri in self._latest:
            dt = self._latest[uri]
            try:
                dt.update_incremental()
                return dt
            except (DeltaError, OSError):
                del self._latest[uri]
        try:
            dt = DeltaTable(uri, version=version,
                            storage_options=self.storage_options(uri) or None)
        except TableNotFoundError as exc:
            raise UnknownDatasetError(f"no Delta table at {uri}") from exc
        if version is None:
            self._latest[uri] = dt
        return dt

    # ---- schema ---------------------------------------------------------------------
    @staticmethod
    def _fields(dt) -> dict[str, tuple[str, str]]:
        """logical column name -> (arrow type name, physical name)"""
        import pyarrow as pa

        out = {}
        for f in pa.schema(dt.schema().to_arrow()):
            meta = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
            out[f.name] = (str(f.type), meta.get("delta.columnMapping.physicalName", f.name))
        return out

    def columns(self, namespace: str, name: str) -> list[str]:
        return list(self._fields(self.open(namespace, name)))

    def key_type(self, namespace: str, name: str, column: str) -> str | None:
        f = self._fields(self.open(namespace, name)).get(column)
        return f[0] if f else None

    # ---- measuring ------------------------------------------------------------------
    def count_rows(self, dt, column: str, values: Sequence[Any]) -> dict[Any, int]:
        """Live (logically visible) rows per key; reads deletion vectors correctly."""
        from deltalake import QueryBuilder

        counts: dict[Any, int] = {v: 0 for v in values}
        vals = list(values)
        if len(vals) > SQL_CHUNK:
            return self._count_rows_one_pass(dt, column, vals, counts)
        for i in range(0, len(vals), SQL_CHUNK):
            chunk = vals[i:i + SQL_CHUNK]
            res = arrow_table(QueryBuilder().register("t", dt)
                           .execute(count_by_key_sql(column, chunk)).read_all())
            for k, n in zip(res.column("k").to_pylist(), res.column("n").to_pylist()):
                key = k if k in counts else next((v for v in chunk if str(v) == str(k)), None)
                if key is not None:
                    counts[key] += int(n)
        return counts

    @staticmethod
    def _count_rows_one_pass(dt, column: str, vals: list[Any],
                             counts: dict[Any, int]) -> dict[Any, int]:
        """`count_rows` for many keys: the key column alone, read once through DataFusion
        (deletion vectors and column mapping applied as for any reader), streamed batch by
        batch and matched against every key at once in Arrow. A few keys go through SQL
        instead, where DataFusion prunes files by their statistics."""
        import pyarrow as pa
        from deltalake import QueryBuilder

        from ..keymatch import comparable, key_counts
        from .residue import _value_array

        by_str = {str(v): v for v in vals}
        reader = pa.RecordBatchReader.from_stream(QueryBuilder().register("t", dt).execute(
            f"SELECT {quote_ident(column)} AS k FROM t"))
        value_set = None
        for batch in reader:
            arr = comparable(batch.column(0))
            if value_set is None:
                value_set = _value_array(vals, arr.type)
            for k, n in key_counts(arr, value_set).items():
                key = k if k in counts else by_str.get(str(k))
                if key is not None:
                    counts[key] += int(n)
        return counts

    def table_version(self, namespace: str, name: str) -> int | None:
        return self.open(namespace, name).version()

    def lookup(self, namespace: str, name: str, from_column: str, to_column: str,
               values: Sequence[Any]) -> tuple[dict[Any, list[Any]], int | None]:
        """`to_column` values per `from_column` value (LooksUp), read from one version of the
        table (returned): DataFusion with the same type-safe literals as counting."""
        from deltalake import QueryBuilder

        from .sql import literal

        dt = self.open(namespace, name)
        out: dict[Any, list[Any]] = {v: [] for v in values}
        vals = list(values)
        f, t = quote_ident(from_column), quote_ident(to_column)
        for i in range(0, len(vals), SQL_CHUNK):
            chunk = vals[i:i + SQL_CHUNK]
            lits = ", ".join(literal(v) for v in chunk)
            res = arrow_table(QueryBuilder().register("t", dt).execute(
                f"SELECT DISTINCT {f} AS f, {t} AS v FROM t WHERE {f} IN ({lits}) "
                f"AND {t} IS NOT NULL").read_all())
            for k, v in zip(res.column("f").to_pylist(), res.column("v").to_pylist()):
                key = k if k in out else next((x for x in chunk if str(x) == str(k)), None)
                if key is not None:
                    out[key].append(v)
        return {k: sorted(set(v), key=str) for k, v in out.items()}, dt.version()

    def key_variants(self, namespace: str, name: str, column: str, rule: str,
                     values: Sequence[str]) -> dict[str, list[str]]:
        """The spellings of normalized identities in the live rows (FindsKeyVariants): the
        distinct keys are read through DataFusion (deletion vectors honoured), normalized and
        matched in Arrow."""
        from deltalake import QueryBuilder

        from ..keymatch import key_variants

        res = arrow_table(QueryBuilder().register("t", self.open(namespace, name))
                       .execute(f"SELECT DISTINCT {quote_ident(column)} AS k FROM t")
                       .read_all())
        return key_variants(res.column("k"), rule, values)

    # ---- earlier versions (connectors.base.ReadsVersions) -------------------------------
    def rows_at_version(self, namespace: str, name: str, column: str, values: Sequence[Any],
                        version: int) -> dict[Any, int] | None:
        """Live rows per key in an earlier version; None when that version cannot be read
        any more (vacuumed, or cleaned from the log): what it held is then unknown."""
        from deltalake.exceptions import DeltaError

        try:
            return self.count_rows(self.open(namespace, name, version), column, values)
        except (ErasureError, DeltaError, OSError):
            return None

    def version_at(self, namespace: str, name: str, ms: int) -> int | None:
        """The version current at a time (epoch ms); None when the table is gone or its log
        no longer reaches back that far."""
        from deltalake.exceptions import DeltaError

        try:
            hist = self.open(namespace, name).history()
        except (ErasureError, DeltaError):   # the table is gone: no version to date it by
            return None
        at = [h["version"] for h in hist if h.get("timestamp") is not None and h["timestamp"] <= ms]
        oldest = min((h["version"] for h in hist), default=None)
        if not at:
            return None
        if oldest not in (0, None) and max(at) < oldest:
            return None   # the log no longer reaches back to the run
        return max(at)

    def rewrite_refusals(self, namespace: str, name: str, column: str | None = None) -> list[str]:
        """Why `rewrite-history` cannot be applied to this table (empty: it can)."""
        root = self.local_path(namespace, name)
        return rewrite.unsupported(root, column)

    def residue_after(self, namespace: str, name: str, mode: str | None = None) -> dict[str, Any]:
        configured = mode is None
        mode = mode or self.settings.residue
        if mode == "rewrite-history":
            uri = self.uri(namespace, name) or name
            why = (self._refusals.get(uri) if uri in self._refusals
                   else self.rewrite_refusals(namespace, name)) if configured else []
            if not why:
                return {"mode": "rewrite-history", "remains": [], "until": None,
                        "note": ("every data and change-data file a retained version reads "
                                 "that holds the subject is rewritten without the subject's "
                                 "rows and the log rewritten to name the new file (sizes and "
                                 "statistics recomputed, predicates naming the subject "
                                 "redacted); each retained version is re-read and compared "
                                 "with the dry run's row counts and hashes of everyone "
                                 "else's rows; old files are then deleted. Versions, "
                                 "timestamps and time travel stay")}
            out = self.residue_after(namespace, name, "keep-history")
            out["note"] = ("rewrite-history cannot be applied: " + "; ".join(why)
                           + ". The table is left as keep-history leaves it (logical erase "
                           "only) and the request ends incomplete (not verified) until an "
                           "operator chooses purge or the table changes")
            out["rewrite_refused"] = why
            return out
        if mode == "purge":
            note = ("old data files vacuumed, change data removed, log checkpointed and older "
                    "commits deleted (no table setting is changed): time travel to earlier "
                    "versions is lost")
            if self.local_path(namespace, name) is None:
                note = (f"object store {self.uri(namespace, name)}: " + note + "; then every "
                        "object under the prefix is listed and read, and in a versioned bucket "
                        "the noncurrent versions of the objects removed or rewritten (and any "
                        "holding the subject) are deleted and every noncurrent version checked")
            return {"mode": "purge", "remains": [], "until": None, "note": note}
        return {"mode": "keep-history",
                "remains": ["old data files with the subject's rows (time travel)",
                            "change data files", "log entries (statistics, predicates)"],
                "until": self.residue_deadline(namespace, name),
                "note": ("removed by the table's own VACUUM and log cleanup once the retention "
                         "periods pass; run them on schedule")}

    def live_rows(self, namespace: str, name: str, column: str,
                  values: Sequence[Any]) -> dict[Any, int]:
        return self.count_rows(self.open(namespace, name), column, values)

    def rows_deleted_by_tags(self, namespace: str, name: str, tags: Sequence[str]) -> int:
        """Rows deleted by earlier commits of ours (found by their `erasure.run` tag): how a
        resumed run knows what an interrupted attempt already did."""
        total = 0
        for h in self.open(namespace, name).history():
            if h.get("erasure.run") in tags and h.get("operation") == "MERGE":
                metrics = h.get("operationMetrics") or {}
                total += int(metrics.get("num_target_rows_deleted", 0) or 0)
        return total

    def _live_files(self, dt, root: Path) -> set[str]:
        """Data files of `dt`'s version, relative to `root` (a resolved real path)."""
        out = set()
        for u in dt.file_uris():
            p = os.path.realpath(unquote(u[len("file://"):] if u.startswith("file://") else u))
            out.add(os.path.relpath(p, root).replace(os.sep, "/"))
        return out

    def _live_rels(self, dt, uri: str) -> set[str]:
        """Data files of `dt`'s version, relative to an object-store table's URI."""
        base = uri.rstrip("/").partition("://")[2] + "/"
        out = set()
        for u in dt.file_uris():
            rest = u.partition("://")[2] if "://" in u else u
            out.add(unquote(rest[len(base):] if rest.startswith(base) else rest))
        return out

    def scan(self, namespace: str, name: str, column: str, values: Sequence[Any],
             dt=None) -> FolderScan:
        root = self.local_path(namespace, name)
        dt = dt or self.open(namespace, name)
        fields = self._fields(dt)
        names = {column, fields.get(column, ("", column))[1]}
        if root is None:
            uri = self.table_uri(namespace, name)
            sc = scan_object_prefix(self.store(uri), self._live_rels(dt, uri), names,
                                    list(values), self._memo)
        else:
            live = self._live_files(dt, root)
            missing = sorted(f for f in live if not (root / f).is_file())
            if missing:
                # a snapshot whose files are gone cannot prove anything about its rows
                raise FileNotFoundError(f"{len(missing)} data files of the current version "
                                        f"are not found (e.g. {missing[0]}); the table cannot "
                                        "be read")
            sc = scan_table_folder(root, live, names, list(values), self._memo)
        if column in dt.metadata().partition_columns:
            # the key is in the log's partitionValues, not in the file (nor always in its
            # folder name: Spark with column mapping uses random prefixes)
            adds = arrow_table(dt.get_add_actions(flatten=True))
            col = f"partition.{column}"
            if col in adds.column_names:
                by_str = {str(v): v for v in values}
                for path, pv, n in zip(adds.column("path").to_pylist(), adds.column(col).to_pylist(),
                                       adds.column("num_records").to_pylist()):
                    rel = unquote(path)
                    if pv is not None and str(pv) in by_str and rel not in sc.live.get(
                            by_str[str(pv)], ()):
                        v = by_str[str(pv)]
                        sc.add_live(v, rel)
                        sc.live_rows[v] = sc.live_rows.get(v, 0) + int(n or 0)
        return sc

    def count(self, namespace: str, name: str, column: str, values: Sequence[Any],
              with_residue: bool = True) -> TargetCount:
        dt = self.open(namespace, name)
        files: dict[Any, list[str]] = {v: [] for v in values}
        residue: dict[Any, list[str]] = {}
        sc = self.scan(namespace, name, column, values, dt) if with_residue else None
        if sc is None:
            rows = self.count_rows(dt, column, values)
        else:
            rows = self._rows_of_scan(dt, column, values, sc)
            residue = {v: [] for v in values}
            for v, held in sc.live.items():
                if v in files:
                    files[v] = sorted(held)
            for v, traces in sc.traces.items():
                if v in residue:
                    residue[v] = sorted(f"{f} ({k})" for f, k in traces.items())
        not_verified = list(sc.not_verified) if sc is not None else []
        details: dict[Any, dict[str, Any]] = {}
        if sc is not None and self.settings.residue == "rewrite-history":
            holding = [v for v in values if rows.get(v) or files.get(v) or residue.get(v)]
            why = self.rewrite_refusals(namespace, name, column)
            self._refusals[self.uri(namespace, name) or name] = why
            if holding and why:
                not_verified.append("rewrite-history cannot be applied: " + "; ".join(why))
            elif holding:
                # the dry run's proof: per version, the others' rows (count and hash)
                root = self.local_path(namespace, name)
                assert root is not None
                per_version = rewrite.digests(root, column, values)
                for v in holding:
                    # how many keys the digests leave out (text: a count per subject, not
                    # summed over a subject's several spellings as plan details' ints are)
                    details[v] = {"rewrite_history_versions": per_version,
                                  "rewrite_history_keys": str(len(values))}
        if sc is None and self.local_path(namespace, name) is None:
            not_verified.append(
                f"object store: objects under {self.uri(namespace, name)} were not listed, so "
                "old data files, change data (_change_data/), deletion-vector files and "
                "_delta_log entries were not checked for the subject")
        return TargetCount(rows=rows, files=files, version=dt.version(), residue=residue,
                           details=details, not_verified=not_verified)

    def _rows_of_scan(self, dt, column: str, values: Sequence[Any],
                      sc: FolderScan) -> dict[Any, int]:
        """Live rows per key, given the folder scan: one pass over the files gives the rows
        too; only rows hidden by deletion vectors need the reader, and only for the keys the
        files hold physically (most keys of a sweep are in none)."""
        rows = dict.fromkeys(values, 0)
        rows.update((v, n) for v, n in sc.live_rows.items() if v in rows)
        if "deletionVectors" in (dt.protocol().reader_features or []):
            rows.update(self.count_rows(dt, column, [v for v in values if sc.live.get(v)]))
        return rows

    def rows_written_since(self, namespace: str, name: str, version: int | None,
                           upto: int | None = None) -> int:
        """Rows in data files added after `version` (up to `upto`): the guard's tolerance
        for other writers. Files rewritten by compaction count too, so it errs generous."""
        now = self.open(namespace, name, upto)
        if now.version() == version:
            return 0
        from deltalake.exceptions import DeltaError

        try:
            before = set(arrow_table(self.open(namespace, name, version).get_add_actions())
                         .column("path").to_pylist())
        except (UnknownDatasetError, DeltaError):
            # the plan's version is no longer in the log (a purge cleaned it): what others
            # wrote since cannot be known, so none of it is tolerated. The guard then
            # stops on any change in the subjects' rows (fail closed, never open)
            return 0
        adds = arrow_table(now.get_add_actions())
        return sum(int(n or 0) for p, n in zip(adds.column("path").to_pylist(),
                                                adds.column("num_records").to_pylist())
                   if p not in before)

    def file_versions(self, namespace: str, name: str, paths: Sequence[str]) -> dict[str, int]:
        """The commit version that added each of these data files, from the commit JSONs
        still in the log (files added before the oldest kept commit are not found)."""
        import json

        root = self.local_path(namespace, name)
        wanted = set(paths)
        out: dict[str, int] = {}
        if root is None:
            return out
        for f in sorted((root / "_delta_log").glob("*.json")):
            if not f.stem.isdigit():
                continue
            for line in f.read_text(encoding="utf-8").splitlines():
                if '"add"' not in line:
                    continue
                add = json.loads(line).get("add")
                if add and unquote(add["path"]) in wanted:
                    out.setdefault(unquote(add["path"]), int(f.stem))
        return out

    def history(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """Version, time and operation of every commit still in the log. Operation
        parameters are left out on purpose: DELETE predicates carry identifiers."""
        dt = self.open(namespace, name)
        out = []
        for h in dt.history():
            out.append({"version": h.get("version"), "timestamp": h.get("timestamp"),
                        "operation": h.get("operation"),
                        "metrics": {k: v for k, v in (h.get("operationMetrics") or {}).items()
                                    if isinstance(v, (int, float, str)) and k.startswith("num")}})
        return out

    def retention(self, namespace: str, name: str) -> dict[str, str]:
        conf = self.open(namespace, name).metadata().configuration
        return {"delta.logRetentionDuration": conf.get("delta.logRetentionDuration",
                                                       DEFAULT_LOG_RETENTION),
                "delta.deletedFileRetentionDuration": conf.get(
                    "delta.deletedFileRetentionDuration", DEFAULT_FILE_RETENTION)}

    def residue_deadline(self, namespace: str, name: str, at: datetime | None = None) -> str:
        """When the table's own retention would remove the residue of a delete made `at`
        (provided the operator runs VACUUM and checkpoints): the later of the two."""
        r = self.retention(namespace, name)
        at = at or datetime.now(timezone.utc)
        span = max(parse_interval(r["delta.logRetentionDuration"]),
                   parse_interval(r["delta.deletedFileRetentionDuration"]))
        return (at + span).isoformat(timespec="seconds")

    # ---- erasing --------------------------------------------------------------------
    def erase(self, namespace: str, name: str, column: str, values: Sequence[Any],
              tag: str) -> EraseResult:
        """Delete every row whose key is in `values`, retrying on commit conflicts."""
        import pyarrow as pa
        from deltalake import CommitProperties
        from deltalake.exceptions import CommitFailedError

        retries = self.settings.max_conflict_retries
        for attempt in range(retries + 1):
            dt = self.open(namespace, name)
            typ = pa.schema(dt.schema().to_arrow()).field(column).type
            source = pa.table({KEY_FIELD: array_of(values, typ)})
            before = dt.version()
            if self.before_commit:
                self.before_commit(self.table_uri(namespace, name), attempt)
            try:
                # streamed_exec=False prunes files by statistics but logs a pruning predicate
                # holding the keys (`k = 42`, or the batch's min/max); that is only acceptable
                # when the purge deletes the log right after. keep-history mode scans every
                # file instead so that no key ever enters the log.
                m = (dt.merge(source, predicate=f"t.{quote_ident(column)} = s.{KEY_FIELD}",
                              source_alias="s", target_alias="t",
                              streamed_exec=self.settings.residue != "purge",
                              commit_properties=CommitProperties(
                                  custom_metadata={"erasure.run": tag}))
                     .when_matched_delete().execute())
            except CommitFailedError:
                time.sleep(min(0.05 * 2 ** attempt, 2.0))
                continue
            return EraseResult(int(m.get("num_target_rows_deleted", 0)), before, dt.version(),
                               int(m.get("num_target_files_removed", 0)),
                               int(m.get("num_target_files_added", 0)), attempt)
        raise ConflictRetriesExhausted(
            f"{namespace}:{name}: {retries + 1} commit attempts lost to concurrent writers; "
            "run again later")

    def _rewrite_soft_deleted(self, namespace: str, name: str, column: str,
                              values: Sequence[Any], tag: str) -> int:
        """Rewrite live files that still hold the keys physically under a deletion vector,
        by a no-op MERGE update of one live row of each file (keys stay out of the log)."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        from deltalake import CommitProperties

        rewritten = 0
        for _ in range(50):
            dt = self.open(namespace, name)
            sc = self.scan(namespace, name, column, values, dt)
            root = self.local_path(namespace, name)
            dirty = sorted({f for v in values for f in sc.live.get(v, ())})
            if not dirty:
                return rewritten
            phys = self._fields(dt)[column][1]
            store = self.object_store(namespace, name)
            pf = pq.ParquetFile(root / unquote(dirty[0]) if root is not None
                                else store.open_rel(dirty[0]))      # type: ignore[union-attr]
            # named by its file name only: the folders above it can be partition values
            # holding the key itself
            fname = Path(unquote(dirty[0])).name
            name_in_file = phys if phys in pf.schema_arrow.names else column
            if name_in_file not in pf.schema_arrow.names:
                raise ErasureFailed(f"{namespace}:{name}: file {fname} holds soft-deleted "
                                    "rows of the subject and cannot be rewritten by key")
            raw = [x for x in pf.read(columns=[name_in_file]).column(0).unique().to_pylist()
                   if x not in set(values)]
            live = [k for k, n in self.count_rows(dt, column, raw[:SQL_CHUNK]).items() if n]
            if not live:
                raise ErasureFailed(f"{namespace}:{name}: file {fname} holds soft-deleted "
                                    "rows of the subject and no live row to rewrite it by")
            typ = pa.schema(dt.schema().to_arrow()).field(column).type
            q = quote_ident(column)
            (dt.merge(pa.table({KEY_FIELD: array_of(live[:1], typ)}),
                      predicate=f"t.{q} = s.{KEY_FIELD}", source_alias="s", target_alias="t",
                      streamed_exec=False,
                      commit_properties=CommitProperties(custom_metadata={"erasure.run": tag}))
             .when_matched_update(updates={q: f"t.{q}"}).execute())
            rewritten += 1
        raise ErasureFailed(f"{namespace}:{name}: soft-deleted rows remain after 50 rewrites")

    def _remove_leftovers(self, root: Path, namespace: str, name: str, column: str,
                          values: Sequence[Any], names: logclean.LogNames,
                          res: PurgeResult) -> list[str]:
        """Delete the data and change-data files the folder scan still finds holding a key,
        when that is safe next to other writers:

        - a file the log names as removed (a tombstone) or as change data goes;
        - a file no commit or checkpoint named (an orphan, or a file whose commit landed
          after the log was read) may be another writer's in-flight data: it goes only if
          its modification time is older than `[delta] orphan_grace`, else it is left and
          verification reports it;
        - never a file the latest version references, re-checked against a freshly loaded
          version right before each delete.
        Also deleted: Hadoop `.name.crc` sidecars of data files that no longer exist.
        `vacuum(full=True)` is never used: in delta-rs 1.6 it also deletes deletion-vector
        files that live data files still use, and every untracked file."""
        uri = self.uri(namespace, name)
        removed: list[str] = []
        dt = self.open(namespace, name)
        fields = self._fields(dt)
        live = self._live_files(dt, root)
        self._hook("leftover_scan", uri)
        sc = scan_table_folder(root, live, {column, fields.get(column, ("", column))[1]},
                               list(values), self._memo)
        self._hook("before_leftover_delete", uri)

        def mtime_of(rel: str) -> float | None:
            try:
                return (root / rel).stat().st_mtime
            except FileNotFoundError:
                return None

        def delete(rel: str) -> bool:
            (root / rel).unlink()
            return True

        removed += self._delete_holders(
            sc, values, names, res, "file", mtime_of,
            lambda: self._live_files(self.open(namespace, name), root), delete)
        log = root / "_delta_log"
        for dirpath, _, filenames in os.walk(root):
            for fn in filenames:
                if fn.startswith(".") and fn.endswith(".crc") and dirpath != str(log):
                    if not (Path(dirpath) / fn[1:-4]).exists():
                        (Path(dirpath) / fn).unlink()
                        removed.append(os.path.relpath(Path(dirpath) / fn, root))
        return removed

    def _remove_object_leftovers(self, store: ObjectPrefix, namespace: str, name: str,
                                 column: str, values: Sequence[Any], names: logclean.LogNames,
                                 res: PurgeResult) -> tuple[list[str], FolderScan]:
        """`_remove_leftovers` for an object-store prefix: the same rules (removed or change
        data per the log, or an orphan older than `[delta] orphan_grace` by its LastModified;
        never a file the latest version references), on the listing. Returns the objects
        deleted and the scan (its noncurrent versions holding a key, for the version purge)."""
        uri = store.uri
        dt = self.open(namespace, name)
        fields = self._fields(dt)
        self._hook("leftover_scan", uri)
        sc = scan_object_prefix(store, self._live_rels(dt, uri),
                                {column, fields.get(column, ("", column))[1]}, list(values),
                                self._memo)
        self._hook("before_leftover_delete", uri)

        def delete(rel: str) -> bool:
            try:
                store.delete(rel)
                return True
            except Denied as exc:
                res.notes.append(f"object store: {exc}; verification reports what it holds")
                return False

        return self._delete_holders(
            sc, values, names, res, "object",
            lambda rel: sc.objects[rel].mtime if rel in sc.objects else None,
            lambda: self._live_rels(self.open(namespace, name), uri), delete), sc

    def _delete_holders(self, sc: FolderScan, values: Sequence[Any], names: logclean.LogNames,
                        res: PurgeResult, noun: str, mtime_of: Callable[[str], float | None],
                        live_now: Callable[[], set[str]],
                        delete: Callable[[str], bool]) -> list[str]:
        """The leftover rule, one place for folders and object stores: of the data and
        change-data files the scan found holding a key and not live, delete those the log
        named as removed or as change data, and those no commit named (orphans) once older
        than `[delta] orphan_grace`; never one the latest version references (reloaded
        right before each delete). Younger orphans are left and said in the notes."""
        now, young, grace = time.time(), 0, self.settings.orphan_grace
        removed: list[str] = []
        holders = sorted({rel for v in values for rel, kind in sc.residue(v).items()
                          if kind in ("change data file", "data file")})
        for rel in holders:
            mtime = mtime_of(rel)
            if mtime is None:
                continue                 # gone meanwhile
            if not (rel in names.removed or rel in names.cdc) and now - mtime < grace:
                young += 1
                continue
            if rel in live_now():
                continue       # committed by another writer meanwhile: live data
            if delete(rel):
                removed.append(rel)
        if young:
            res.notes.append(
                f"{young} {noun}(s) holding a key were left: the log never named them as "
                f"removed or as change data and they are younger than the "
                f"{timedelta(seconds=grace)} grace period ([delta] orphan_grace; possibly "
                "another writer's uncommitted data, or the data of a run of ours that was "
                "killed mid-write); verification reports them, a later purge removes them "
                "once they are older")
        return removed

    @staticmethod
    def _delete_noncurrent(store: ObjectPrefix, touched: set[str], holding: set[str],
                           res: PurgeResult) -> int:
        """In a versioned bucket, delete (by version id) the noncurrent versions of the
        objects this purge removed or rewrote (`touched`), and those a scan found holding a
        key (`holding`, version idents), and nothing else. What the store refuses is said in
        the notes; verification then reports what is left."""
        from ..objectstore import versions_unchecked_reason

        why = versions_unchecked_reason(store)
        if why:
            res.notes.append(f"object store: {why}")
            return 0
        try:
            if not store.versioning():
                return 0
            versions = store.noncurrent()
        except Denied as exc:
            res.notes.append(f"object store: {exc}; noncurrent versions were not deleted")
            return 0
        deleted = refused = 0
        first = ""
        for v in versions:
            if v.rel in touched or v.ident in holding:
                try:
                    store.delete_version(v)
                    deleted += 1
                except Denied as exc:
                    refused += 1
                    first = first or str(exc)
        if refused:
            res.notes.append(f"object store: {first} ({refused} version(s) refused); "
                             "verification reports those that hold the subject")
        return deleted

    @staticmethod
    def _remove_empty_folders(root: Path) -> list[str]:
        removed = []
        for dirpath, _, _ in os.walk(root, topdown=False):
            p = Path(dirpath)
            if p != root and "_delta_log" not in p.relative_to(root).parts and not any(p.iterdir()):
                p.rmdir()
                removed.append(os.path.relpath(p, root) + "/")
        return removed

    def purge(self, namespace: str, name: str, column: str, values: Sequence[Any],
              tag: str) -> PurgeResult:
        """Remove every physical trace of `values` left after the logical delete, without
        changing any table setting (a crash at any point leaves the configuration as it was;
        a new run repeats the steps, each of which is safe to repeat)."""
        from deltalake import CommitProperties

        if self.settings.residue == "rewrite-history":
            return self._rewrite_history(namespace, name, column, values, None)
        uri = self.table_uri(namespace, name)
        root = self.local_path(namespace, name)
        res = PurgeResult() if root else StorePurgeResult(object_store=uri)
        fs = logclean.storage(str(root) if root else uri, self.storage_options(uri))
        # only deletion vectors leave erased rows inside live files; without them the
        # MERGE rewrote every file it touched, so this scan would find nothing
        has_dv = "deletionVectors" in (self.open(namespace, name).protocol().reader_features or [])
        res.dv_files_rewritten = (self._rewrite_soft_deleted(namespace, name, column, values, tag)
                                  if has_dv else 0)
        # retention 0 needs no setting: enforce_retention_duration=False allows it
        res.files_vacuumed = list(self.open(namespace, name).vacuum(
            retention_hours=0, dry_run=False, enforce_retention_duration=False))
        # an empty commit of ours (no file, no setting): the checkpoint is taken at it, so
        # every commit holding a key (the erase MERGE logs its pruning predicate) is older
        dt = self.open(namespace, name)
        dt.create_write_transaction(
            [], mode="append", schema=dt.schema(),
            partition_by=dt.metadata().partition_columns or None,
            commit_properties=CommitProperties(custom_metadata={"erasure.run": tag}))
        dt = self.open(namespace, name)
        version = dt.version()
        # which files the log names (removed, change data), read before any log file goes
        names = logclean.read_names(fs, logclean.list_log(fs))
        self._hook("before_checkpoint", uri)
        dt.create_checkpoint()
        self._hook("after_checkpoint", uri)
        logclean.drop_dead_tombstones(fs, version)
        files = logclean.list_log(fs)
        if not any(f.kind == "checkpoint" and f.version == version for f in files):
            raise ErasureFailed(f"{namespace}:{name}: no checkpoint at version {version} after "
                                "create_checkpoint(); the older log was left in place")
        res.log_files_removed = logclean.delete_before(fs, version, files, names)
        live = {unquote(p) for p in pa_column(self.open(namespace, name).get_add_actions(), "path")}
        res.files_vacuumed += logclean.delete_dead_change_data(fs, version, names, live)
        if root:
            res.files_vacuumed += self._remove_leftovers(root, namespace, name, column, values,
                                                         names, res)
            res.folders_removed = self._remove_empty_folders(root)
        else:
            store = self.store(uri)
            left, sc = self._remove_object_leftovers(store, namespace, name, column, values,
                                                     names, res)
            res.files_vacuumed += left
            touched = {*res.files_vacuumed, *res.log_files_removed,
                       f"{logclean.LOG}/{version:020d}.checkpoint.parquet",
                       f"{logclean.LOG}/_last_checkpoint"}
            holding = {k for k, o in sc.objects.items() if o.version_id is not None}
            assert isinstance(res, StorePurgeResult)
            res.noncurrent_versions_deleted = self._delete_noncurrent(store, touched, holding,
                                                                      res)
        res.version_after = self.open(namespace, name).version()
        return res

    def purge_planned(self, namespace: str, name: str, column: str, values: Sequence[Any],
                      tag: str, planned: dict[str, Any]) -> PurgeResult:
        """`purge`, given what the dry run recorded (`Target.details`): in rewrite-history
        mode the per-version digests of everyone else's rows, checked before anything is
        rewritten (PurgesAgainstPlan)."""
        if self.settings.residue == "rewrite-history":
            # the digests leave out the rows of the keys counted with them: comparable only
            # when the purge removes the same keys (a request that failed on the way makes
            # the batch smaller; the proof before and after the rewrite still holds then)
            same_keys = planned.get("rewrite_history_keys") == str(len(values))
            return self._rewrite_history(namespace, name, column, values,
                                         planned.get("rewrite_history_versions")
                                         if same_keys else None)
        return self.purge(namespace, name, column, values, tag)

    def _rewrite_point(self, point: str, namespace: str, name: str, column: str,
                       values: Sequence[Any]) -> None:
        """Called at each point of a history rewrite (`rewrite:planned` ... `rewrite:old_deleted`,
        rewrite.py). A subclass that reads the table through another engine (Spark) checks
        every version there; the default only runs the test hooks."""
        self._hook(point, self.uri(namespace, name))

    def _rewrite_history(self, namespace: str, name: str, column: str,
                         values: Sequence[Any],
                         planned: dict[str, dict] | None) -> PurgeResult:
        """`[delta] residue = "rewrite-history"` (rewrite.py): the subject's rows out of every
        retained version; then the leftover rule of the purge for files no commit names."""
        self.table_uri(namespace, name)          # UnknownDatasetError for no table
        root = self.local_path(namespace, name)
        why = self.rewrite_refusals(namespace, name, column)
        if root is None or why:
            raise ErasureFailed(f"{namespace}:{name}: rewrite-history cannot be applied: "
                                + "; ".join(why) + "; nothing was changed")
        dt = self.open(namespace, name)
        phys = self._fields(dt).get(column, ("", column))[1]
        done = rewrite.rewrite_history(root, column, {column, phys}, list(values),
                                       self._live_files(dt, root),
                                       lambda point: self._rewrite_point(point, namespace, name,
                                                                         column, values),
                                       planned)
        res = RewritePurgeResult(files_rewritten=done.files_rewritten,
                                 log_files_rewritten=done.log_files_rewritten,
                                 crc_files_removed=done.crc_files_removed,
                                 versions=done.proof, resumed=done.resumed,
                                 plan_check=done.plan_check)
        res.files_vacuumed = list(done.old_files_deleted)
        names = logclean.read_names(logclean.storage(str(root), None),
                                    logclean.list_log(logclean.storage(str(root), None)))
        res.files_vacuumed += self._remove_leftovers(root, namespace, name, column, values,
                                                     names, res)
        res.version_after = self.open(namespace, name).version()
        return res


@dataclass
class RewritePurgeResult(PurgeResult):
    """A history rewrite: what it rewrote, and per retained version the proof (rows of
    everyone else and their hash before and after, the subject's rows after)."""

    files_rewritten: int = 0
    log_files_rewritten: int = 0
    crc_files_removed: int = 0
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    resumed: bool = False
    plan_check: dict[str, Any] = field(default_factory=dict)

    def evidence(self) -> dict[str, Any]:
        out = super().evidence()
        if self.plan_check:
            out["rewrite_history_plan_check"] = self.plan_check
        checked = [v for v, e in self.versions.items() if e.get("readable")]
        out.update(mode="rewrite-history", files_rewritten=self.files_rewritten,
                   log_files_rewritten=self.log_files_rewritten,
                   crc_files_removed=self.crc_files_removed,
                   time_travel_lost_before_version=None,
                   versions_checked=len(checked), versions=self.versions,
                   resumed=self.resumed, notes=list(self.notes))
        return out


@dataclass
class StorePurgeResult(PurgeResult):
    """A purge on an object store: also which prefix, and the noncurrent versions deleted."""

    object_store: str = ""
    noncurrent_versions_deleted: int = 0

    def evidence(self) -> dict[str, Any]:
        out = super().evidence()
        out.update(object_store=self.object_store,
                   noncurrent_versions_deleted=self.noncurrent_versions_deleted)
        return out


def pa_column(batch, name: str) -> list:
    return arrow_table(batch).column(name).to_pylist()


def _build(config: Config, registry: ConnectorRegistry) -> DeltaConnector:
    return DeltaConnector(config.section("delta"), storage=config.storage)


PLUGIN = ConnectorPlugin("delta", DeltaConnector.presentation, _build, section="delta",
                         model=DeltaSettings, default=DeltaSettings, order=10)
