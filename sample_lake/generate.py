"""Deterministic sample-lake generator.

Builds a small (or, with ``--rows 5000000``, benchmark-sized) Delta Lake that
mimics a sentiment pipeline over user reviews containing personal data::

    tables/raw/reviews              user_id, email, phone, review_text, rating, created_at
    tables/clean/reviews            reviewer_id, review_text, rating, sentiment, created_at
    tables/features/user_features   entity_id, n_reviews, avg_rating, last_review_at, event_timestamp
    tables/agg/daily_ratings        day, n_reviews, n_reviewers, avg_rating
    tables/exports/user_activity.parquet
                                    entity_id, n_positive, n_negative, event_timestamp
                                    (one plain Parquet file, not a Delta table)
    events/lineage.jsonl            OpenLineage START/COMPLETE events with column lineage
    feature_repo/                   Feast repo (SQLite online store), materialized
                                    (skipped with --no-feast / feast=False)
    mlflow.db, mlartifacts/         MLflow tracking store and registry: "review_sentiment"
                                    (trained on clean/reviews + user_features, alias champion)
                                    and "daily_rating_forecast" (trained on agg/daily_ratings)
                                    (skipped with --no-mlflow / mlflow=False)
    erasure.toml                    engine configuration (paths relative to the file)

Everything in the table *contents* and in the event payloads is a pure
function of ``(rows, seed)`` and the resolved output directory (dataset names
are absolute paths). Delta log metadata (commit timestamps, file names) is
whatever delta-rs writes.

All columns are built vectorised with numpy / pyarrow compute, so 5M rows take
seconds rather than minutes.

Usage::

    python -m sample_lake.generate --out DIR [--rows N] [--seed S] [--force] [--no-feast]
                                   [--no-mlflow] [--json]

The CLI skips the Feast repo and the MLflow store above ``CLI_FEAST_MAX_ROWS`` rows
(as if ``--no-feast --no-mlflow``).

Feast is imported only when the Feast repo is built (``sample_lake.feast_repo``), mlflow
and scikit-learn only when the MLflow store is built (``sample_lake.mlflow_models``), so
importing this module stays cheap.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake

__all__ = ["generate", "main", "PRODUCER", "JOB_NAMESPACE", "DATASET_NAMESPACE", "TABLES", "EXPORTS",
           "FEAST_REPO_DIR", "MLFLOW_URI"]

PRODUCER = "https://github.com/erasure-engine/sample_lake"
JOB_NAMESPACE = "sentiment-pipeline"
DATASET_NAMESPACE = "file"

#: logical table name -> folder relative to ``out_dir``
TABLES: dict[str, str] = {
    "raw/reviews": "tables/raw/reviews",
    "clean/reviews": "tables/clean/reviews",
    "features/user_features": "tables/features/user_features",
    "agg/daily_ratings": "tables/agg/daily_ratings",
}

#: logical name -> plain Parquet file (not Delta) relative to ``out_dir``
EXPORTS: dict[str, str] = {
    "exports/user_activity": "tables/exports/user_activity.parquet",
}

#: Feast repo folder relative to ``out_dir`` (also the ``[[feast]] repo`` value in erasure.toml)
FEAST_REPO_DIR = "feature_repo"

#: ``[mlflow] tracking_uri`` in erasure.toml (relative to the file; the engine resolves it)
MLFLOW_URI = "sqlite:///mlflow.db"

#: The CLI builds the Feast repo (and the MLflow store) by default only up to this many rows. Feast's
#: materialize writes the SQLite online store one row at a time (~40 s per
#: million reviews; 5M rows: ~320 s and 3.6 GB RSS), which would swamp the
#: benchmark (``--rows 5000000 --json``). ``generate(..., feast=True)`` has no limit.
#: The MLflow store is skipped above the same limit, so the benchmark command is unchanged.
CLI_FEAST_MAX_ROWS = 200_000

#: user ids guaranteed to have at least ``_MIN_REVIEWS_SMALL_IDS`` reviews each
_SMALL_IDS = np.arange(1, 11, dtype=np.int64)
_MIN_REVIEWS_SMALL_IDS = 2
MIN_ROWS = len(_SMALL_IDS) * _MIN_REVIEWS_SMALL_IDS

_EPOCH_START = datetime(2026, 1, 1, tzinfo=timezone.utc)
_SPAN_DAYS = 300  # reviews fall in 2026-01-01 .. 2026-10-27, before the pipeline runs
_RUN_START = datetime(2026, 11, 1, 2, 0, 0, tzinfo=timezone.utc)
_US_PER_DAY = 86_400_000_000

_RATING_P = np.array([0.08, 0.10, 0.17, 0.30, 0.35])

_OPENERS = ["Ordered the", "Bought the", "Tried the", "Received the", "Picked up the", "Was gifted the"]
_PRODUCTS = [
    "blue kettle", "desk lamp", "running shoes", "coffee grinder", "rain jacket",
    "wireless earbuds", "yoga mat", "travel mug", "board game", "bike light",
]
# index (rating - 1) -> phrases; every rating has the same number of phrases
_PHRASES = [
    ["It was terrible and broke after a week.", "Awful quality, very disappointed.",
     "Worst purchase this year, a total waste."],
    ["Poor finish and disappointing overall.", "Not great, the quality is bad.",
     "Mediocre at best, a bit of a letdown."],
    ["It is okay, nothing special.", "Average product, does the job.",
     "Fine for the price, some flaws."],
    ["Good value and works well.", "Really nice, I am happy with it.",
     "Solid build, would recommend."],
    ["Excellent! Absolutely love it.", "Fantastic quality, highly recommend.",
     "Perfect, exceeded my expectations."],
]
_PHRASES_PER_RATING = len(_PHRASES[0])

_TS = pa.timestamp("us", tz="UTC")

RAW_SCHEMA = pa.schema([
    pa.field("user_id", pa.int64(), nullable=False),
    pa.field("email", pa.string(), nullable=False),
    pa.field("phone", pa.string(), nullable=False),
    pa.field("review_text", pa.string(), nullable=False),
    pa.field("rating", pa.int32(), nullable=False),
    pa.field("created_at", _TS, nullable=False),
])
CLEAN_SCHEMA = pa.schema([
    pa.field("reviewer_id", pa.int64(), nullable=False),
    pa.field("review_text", pa.string(), nullable=False),
    pa.field("rating", pa.int32(), nullable=False),
    pa.field("sentiment", pa.string(), nullable=False),
    pa.field("created_at", _TS, nullable=False),
])
FEATURES_SCHEMA = pa.schema([
    pa.field("entity_id", pa.int64(), nullable=False),
    pa.field("n_reviews", pa.int64(), nullable=False),
    pa.field("avg_rating", pa.float64(), nullable=False),
    pa.field("last_review_at", _TS, nullable=False),
    pa.field("event_timestamp", _TS, nullable=False),
])
ACTIVITY_SCHEMA = pa.schema([
    pa.field("entity_id", pa.int64(), nullable=False),
    pa.field("n_positive", pa.int64(), nullable=False),
    pa.field("n_negative", pa.int64(), nullable=False),
    pa.field("event_timestamp", _TS, nullable=False),
])
DAILY_SCHEMA = pa.schema([
    pa.field("day", pa.date32(), nullable=False),
    pa.field("n_reviews", pa.int64(), nullable=False),
    pa.field("n_reviewers", pa.int64(), nullable=False),
    pa.field("avg_rating", pa.float64(), nullable=False),
])

CONFIG_TOML = """\
# Generated by sample_lake.generate; paths are relative to this file.
[ledger]
path = ".erasure/ledger.db"

[keys]
path = ".erasure/keys/subject.key"

[lineage]
events = ["events/*.jsonl"]
store = ".erasure/lineage.db"

[[roots]]
namespace = "file"
name = "tables/raw/reviews"
column = "user_id"

[delta]
residue = "purge"
"""

FEAST_CONFIG_TOML = f"""
[[feast]]
repo = "{FEAST_REPO_DIR}"
"""

#: the CRM lookup table (``crm=True``): e-mail addresses to user ids, one row per user
CRM_TABLE = "tables/crm/customers"

CRM_CONFIG_TOML = f"""
# Requests may name a person by e-mail: the CRM maps addresses to user ids (issue 11).
[[identities]]
name = "email"
normalize = "lower"
pattern = '^[^@\\s]+@[^@\\s]+$'

[[roots]]
namespace = "file"
name = "{CRM_TABLE}"
column = "email"
identity = "email"

[[enrich]]
namespace = "file"
name = "{CRM_TABLE}"
from_column = "email"
to_column = "user_id"
"""


def crm_email(user_id: int) -> str:
    """How the CRM spells a user's address: every seventh user (42 among them) in mixed case,
    as people type them; the reviews hold the lowercase spelling."""
    return f"User{user_id}@Example.COM" if user_id % 7 == 0 else f"user{user_id}@example.com"


def _write_crm(path: Path, n_users: int) -> None:
    ids = list(range(1, n_users + 1))
    write_deltalake(str(path), pa.table({
        "email": [crm_email(i) for i in ids], "user_id": pa.array(ids, pa.int64()),
        "segment": [("gold", "silver", "bronze")[i % 3] for i in ids]}),
        name="crm_customers", description="CRM customers: e-mail address to user id")


MLFLOW_CONFIG_TOML = f"""
[mlflow]
tracking_uri = "{MLFLOW_URI}"
"""


# --------------------------------------------------------------------------- helpers


def _rows_per_file(n: int) -> int:
    return max(-(-n // 8), 1000)  # ceil(n / 8), so at most ~8 files per table


def _file_bounds(keys: np.ndarray, target_rows: int) -> list[tuple[int, int]]:
    """Split sorted ``keys`` into ~``len(keys) / target_rows`` slices with disjoint key ranges.

    Cuts are placed evenly and then snapped back to the start of the key run
    they fall in, so no key value spans two files (per-file min/max statistics
    never overlap and a reader can skip files by key).
    """
    n = len(keys)
    k = max(1, -(-n // max(target_rows, 1)))  # ceil
    cuts = {0, n}
    for i in range(1, k):
        cut = int(np.searchsorted(keys, keys[(i * n) // k], side="left"))
        cuts.add(cut)
    edges = sorted(cuts)
    return [(lo, hi) for lo, hi in zip(edges, edges[1:])] or [(0, 0)]


def _write_delta(path: Path, table: pa.Table, bounds: list[tuple[int, int]], *, name: str,
                 description: str) -> None:
    """Write ``table`` as one data file per slice (first slice creates the table, the rest append)."""
    for i, (lo, hi) in enumerate(bounds):
        write_deltalake(
            str(path),
            table.slice(lo, hi - lo),
            mode="error" if i == 0 else "append",
            name=name if i == 0 else None,
            description=description if i == 0 else None,
            target_file_size=1 << 40,  # never split a slice: one slice == one file
        )


def _take_strings(choices: list[str], idx: np.ndarray) -> pa.Array:
    return pc.take(pa.array(choices, pa.string()), pa.array(idx))


def _join(*parts: Any) -> pa.Array:
    """Element-wise string concatenation of arrays / str scalars (no per-row Python)."""
    return pc.binary_join_element_wise(*parts, "")


def _to_ts(us: np.ndarray) -> pa.Array:
    return pa.array(us.astype(np.int64, copy=False), pa.int64()).cast(_TS)


def _prepare_out_dir(out_dir: str | Path, force: bool) -> Path:
    out = Path(out_dir).expanduser().resolve()
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out} exists and is not a directory")
        if any(out.iterdir()):
            if not force:
                raise FileExistsError(
                    f"{out} exists and is not empty; use --force (force=True) to delete it first"
                )
            if out == Path(out.anchor) or out == Path.home().resolve() or out == Path.cwd().resolve():
                raise ValueError(f"refusing to delete {out} with --force")
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


# --------------------------------------------------------------------------- data


def _build_data(rows: int, seed: int) -> tuple[dict[str, pa.Table], dict[str, list[tuple[int, int]]], int]:
    rng = np.random.default_rng(seed)
    n_users = max(rows // 5, 10)

    # --- random draws (fixed order => deterministic for a given seed) ---
    # Every column is an independent i.i.d. draw, so instead of drawing whole rows
    # and lexsorting them we draw user ids and (globally sorted) timestamps, stable-
    # sort by user (=> each user's reviews are in time order) and draw the remaining
    # columns directly in the final row order. Same distribution, far less sorting.
    user_id = rng.integers(1, n_users + 1, size=rows, dtype=np.int64)
    forced = np.repeat(_SMALL_IDS, _MIN_REVIEWS_SMALL_IDS)
    user_id[: len(forced)] = forced
    created_us = np.sort(
        int(_EPOCH_START.timestamp()) * 1_000_000
        + rng.integers(0, _SPAN_DAYS * _US_PER_DAY, size=rows, dtype=np.int64)
    )
    order = np.argsort(user_id, kind="stable")
    user_id, created_us = user_id[order], created_us[order]
    del order
    rating = (rng.choice(5, size=rows, p=_RATING_P) + 1).astype(np.int32)
    opener_i = rng.integers(0, len(_OPENERS), size=rows)
    product_i = rng.integers(0, len(_PRODUCTS), size=rows)
    phrase_i = (rating.astype(np.int64) - 1) * _PHRASES_PER_RATING + rng.integers(
        0, _PHRASES_PER_RATING, size=rows
    )

    # --- string columns, vectorised ---
    uid_arr = pa.array(user_id, pa.int64())
    uid_str = pc.cast(uid_arr, pa.string())
    email = _join("user", uid_str, "@example.com")
    width = max(5, len(str(n_users)))
    phone = _join("+44 7700 9", pc.utf8_lpad(uid_str, width=width, padding="0"))
    review_text = _join(
        _take_strings(_OPENERS, opener_i), " ",
        _take_strings(_PRODUCTS, product_i), ". ",
        _take_strings([p for ps in _PHRASES for p in ps], phrase_i),
    )
    del uid_str, opener_i, product_i, phrase_i

    rating_arr = pa.array(rating, pa.int32())
    created_arr = _to_ts(created_us)

    raw = pa.Table.from_arrays([uid_arr, email, phone, review_text, rating_arr, created_arr],
                               schema=RAW_SCHEMA)

    # --- clean: rename, (no-op) redaction, sentiment ---
    sentiment_i = np.where(rating >= 4, 0, np.where(rating <= 2, 1, 2))
    sentiment = _take_strings(["positive", "negative", "neutral"], sentiment_i)
    clean = pa.Table.from_arrays([uid_arr, review_text, rating_arr, sentiment, created_arr],
                                 schema=CLEAN_SCHEMA)

    # --- per-user features (data is sorted by user, then time) ---
    starts = np.concatenate(([0], np.flatnonzero(np.diff(user_id)) + 1))
    ends = np.concatenate((starts[1:], [rows]))
    counts = (ends - starts).astype(np.int64)
    rating_sum = np.add.reduceat(rating.astype(np.int64), starts)
    last_us = created_us[ends - 1]
    last_arr = _to_ts(last_us)
    entity_arr = pa.array(user_id[starts], pa.int64())
    features = pa.Table.from_arrays(
        [entity_arr, pa.array(counts, pa.int64()),
         pa.array(rating_sum / counts, pa.float64()), last_arr, last_arr],
        schema=FEATURES_SCHEMA,
    )
    # --- per-user sentiment counts (plain Parquet export); sentiment_i 0 = positive, 1 = negative ---
    activity = pa.Table.from_arrays(
        [entity_arr,
         pa.array(np.add.reduceat((sentiment_i == 0).astype(np.int64), starts), pa.int64()),
         pa.array(np.add.reduceat((sentiment_i == 1).astype(np.int64), starts), pa.int64()),
         last_arr],
        schema=ACTIVITY_SCHEMA,
    )
    del sentiment_i

    # --- daily aggregate (no subject key); integer sums => exact, deterministic ---
    day = created_us // _US_PER_DAY  # days since 1970-01-01
    day0 = int(day.min())
    day_i = day - day0
    n_days = int(day_i.max()) + 1
    n_rev = np.bincount(day_i, minlength=n_days)
    r_sum = np.bincount(day_i, weights=rating, minlength=n_days)
    pairs = np.sort(day_i * (n_users + 1) + user_id)  # (day, user) keys; count distinct per day
    first = np.empty(rows, dtype=bool)
    first[0] = True
    np.not_equal(pairs[1:], pairs[:-1], out=first[1:])
    n_reviewers = np.bincount(pairs[first] // (n_users + 1), minlength=n_days)
    del pairs, first
    present = np.flatnonzero(n_rev)
    daily = pa.Table.from_arrays(
        [pa.array((present + day0).astype(np.int32), pa.int32()).cast(pa.date32()),
         pa.array(n_rev[present].astype(np.int64)), pa.array(n_reviewers[present].astype(np.int64)),
         pa.array(r_sum[present] / n_rev[present], pa.float64())],
        schema=DAILY_SCHEMA,
    )

    review_bounds = _file_bounds(user_id, _rows_per_file(rows))
    feature_keys = user_id[starts]
    bounds = {
        "raw/reviews": review_bounds,
        "clean/reviews": review_bounds,
        "features/user_features": _file_bounds(feature_keys, _rows_per_file(len(feature_keys))),
        "agg/daily_ratings": [(0, daily.num_rows)],
    }
    tables = {"raw/reviews": raw, "clean/reviews": clean,
              "features/user_features": features, "agg/daily_ratings": daily,
              "exports/user_activity": activity}
    return tables, bounds, n_users


_DESCRIPTIONS = {
    "raw/reviews": "Raw user reviews with PII (email, phone)",
    "clean/reviews": "Cleaned reviews keyed by reviewer_id with sentiment label",
    "features/user_features": "Per-user review features (Feast-style entity_id/event_timestamp)",
    "agg/daily_ratings": "Daily rating aggregate without a subject key",
}


def _write_parquet(path: Path, table: pa.Table) -> None:
    """One plain Parquet file (no Delta log, no partitioning)."""
    import pyarrow.parquet as pq

    pq.write_table(table, path)


# --------------------------------------------------------------------------- lineage


def _lineage_events(paths: dict[str, Path], schemas: dict[str, pa.Schema], stats: dict[str, dict[str, int]],
                    rows: int, seed: int) -> list[str]:
    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import (
        column_lineage_dataset as cl,
        documentation_job,
        job_type_job,
        output_statistics_output_dataset as out_stats,
        schema_dataset,
    )
    from openlineage.client.serde import Serde

    def schema_facet(table: str) -> schema_dataset.SchemaDatasetFacet:
        return schema_dataset.SchemaDatasetFacet(
            fields=[
                schema_dataset.SchemaDatasetFacetFields(name=f.name, type=str(f.type), ordinal_position=i + 1)
                for i, f in enumerate(schemas[table])
            ],
            producer=PRODUCER,
        )

    def tr(type_: str, subtype: str, description: str | None = None, masking: bool = False) -> cl.Transformation:
        return cl.Transformation(type=type_, subtype=subtype, description=description, masking=masking)

    def src(table: str, column: str, *transformations: cl.Transformation) -> cl.InputField:
        return cl.InputField(namespace=DATASET_NAMESPACE, name=str(paths[table]), field=column,
                             transformations=list(transformations))

    identity = tr("DIRECT", "IDENTITY")

    def aggregation(desc: str) -> cl.Transformation:
        return tr("DIRECT", "AGGREGATION", desc)

    raw, clean = "raw/reviews", "clean/reviews"
    group_by_reviewer = tr("INDIRECT", "GROUP_BY", "GROUP BY reviewer_id")
    jobs: list[tuple[str, str, str, dict[str, list[cl.InputField]], list[cl.InputField], str]] = [
        ("clean_reviews", raw, clean, {
            "reviewer_id": [src(raw, "user_id", identity)],
            "review_text": [src(raw, "review_text",
                                tr("DIRECT", "TRANSFORMATION", "redact emails and phone numbers", True))],
            "rating": [src(raw, "rating", identity)],
            "sentiment": [src(raw, "rating",
                              tr("DIRECT", "TRANSFORMATION",
                                 "CASE WHEN rating >= 4 THEN 'positive' WHEN rating <= 2 THEN 'negative' "
                                 "ELSE 'neutral' END"))],
            "created_at": [src(raw, "created_at", identity)],
        }, [], "Rename user_id to reviewer_id, drop contact PII, redact text, label sentiment"),
        ("user_features", clean, "features/user_features", {
            "entity_id": [src(clean, "reviewer_id", identity, group_by_reviewer)],
            "n_reviews": [src(clean, "review_text", aggregation("COUNT(review_text)"))],
            "avg_rating": [src(clean, "rating", aggregation("AVG(rating)"))],
            "last_review_at": [src(clean, "created_at", aggregation("MAX(created_at)"))],
            "event_timestamp": [src(clean, "created_at", aggregation("MAX(created_at)"))],
        }, [src(clean, "reviewer_id", group_by_reviewer)], "Per-reviewer aggregates for the feature store"),
        ("daily_ratings", clean, "agg/daily_ratings", {
            "day": [src(clean, "created_at", tr("DIRECT", "TRANSFORMATION", "CAST(created_at AS DATE)"))],
            "n_reviews": [src(clean, "review_text", aggregation("COUNT(review_text)"))],
            "n_reviewers": [src(clean, "reviewer_id", aggregation("COUNT(DISTINCT reviewer_id)"))],
            "avg_rating": [src(clean, "rating", aggregation("AVG(rating)"))],
        }, [src(clean, "created_at", tr("INDIRECT", "GROUP_BY", "GROUP BY CAST(created_at AS DATE)"))],
            "Daily rating aggregate"),
        ("user_activity_export", clean, "exports/user_activity", {
            "entity_id": [src(clean, "reviewer_id", identity)],
            "n_positive": [src(clean, "sentiment", aggregation("COUNT_IF(sentiment = 'positive')"))],
            "n_negative": [src(clean, "sentiment", aggregation("COUNT_IF(sentiment = 'negative')"))],
            "event_timestamp": [src(clean, "created_at", aggregation("MAX(created_at)"))],
        }, [src(clean, "reviewer_id", group_by_reviewer)],
            "Per-reviewer sentiment counts exported as one Parquet file (Feast source)"),
    ]

    lines: list[str] = []
    for j, (job_name, in_table, out_table, fields, dataset_deps, desc) in enumerate(jobs):
        run_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{PRODUCER}/runs/seed={seed}/rows={rows}/{job_name}"))
        job = Job(
            namespace=JOB_NAMESPACE,
            name=job_name,
            facets={
                "jobType": job_type_job.JobTypeJobFacet(
                    processingType="BATCH", integration="PYTHON", jobType="JOB", producer=PRODUCER),
                "documentation": documentation_job.DocumentationJobFacet(description=desc, producer=PRODUCER),
            },
        )
        column_lineage = cl.ColumnLineageDatasetFacet(
            fields={name: cl.Fields(inputFields=inputs) for name, inputs in fields.items()},
            dataset=dataset_deps,
            producer=PRODUCER,
        )
        start = _RUN_START + timedelta(minutes=10 * j)
        for state, when in ((RunState.START, start), (RunState.COMPLETE, start + timedelta(minutes=5))):
            output_facets = {}
            if state == RunState.COMPLETE:
                output_facets["outputStatistics"] = out_stats.OutputStatisticsOutputDatasetFacet(
                    rowCount=stats[out_table]["rows"], size=stats[out_table]["bytes"],
                    fileCount=stats[out_table]["files"], producer=PRODUCER,
                )
            event = RunEvent(
                eventType=state,
                eventTime=when.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                run=Run(runId=run_id),
                job=job,
                producer=PRODUCER,
                inputs=[InputDataset(namespace=DATASET_NAMESPACE, name=str(paths[in_table]),
                                     facets={"schema": schema_facet(in_table)})],
                outputs=[OutputDataset(namespace=DATASET_NAMESPACE, name=str(paths[out_table]),
                                       facets={"schema": schema_facet(out_table),
                                               "columnLineage": column_lineage},
                                       outputFacets=output_facets)],
            )
            lines.append(Serde.to_json(event))
    return lines


# --------------------------------------------------------------------------- public API


def generate(out_dir: str | Path, rows: int = 20000, seed: int = 7, *, force: bool = False,
             feast: bool = True, mlflow: bool = True, crm: bool = False) -> dict:
    """Generate the sample lake into ``out_dir`` and return a summary.

    ``out_dir`` is created if missing; if it exists and is non-empty a
    ``FileExistsError`` is raised unless ``force=True`` (which deletes it first).
    ``rows`` must be at least 20 so user ids 1..10 can each get two reviews.

    The Parquet export ``tables/exports/user_activity.parquet`` and its lineage
    events are always written. With ``feast=True`` (the default) the Feast repo
    ``feature_repo/`` is also built, applied and materialized into its SQLite
    online store, and erasure.toml gets a ``[[feast]]`` section; this imports
    feast (~10 s). Pass ``feast=False`` for a fast lake without Feast.

    With ``mlflow=True`` (the default) an MLflow SQLite tracking store and registry
    ``mlflow.db`` (artifacts in ``mlartifacts/``) is built with two registered models
    (``sample_lake.mlflow_models``), and erasure.toml gets an ``[mlflow]`` section; this
    imports mlflow and scikit-learn and takes ~20 s. Pass ``mlflow=False`` to skip it.

    Returns ``{"out_dir", "tables" (name -> abs path, Delta folders plus the
    "exports/user_activity" Parquet file), "events", "config", "feast_repo"
    (abs path or None), "rows" (Delta table name -> row count), "users",
    "files" (Delta table name -> data file count), "mlflow_uri" (absolute
    ``sqlite:///`` uri of mlflow.db, or None)}``.
    """
    rows = int(rows)
    if rows < MIN_ROWS:
        raise ValueError(f"rows must be >= {MIN_ROWS} (user ids 1..10 need 2 reviews each), got {rows}")
    out = _prepare_out_dir(out_dir, force)

    tables, bounds, n_users = _build_data(rows, int(seed))

    paths = {name: out / rel for name, rel in {**TABLES, **EXPORTS}.items()}
    stats: dict[str, dict[str, int]] = {}
    for name in TABLES:
        table = tables[name]
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        _write_delta(paths[name], table, bounds[name], name=name.replace("/", "_"),
                     description=_DESCRIPTIONS[name])
        actions = pa.table(DeltaTable(str(paths[name])).get_add_actions(flatten=True))
        stats[name] = {"rows": table.num_rows, "files": actions.num_rows,
                       "bytes": int(pc.sum(actions["size_bytes"]).as_py() or 0)}
    for name in EXPORTS:
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        _write_parquet(paths[name], tables[name])
        stats[name] = {"rows": tables[name].num_rows, "files": 1, "bytes": paths[name].stat().st_size}
    schemas = {name: t.schema for name, t in tables.items()}
    del tables

    events_path = out / "events" / "lineage.jsonl"
    events_path.parent.mkdir(parents=True, exist_ok=True)
    events_path.write_text("\n".join(_lineage_events(paths, schemas, stats, rows, int(seed))) + "\n",
                           encoding="utf-8")

    feast_repo: Path | None = None
    if feast:
        from sample_lake.feast_repo import build_feast_repo

        feast_repo = build_feast_repo(out, {name: str(paths[name]) for name in TABLES},
                                      paths["exports/user_activity"], materialize=True)

    mlflow_uri: str | None = None
    if mlflow:
        from sample_lake.mlflow_models import build_mlflow_store

        mlflow_uri = build_mlflow_store(out, {name: str(paths[name]) for name in TABLES})

    if crm:     # a lookup table: requests by e-mail (`crm_email` spells the addresses)
        (out / CRM_TABLE).parent.mkdir(parents=True, exist_ok=True)
        _write_crm(out / CRM_TABLE, n_users)
        paths["crm/customers"] = out / CRM_TABLE

    config_path = out / "erasure.toml"
    config_path.write_text(CONFIG_TOML + (FEAST_CONFIG_TOML if feast else "")
                           + (MLFLOW_CONFIG_TOML if mlflow else "")
                           + (CRM_CONFIG_TOML if crm else ""), encoding="utf-8")

    return {
        "out_dir": str(out),
        "tables": {name: str(p) for name, p in paths.items()},
        "events": str(events_path),
        "config": str(config_path),
        "feast_repo": str(feast_repo) if feast_repo is not None else None,
        "rows": {name: stats[name]["rows"] for name in TABLES},
        "users": n_users,
        "files": {name: stats[name]["files"] for name in TABLES},
        "mlflow_uri": mlflow_uri,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sample_lake.generate",
        description="Generate the deterministic sample Delta lake (tables, Parquet export, OpenLineage events, "
                    "Feast repo, MLflow store, erasure.toml).",
    )
    parser.add_argument("--out", required=True, help="output directory (created if missing)")
    parser.add_argument("--rows", type=int, default=20000, help="number of raw reviews (default 20000)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--force", action="store_true", help="delete --out first if it exists and is non-empty")
    parser.add_argument("--no-feast", dest="feast", action="store_false", default=None,
                        help="skip the Feast repo (no feast import, no materialize, no [[feast]] in "
                             f"erasure.toml); implied when --rows > {CLI_FEAST_MAX_ROWS:,}")
    parser.add_argument("--no-mlflow", dest="mlflow", action="store_false", default=None,
                        help="skip the MLflow store (no mlflow import, no model training, no [mlflow] "
                             f"in erasure.toml); implied when --rows > {CLI_FEAST_MAX_ROWS:,}")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)

    feast = args.feast
    if feast is None:
        feast = args.rows <= CLI_FEAST_MAX_ROWS
        if not feast:
            print(f"note: --rows > {CLI_FEAST_MAX_ROWS:,}: Feast repo skipped (materializing it takes "
                  "minutes at this size); build it from Python with generate(..., feast=True)",
                  file=sys.stderr)
    mlflow = args.mlflow
    if mlflow is None:
        mlflow = args.rows <= CLI_FEAST_MAX_ROWS
        if not mlflow:
            print(f"note: --rows > {CLI_FEAST_MAX_ROWS:,}: MLflow store skipped (it would only add "
                  "import and training time to the benchmark); build it from Python with "
                  "generate(..., mlflow=True)", file=sys.stderr)

    t0 = time.perf_counter()
    try:
        summary = generate(args.out, rows=args.rows, seed=args.seed, force=args.force, feast=feast,
                           mlflow=mlflow)
    except (FileExistsError, ValueError) as exc:
        parser.error(str(exc))  # exits with status 2
    elapsed = time.perf_counter() - t0

    if args.json:
        print(json.dumps({**summary, "seconds": round(elapsed, 3)}, indent=2))
        return 0
    print(f"sample lake written to {summary['out_dir']} in {elapsed:.1f}s "
          f"(rows={args.rows}, seed={args.seed}, users={summary['users']})")
    for name, path in summary["tables"].items():
        if name in summary["rows"]:
            print(f"  {name:<24} {summary['rows'][name]:>10,} rows  {summary['files'][name]:>3} files  {path}")
        else:
            import pyarrow.parquet as pq

            n = pq.ParquetFile(path).metadata.num_rows
            print(f"  {name:<24} {n:>10,} rows    1 file   {path} (plain Parquet)")
    print(f"  events: {summary['events']}")
    print(f"  feast:  {summary['feast_repo'] or '(skipped)'}")
    print(f"  mlflow: {summary['mlflow_uri'] or '(skipped)'}")
    print(f"  config: {summary['config']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
