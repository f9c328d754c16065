"""Delta tables erased on a Spark cluster through Spark Connect (`[spark] remote`).

For the Delta tables `[spark] tables` names (glob patterns over the table's location; every
Delta table by default), counting live rows, the erase and the verification's row count run
on the cluster; this process never reads the tables' rows. What Spark Connect cannot do, or
what a Spark cluster may lack (Sail, the server the tests use, has no VACUUM, no DESCRIBE
HISTORY and no log cleanup), stays with deltalake exactly as for `connectors/delta`: the guard's
versions and tolerance, the residue scan and the purge (VACUUM 0, checkpoint, log cleanup,
rewriting files whose rows a deletion vector only hides).

The subject keys travel to the cluster as a DataFrame built from an Arrow table (a temporary
view), never as literals in the SQL text: a literal IN list grows about quadratically in
Spark's planner and breaks at ~10,000 ids, and it would put the keys into the table's log.
The erase is

    MERGE INTO delta.`<table>` t USING <keys view> s ON t.`<column>` = s.<marker>
    WHEN MATCHED THEN DELETE

where `<marker>` (the key column of the view) is derived from the run's tag: the commit's
logged merge predicate names it and nothing else, which is how a resumed run finds the rows
an interrupted attempt already deleted (Spark commits carry no custom metadata here). The
rows deleted come from that commit's `operationMetrics`; its `engineInfo` names the cluster.

This module imports no Spark library at import time (plug-ins are listed whenever a config
is loaded): pyspark-client is imported when the first table is counted or erased.
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from pydantic import BaseModel, Field, field_validator

from erasure.config import SECTION, Text, refuse
from erasure.errors import ConflictRetriesExhausted, ErasureFailed

from .base import Capabilities, ConnectorPlugin, ConnectorRegistry, EraseResult, Presentation
from .delta import DeltaConnector, RewritePurgeResult, rewrite
from .delta.config import DeltaSettings

if TYPE_CHECKING:
    from erasure.config import Config


class SparkSettings(BaseModel):
    """`[spark]`: where the cluster is and which Delta tables it erases."""

    model_config = SECTION
    remote: Text
    # fnmatch patterns over the table's location (a path or an s3://... URI); every Delta
    # table when absent
    tables: list[Text] = Field(default_factory=lambda: ["*"])

    @field_validator("remote")
    @classmethod
    def _spark_connect_url(cls, v: str) -> str:
        if not v.startswith("sc://") or len(v) <= len("sc://"):
            raise refuse('must be a Spark Connect URL such as "sc://host:15002"')
        return v


def _import_spark_connect() -> None:
    """Import pyspark's Spark Connect client. On import it takes a `__main__` without a
    `__spec__` or `__file__` (Python run with `-c`, or embedded) for a doctest run and exits
    the process when its test dependencies are missing; for that import, such a `__main__`
    is given a `__file__`."""
    import sys

    main = sys.modules.get("__main__")
    bare = (main is not None and getattr(main, "__spec__", None) is None
            and not hasattr(main, "__file__"))
    if bare:
        main.__file__ = "<erasure>"          # type: ignore[union-attr]
    try:
        import pyspark.sql.connect.session  # noqa: F401
    finally:
        if bare:
            del main.__file__               # type: ignore[union-attr]


def marker(tag: str) -> str:
    """The keys view's column for the run tagged `tag`: an identifier that names the run in
    the commit's merge predicate and holds nothing of any subject."""
    return "erasure_k_" + hashlib.sha256(tag.encode("utf-8")).hexdigest()[:20]


def _backquote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class SparkDeltaConnector(DeltaConnector):
    """The Delta connector with its row counts and erase on a Spark Connect cluster."""

    name = "spark"
    capabilities = Capabilities(
        residue_scan=True, batch=True, guard="versioned", erase_order=0,
        notes=("rows counted and erased on the Spark cluster; the residue scan and the purge "
               "run here with deltalake (the cluster may lack VACUUM and log cleanup)",))
    presentation = Presentation("Delta Lake table (Spark)", "Delta Lake tables (Spark)",
                                "rows deleted on the Spark cluster; residue purged",
                                color="#e25a1c", path_names=True)

    def __init__(self, spark: SparkSettings, settings: DeltaSettings | None = None, **kw: Any):
        super().__init__(settings, **kw)
        self.spark_settings = spark
        self._session: Any = None
        self._views = 0
        # rewrite-history with Spark as the second reader: per version, what Spark read
        # when the rewrite was planned, and its check against deltalake's digests
        self._spark_before: dict[str, dict] | None = None
        self._spark_proof: dict[str, dict] | None = None

    # ---- which tables -----------------------------------------------------------------
    def handles(self, namespace: str, name: str) -> bool:
        uri = self.uri(namespace, name)
        return (uri is not None and any(fnmatch.fnmatchcase(uri, p)
                                        for p in self.spark_settings.tables)
                and super().handles(namespace, name))

    # ---- the session -----------------------------------------------------------------
    def session(self):
        if self._session is None:
            _import_spark_connect()
            from pyspark.sql import SparkSession

            try:
                # a session of its own (not the process's default one, which another
                # connector or the embedding program may hold for another server)
                self._session = SparkSession.builder.remote(self.spark_settings.remote).create()
            except Exception as exc:       # grpc and pyspark raise many kinds
                raise ErasureFailed(f"[spark] remote {self.spark_settings.remote}: cannot open "
                                    f"a Spark Connect session ({type(exc).__name__})") from None
        return self._session

    def close(self) -> None:
        """Release the session on the server (its temporary views go with it) while the
        server is there: a session dropped later retries the release for minutes."""
        if self._session is not None:
            session, self._session = self._session, None
            session.stop()

    def _run(self, what: str, sql: str) -> list:
        try:
            return self.session().sql(sql).collect()
        except ErasureFailed:
            raise
        except Exception as exc:
            # the message may echo data: only its class (and Spark's error class) is said
            cls = getattr(exc, "getErrorClass", lambda: None)()
            raise ErasureFailed(f"Spark {what} failed ({type(exc).__name__}"
                                f"{', ' + cls if cls else ''})") from None

    # ---- counting on the cluster -------------------------------------------------------
    def count_rows(self, dt, column: str, values: Sequence[Any]) -> dict[Any, int]:
        counts: dict[Any, int] = dict.fromkeys(values, 0)
        if not counts:
            return counts
        key = marker("count")
        view = self._keys_view_for(dt, column, values, key)
        rows = self._run("count", f"SELECT s.{key} AS k, count(*) AS n "
                                  f"FROM delta.{_backquote(self._path_of(dt))} t "
                                  f"JOIN {view} s ON t.{_backquote(column)} = s.{key} "
                                  f"GROUP BY s.{key}")
        by_str = {str(v): v for v in values}
        for r in rows:
            v = r["k"] if r["k"] in counts else by_str.get(str(r["k"]))
            if v is not None:
                counts[v] += int(r["n"])
        return counts

    def _path_of(self, dt) -> str:
        uri = str(dt.table_uri)
        return uri[len("file://"):] if uri.startswith("file://") else uri

    def _keys_view_for(self, dt, column: str, values: Sequence[Any], key: str) -> str:
        """A temporary view of the keys (one column named `key`, typed like the table's
        column), sent to the cluster as Arrow data; its name."""
        import pyarrow as pa

        from .keymatch import array_of

        typ = pa.schema(dt.schema().to_arrow()).field(column).type
        self._views += 1
        view = f"{key}_{self._views}"
        self.session().createDataFrame(pa.table({key: array_of(values, typ)})) \
            .createOrReplaceTempView(view)
        return view

    def _rows_of_scan(self, dt, column: str, values: Sequence[Any], sc) -> dict[Any, int]:
        """Rows per key from the cluster (not from the folder scan's physical rows); the
        files holding them and the residue still come from the scan (Delta's `count`)."""
        return self.count_rows(dt, column, values)

    # ---- erasing on the cluster --------------------------------------------------------
    def erase(self, namespace: str, name: str, column: str, values: Sequence[Any],
              tag: str) -> EraseResult:
        key = marker(tag)
        retries = self.settings.max_conflict_retries
        for attempt in range(retries + 1):
            dt = self.open(namespace, name)
            before = dt.version()
            view = self._keys_view_for(dt, column, values, key)
            if self.before_commit:
                self.before_commit(self.table_uri(namespace, name), attempt)
            try:
                self._run("MERGE", f"MERGE INTO delta.{_backquote(self._path_of(dt))} t "
                                   f"USING {view} s ON t.{_backquote(column)} = s.{key} "
                                   "WHEN MATCHED THEN DELETE")
            except ErasureFailed:
                # lost a commit race (another writer committed meanwhile): try again
                if self.open(namespace, name).version() != before and attempt < retries:
                    time.sleep(min(0.05 * 2 ** attempt, 2.0))
                    continue
                raise
            commit = self._our_commit(namespace, name, before, key)
            if commit is None:
                raise ErasureFailed(f"{namespace}:{name}: the Spark MERGE returned but no commit "
                                    f"after version {before} names this run")
            m = commit.get("operationMetrics") or {}
            return EraseResult(int(m.get("numTargetRowsDeleted", 0) or 0), before,
                               int(commit["version"]), int(m.get("numTargetFilesRemoved", 0) or 0),
                               int(m.get("numTargetFilesAdded", 0) or 0), attempt)
        raise ConflictRetriesExhausted(
            f"{namespace}:{name}: {retries + 1} commit attempts lost to concurrent writers; "
            "run again later")

    def _commits_of(self, namespace: str, name: str, key: str,
                    since: int | None = None) -> list[dict[str, Any]]:
        needle = f"s . {key}"
        out = []
        for h in self.open(namespace, name).history():
            if since is not None and int(h.get("version", -1)) <= since:
                continue
            pred = str((h.get("operationParameters") or {}).get("mergePredicate", ""))
            if h.get("operation") == "MERGE" and (needle in pred or f"s.{key}" in pred):
                out.append(h)
        return out

    def _our_commit(self, namespace: str, name: str, before: int,
                    key: str) -> dict[str, Any] | None:
        mine = self._commits_of(namespace, name, key, since=before)
        return min(mine, key=lambda h: int(h["version"])) if mine else None

    def history(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The Delta connector's history (copied to the ledger before the purge deletes the
        log), with each commit's `engineInfo`: the audit trail shows the cluster wrote the
        erase."""
        engines = {h.get("version"): h.get("engineInfo")
                   for h in self.open(namespace, name).history()}
        return [{**h, "engineInfo": engines.get(h["version"])}
                for h in super().history(namespace, name)]

    def engine_of(self, namespace: str, name: str, version: int) -> str | None:
        """The `engineInfo` of a commit: which engine wrote it."""
        for h in self.open(namespace, name).history():
            if int(h.get("version", -1)) == version:
                return h.get("engineInfo")
        return None

    def rows_deleted_by_tags(self, namespace: str, name: str, tags: Sequence[str]) -> int:
        """Rows deleted by earlier attempts: Spark commits found by the marker their merge
        predicate names, plus any deltalake commit of ours (the purge's rewrites)."""
        total = super().rows_deleted_by_tags(namespace, name, tags)
        for tag in tags:
            for h in self._commits_of(namespace, name, marker(tag)):
                total += int((h.get("operationMetrics") or {}).get("numTargetRowsDeleted", 0) or 0)
        return total


    # ---- rewrite-history: every retained version read through Spark as well ----------
    def _rewrite_point(self, point: str, namespace: str, name: str, column: str,
                       values: Sequence[Any]) -> None:
        """The history rewrite's proof with Spark (`connectors/delta/rewrite.py` proves it
        with deltalake): when the rewrite is planned, every version the journal will compare
        is read through Spark once (which versions Spark can read at all); once the log names
        the new files (`rewrite:dropped`, before deltalake's proof and before any old file
        is deleted; `rewrite:proved` on a run resumed after that proof), every version is read
        through Spark again and its rows of everyone else must be those deltalake read before
        the rewrite (count and hash), with no row of the subject. A mismatch, or a version
        Spark read before and cannot read now, restores the original log (as deltalake's
        proof does) and fails the step. A version Spark could not read before the rewrite
        either is recorded "not verified with Spark: <why>", never as checked."""
        root = self.local_path(namespace, name)
        if root is not None:
            if point == "rewrite:planned":
                self._spark_proof = None
                self._spark_before = self._spark_digests(root, column, values)
            elif point in ("rewrite:dropped", "rewrite:proved") and self._spark_proof is None:
                self._spark_proof = self._spark_check(root, column, values)
        super()._rewrite_point(point, namespace, name, column, values)

    def _spark_digests(self, root: Path, column: str, values: Sequence[Any]) -> dict[str, dict]:
        journal = rewrite.load_journal(root) or {}
        return {v: self._spark_digest(root, int(v), column, values)
                for v in sorted(journal.get("before") or {}, key=int)}

    def _spark_digest(self, root: Path, version: int, column: str,
                      values: Sequence[Any]) -> dict[str, Any]:
        """`rewrite.version_digest` with Spark as the reader: the version read by time travel
        (`spark.read.format("delta").option("versionAsOf", v).load(path)`), fetched as Arrow,
        cast to the types deltalake gives the same version, then the same count and
        order-independent hash of everyone else's rows."""
        import pyarrow as pa
        import pyarrow.compute as pc
        from deltalake import DeltaTable

        from .delta.residue import _value_array
        from .keymatch import comparable, key_mask

        try:
            df = (self.session().read.format("delta").option("versionAsOf", version)
                  .load(str(root)))
            t = df.toArrow()
        except ErasureFailed as exc:
            return {"readable": False, "why": str(exc)}
        except Exception as exc:
            return {"readable": False, "why": _spark_why(exc)}
        try:
            schema = pa.schema(DeltaTable(str(root), version=version).schema().to_arrow())
            t = t.select(schema.names).cast(schema)
        except Exception as exc:
            return {"readable": False, "why": "Spark's rows do not have the columns and types "
                                              f"deltalake reads ({type(exc).__name__})"}
        arr = comparable(t.column(column).combine_chunks())
        hit = pc.fill_null(key_mask(arr, _value_array(list(values), arr.type)), False)
        others = t.filter(pc.invert(hit))
        return {"readable": True, "rows": others.num_rows,
                "hash": rewrite.table_digest(others),
                "subject_rows": t.num_rows - others.num_rows}

    def _spark_check(self, root: Path, column: str, values: Sequence[Any]) -> dict[str, dict]:
        """Per version of the journal: what Spark reads now against what deltalake read
        before the rewrite. Fails the step (original log restored) on a mismatch."""
        journal = rewrite.load_journal(root) or {}
        before: dict[str, dict] = journal.get("before") or {}
        earlier = self._spark_before or {}
        out: dict[str, dict] = {}
        bad: list[str] = []
        for v in sorted(before, key=int):
            b, now = before[v], self._spark_digest(root, int(v), column, values)
            e: dict[str, Any] = {}
            if not b.get("readable"):
                e["spark"] = ("not verified with Spark: deltalake could not read this version "
                              "before the rewrite, so there is nothing to compare")
            elif now.get("readable"):
                e.update(rows_other_spark=now["rows"], hash_other_spark=now["hash"],
                         subject_rows_spark=now["subject_rows"])
                same = (now["rows"], now["hash"]) == (b.get("rows"), b.get("hash"))
                e["same_other_rows_spark"] = same
                e["spark"] = "checked"
                if not same:
                    bad.append(f"version {v}: Spark reads other rows than deltalake read "
                               "before the rewrite")
                if now["subject_rows"]:
                    bad.append(f"version {v}: Spark still reads {now['subject_rows']} subject "
                               "rows")
            elif earlier.get(v, {}).get("readable"):
                e["spark"] = f"Spark no longer reads this version ({now.get('why')})"
                bad.append(f"version {v} no longer reads with Spark")
            else:
                e["spark"] = f"not verified with Spark: {now.get('why')}"
            out[v] = e
        if bad:
            from urllib.parse import unquote

            why = "rewrite-history proof with Spark failed (" + "; ".join(bad[:3]) + "); "
            if all((root / unquote(o)).is_file() for o in journal.get("mapping") or {}):
                rewrite._restore(root, rewrite._Ctx(root, journal, {column}, values))
                raise ErasureFailed(why + "the original log files were restored and the new "
                                    "files deleted")
            # a run resumed after old files were deleted: the original log would name files
            # that are gone, so it is not restored; the journal stays and the step fails
            raise ErasureFailed(why + "old files were already deleted, so the rewritten log "
                                "stays; the journal is kept")
        return out

    def _rewrite_history(self, namespace: str, name: str, column: str,
                         values: Sequence[Any], planned: dict[str, dict] | None):
        """Delta's history rewrite, with each version's evidence saying which readers checked
        it: `readers: {"deltalake": "checked", "spark": "checked" | "not verified with Spark:
        <why>"}` and Spark's count and hash of everyone else's rows."""
        self._spark_proof = self._spark_before = None
        res = super()._rewrite_history(namespace, name, column, values, planned)
        proof = self._spark_proof
        if isinstance(res, RewritePurgeResult):
            unverified = 0
            for v, e in res.versions.items():
                spark = proof.get(v) if proof is not None else None
                if spark is None:
                    spark = {"spark": ("not verified with Spark: the Spark check did not run "
                                       "for this version" if proof is not None else
                                       "not verified with Spark: the rewrite did not reach "
                                       "the Spark check in this run")}
                    if e.get("written_since"):
                        spark = {"spark": "not compared: committed during the rewrite"}
                e.update({k: x for k, x in spark.items() if k != "spark"})
                e["readers"] = {"deltalake": "checked" if e.get("readable") else "unreadable",
                                "spark": spark["spark"]}
                if str(spark["spark"]).startswith("not verified"):
                    unverified += 1
            if unverified:
                res.notes.append(f"{unverified} version(s) not verified with Spark (each "
                                 "version's readers.spark says why); deltalake checked them")
        return res


def _spark_why(exc: Exception) -> str:
    """Why Spark could not read a version, without echoing its message (which may hold
    data): the exception's class, Spark's error class, and a known cause when recognised."""
    cls = getattr(exc, "getErrorClass", lambda: None)()
    why = f"{type(exc).__name__}{', ' + cls if cls else ''}"
    if "Missing commit file" in str(exc):
        why += ("; the server cannot load a version older than the checkpoint "
                "_last_checkpoint names (Sail 0.7.2 replays such a version from version 0 "
                "and stops at the first commit: 'Missing commit file')")
    return why


def _build(config: Config, registry: ConnectorRegistry) -> SparkDeltaConnector | None:
    settings: SparkSettings | None = config.section("spark")
    if settings is None:
        return None
    from . import extras

    extras.require(extras.SPARK)
    return SparkDeltaConnector(settings, config.section("delta"), storage=config.storage)


PLUGIN = ConnectorPlugin("spark", SparkDeltaConnector.presentation, _build, section="spark",
                         model=SparkSettings, default=None, order=5)
