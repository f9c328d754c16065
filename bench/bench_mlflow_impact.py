"""Benchmark: MLflow impact analysis on a tracking store with 10,000 runs and 1,000 model versions.

Builds a tracking store (SQLite in a temp dir; with BENCH_PG=1 also PostgreSQL at
127.0.0.1:5432, trust auth, a fresh database made and dropped with createdb/dropdb) with:
  - 10 experiments, 10,000 runs (1,000 each), every run logging 1 or 2 dataset inputs
    (context "training") whose sources are DeltaDatasetSource JSON: most name one of 200
    unrelated table paths, 5% name the affected table at a version 1..20;
  - 50 registered models with 1,000 versions in all, each linked to a distinct run
    (source "runs:/<run_id>/model", run_id set; no model artifacts).

How it is built: the first BENCH_API_RUNS runs (default 200) go through MlflowClient
(create_run, log_inputs, set_terminated) to measure the API's cost per run; the rest are
written in bulk through MLflow's own SQLAlchemy models (SqlRun, SqlTag, SqlDataset, SqlInput,
SqlInputTag) with the values the API writes, in one transaction per experiment. The API costs
about 50 ms per run on SQLite (three transactions, each committed), so 10,000 runs would take
minutes; the bench checks that a bulk run reads back through search_runs exactly like an API
run. BENCH_API_RUNS=10000 builds everything through the API. Model versions are created
through the API (create_registered_model, create_model_version).

Then it times:
  (a) MlflowConnector(MlflowSettings(uri)).index(): the one pass over the store;
  (b) the raw MLflow calls doing the same reads: search_experiments + search_runs (with
      inputs) + search_model_versions, paginated as the connector does;
  (c) derive_targets for one affected Delta table (a stand-in graph whose canonical() is the
      identity and downstream() empty, one ResolvedTarget), with a cold connector (includes
      the index) and a warm one.
The affected model versions found are checked against the ground truth of the build.
BENCH_RUNS, BENCH_MODEL_VERSIONS change the sizes. Prints the figures; asserts nothing about
speed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

N_RUNS = int(os.environ.get("BENCH_RUNS", "10000"))
N_VERSIONS = int(os.environ.get("BENCH_MODEL_VERSIONS", "1000"))
N_EXPERIMENTS = 10
N_MODELS = 50
N_UNRELATED = 200
AFFECTED_SHARE = 0.05
API_RUNS = int(os.environ.get("BENCH_API_RUNS", "200"))
PG = os.environ.get("BENCH_PG", "1") != "0"
PG_HOST = "root@127.0.0.1:5432"
CONTEXT_TAG = "mlflow.data.context"

# MLflow's SQL store on SQLAlchemy 2.1, and its INFO lines while it creates the schema
warnings.filterwarnings("ignore", message="The ``noload`` loader strategy is deprecated")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


@dataclass
class Plan:
    """What to write: per run, its experiment and (path, version) inputs; per model version,
    its run. And the ground truth: model versions that trained on the affected table."""
    affected: str
    runs: list[tuple[int, list[tuple[str, int | None]]]]        # (experiment index, inputs)
    versions: list[tuple[str, int]]                             # (model name, run index)


def make_plan(base: Path) -> Plan:
    rng = random.Random(7)
    affected = str(base / "lake" / "tables" / "clean" / "reviews")
    unrelated = [f"/data/warehouse/unrelated/table_{i:03d}" for i in range(N_UNRELATED)]
    runs = []
    for i in range(N_RUNS):
        exp = i % N_EXPERIMENTS
        k = rng.choice((1, 2))
        inputs: list[tuple[str, int | None]] = []
        if rng.random() < AFFECTED_SHARE:
            inputs.append((affected, rng.randint(1, 20)))
        while len(inputs) < k:
            p = rng.choice(unrelated)
            if all(p != q for q, _ in inputs):
                inputs.append((p, rng.choice((None, rng.randint(1, 50)))))
        runs.append((exp, inputs))
    linked = rng.sample(range(N_RUNS), N_VERSIONS)
    versions = [(f"model_{j % N_MODELS:02d}", r) for j, r in enumerate(linked)]
    return Plan(affected, runs, versions)


def source_json(path: str, version: int | None) -> str:
    """What DeltaDatasetSource.to_json() writes (version 0 or None: no key)."""
    return json.dumps({"path": path, **({"delta_table_version": version} if version else {})})


def dataset_entity(path: str, version: int | None):
    from mlflow.entities import Dataset

    src = source_json(path, version)
    return Dataset(name=Path(path).name, digest=hashlib.md5(src.encode()).hexdigest()[:8],
                   source_type="delta_table", source=src,
                   schema='{"mlflow_colspec": [{"type": "long", "name": "id", "required": true}]}',
                   profile='{"num_rows": 1000}')


# ---- building the store -----------------------------------------------------------------
def build(uri: str, base: Path, plan: Plan) -> tuple[list[str], dict[str, float]]:
    """Create the store; return run ids (in plan order) and the build timings."""
    from mlflow import MlflowClient
    from mlflow.entities import DatasetInput, InputTag

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments()                       # creates / migrates the schema
    timings["schema"] = time.perf_counter() - t0
    exp_ids = [client.create_experiment(f"bench_exp_{e}",
                                        artifact_location=(base / "artifacts" / str(e)).as_uri())
               for e in range(N_EXPERIMENTS)]

    run_ids: list[str | None] = [None] * N_RUNS
    n_api = min(API_RUNS, N_RUNS)
    t0 = time.perf_counter()
    for i in range(n_api):
        exp, inputs = plan.runs[i]
        run = client.create_run(exp_ids[exp], run_name=f"train_{i}")
        client.log_inputs(run.info.run_id, datasets=[
            DatasetInput(dataset_entity(p, v), tags=[InputTag(CONTEXT_TAG, "training")])
            for p, v in inputs])
        client.set_terminated(run.info.run_id)
        run_ids[i] = run.info.run_id
    timings["api_runs"] = time.perf_counter() - t0
    timings["api_runs_n"] = n_api

    t0 = time.perf_counter()
    bulk = [i for i in range(n_api, N_RUNS)]
    if bulk:
        bulk_insert(client, exp_ids, plan, bulk, run_ids, base)
    timings["bulk_runs"] = time.perf_counter() - t0
    timings["bulk_runs_n"] = len(bulk)

    t0 = time.perf_counter()
    for m in sorted({m for m, _ in plan.versions}):
        client.create_registered_model(m)
    for m, r in plan.versions:
        client.create_model_version(m, f"runs:/{run_ids[r]}/model", run_id=run_ids[r])
    timings["model_versions"] = time.perf_counter() - t0
    return run_ids, timings   # type: ignore[return-value]


def bulk_insert(client, exp_ids: list[str], plan: Plan, indexes: list[int],
                run_ids: list, base: Path) -> None:
    """Runs, their runName tags, datasets and input edges with MLflow's ORM models, as
    SqlAlchemyStore.create_run / log_inputs / set_terminated write them."""
    import sqlalchemy as sa
    from mlflow.entities import LifecycleStage, RunStatus, SourceType
    from mlflow.store.tracking.dbmodels.models import SqlDataset, SqlInput, SqlInputTag, SqlRun, SqlTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    store = client._tracking_client.store
    assert isinstance(store, SqlAlchemyStore), type(store)
    now = int(time.time() * 1000)
    by_exp: dict[int, list[int]] = {}
    for i in indexes:
        by_exp.setdefault(plan.runs[i][0], []).append(i)
    for exp, idx in by_exp.items():
        exp_id = int(exp_ids[exp])
        art = (base / "artifacts" / str(exp)).as_uri()
        runs, tags, datasets, inputs, input_tags = [], [], {}, [], []
        with store.ManagedSessionMaker(read_only=False) as session:
            # datasets already in this experiment (logged by the API runs), by (name, digest)
            for d in session.query(SqlDataset).filter(SqlDataset.experiment_id == exp_id):
                datasets[(d.name, d.digest)] = d.dataset_uuid
            new_datasets = []
            for i in idx:
                rid = uuid.uuid4().hex
                run_ids[i] = rid
                runs.append(dict(
                    run_uuid=rid, name=f"train_{i}", artifact_uri=f"{art}/{rid}/artifacts",
                    experiment_id=exp_id, source_type=SourceType.to_string(SourceType.UNKNOWN),
                    source_name="", entry_point_name="", user_id="unknown",
                    status=RunStatus.to_string(RunStatus.FINISHED), start_time=now + i,
                    end_time=now + i + 1, deleted_time=None, source_version="",
                    lifecycle_stage=LifecycleStage.ACTIVE))
                tags.append(dict(key=MLFLOW_RUN_NAME, value=f"train_{i}", run_uuid=rid))
                for p, v in plan.runs[i][1]:
                    ds = dataset_entity(p, v)
                    key = (ds.name, ds.digest)
                    if key not in datasets:
                        datasets[key] = uuid.uuid4().hex
                        new_datasets.append(dict(
                            dataset_uuid=datasets[key], experiment_id=exp_id, name=ds.name,
                            digest=ds.digest, dataset_source_type=ds.source_type,
                            dataset_source=ds.source, dataset_schema=ds.schema,
                            dataset_profile=ds.profile))
                    iu = uuid.uuid4().hex
                    inputs.append(dict(input_uuid=iu, source_type="DATASET",
                                       source_id=datasets[key], destination_type="RUN",
                                       destination_id=rid, step=0))
                    input_tags.append(dict(input_uuid=iu, name=CONTEXT_TAG, value="training"))
            for model, rows in ((SqlRun, runs), (SqlTag, tags), (SqlDataset, new_datasets),
                                (SqlInput, inputs), (SqlInputTag, input_tags)):
                for k in range(0, len(rows), 2000):
                    if rows[k:k + 2000]:
                        session.execute(sa.insert(model.__table__), rows[k:k + 2000])


def check_bulk_matches_api(client, run_ids: list[str]) -> str:
    """A bulk-written run must read back like an API-written one."""
    def shape(rid: str) -> dict:
        r = client.get_run(rid)
        return {"status": r.info.status, "lifecycle": r.info.lifecycle_stage,
                "tags": sorted(r.data.tags), "ended": r.info.end_time is not None,
                "artifact_uri": r.info.artifact_uri.endswith(f"/{rid}/artifacts"),
                "inputs": sorted((d.dataset.source_type, "path" in json.loads(d.dataset.source),
                                  tuple((t.key, t.value) for t in d.tags))
                                 for d in r.inputs.dataset_inputs)[:1]}
    api = next((shape(r) for r in run_ids[:API_RUNS] if r), None)
    if api is None:
        return "(all runs written through the API)"
    bulk = shape(run_ids[-1])
    if api != bulk:
        raise SystemExit(f"bulk-written run differs from an API run:\n  api  {api}\n  bulk {bulk}")
    return f"a bulk-written run reads back like an API-written one: {bulk}"


# ---- measuring --------------------------------------------------------------------------
class Graph:
    """Stand-in lineage graph: dataset identities are already canonical, and no lineage
    event names a model as a job's output."""

    @staticmethod
    def canonical(ident):
        return ident

    @staticmethod
    def downstream(ident):
        return []


class DeltaStandIn:
    name = "delta"


def raw_pass(uri: str) -> tuple[int, int, int, list[float]]:
    """The raw MLflow reads the connector's index makes, paginated the same way; returns the
    counts and the seconds spent in search_experiments, search_runs, search_model_versions."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    split = [time.perf_counter()]
    exp_ids, token = [], None
    while True:
        page = c.search_experiments(view_type=ViewType.ALL, max_results=1000, page_token=token)
        exp_ids += [e.experiment_id for e in page]
        token = page.token
        if not token:
            break
    split.append(time.perf_counter())
    n_runs = n_inputs = 0
    for i in range(0, len(exp_ids), 100):
        token = None
        while True:
            runs = c.search_runs(exp_ids[i:i + 100], run_view_type=ViewType.ALL,
                                 max_results=10_000, page_token=token)
            n_runs += len(runs)
            n_inputs += sum(len(r.inputs.dataset_inputs) for r in runs if r.inputs)
            token = runs.token
            if not token:
                break
    split.append(time.perf_counter())
    n_mv, token = 0, None
    while True:
        page = c.search_model_versions(max_results=10_000, page_token=token)
        n_mv += len(page)
        token = page.token
        if not token:
            break
    split.append(time.perf_counter())
    return n_runs, n_inputs, n_mv, [b - a for a, b in zip(split, split[1:])]


def measure(label: str, uri: str, base: Path) -> None:
    from connectors.mlflow import MlflowConnector, MlflowSettings
    from erasure.planning import ResolvedTarget

    plan = make_plan(base)
    print(f"\n{label}: {uri.split('@')[-1]}")
    t0 = time.perf_counter()
    run_ids, tb = build(uri, base, plan)
    total = time.perf_counter() - t0
    per_api = tb["api_runs"] / tb["api_runs_n"] * 1000 if tb["api_runs_n"] else float("nan")
    print(f"  build {total:6.1f} s: schema {tb['schema']:.1f} s; {tb['api_runs_n']:,} runs via the API "
          f"{tb['api_runs']:.1f} s ({per_api:.0f} ms/run: create_run + log_inputs + set_terminated; "
          f"{N_RUNS:,} runs this way: ~{per_api * N_RUNS / 1000:.0f} s); {tb['bulk_runs_n']:,} runs in bulk "
          f"{tb['bulk_runs']:.1f} s; {N_VERSIONS:,} model versions via the API "
          f"{tb['model_versions']:.1f} s ({tb['model_versions'] / max(N_VERSIONS, 1) * 1000:.0f} ms each)")
    from mlflow import MlflowClient
    print("  " + check_bulk_matches_api(MlflowClient(tracking_uri=uri, registry_uri=uri), run_ids))

    expected = sorted({(m, str(1 + sum(1 for mm, _ in plan.versions[:j] if mm == m)))
                       for j, (m, r) in enumerate(plan.versions)
                       if any(p == plan.affected for p, _ in plan.runs[r][1])})

    for attempt in (1, 2):
        t0 = time.perf_counter()
        conn = MlflowConnector(MlflowSettings(uri))
        inputs, by_run = conn.index()
        a = time.perf_counter() - t0
        t0 = time.perf_counter()
        n_runs, n_inputs, n_mv, parts = raw_pass(uri)
        b = time.perf_counter() - t0
        print(f"  pass {attempt}: (a) connector index {a:6.2f} s ({len(inputs):,} training inputs, "
              f"{sum(map(len, by_run.values())):,} model versions)\n"
              f"          (b) raw MLflow calls  {b:6.2f} s ({n_runs:,} runs, {n_inputs:,} inputs, "
              f"{n_mv:,} model versions): search_experiments {parts[0]:.2f} s, search_runs "
              f"{parts[1]:.2f} s, search_model_versions {parts[2]:.2f} s")

    target = ResolvedTarget("file", plan.affected, DeltaStandIn(), "reviewer_id", "int64",
                            "column_lineage", None)
    t0 = time.perf_counter()
    conn = MlflowConnector(MlflowSettings(uri))
    found, _, _ = conn.derive_targets(Graph(), [target], [])
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    found2, _, _ = conn.derive_targets(Graph(), [target], [])
    warm = time.perf_counter() - t0
    got = sorted({tuple(t.name.rsplit("/", 1)) for t in found})
    affected_runs = sum(1 for _, ins in plan.runs if any(p == plan.affected for p, _ in ins))
    print(f"  (c) derive_targets for 1 affected table: {cold:6.2f} s cold (with the index), "
          f"{warm * 1000:7.1f} ms warm (index cached); {len(found):,} targets = "
          f"{len(got):,} model versions ({affected_runs:,} runs read the table)")
    if got != expected or len(found2) != len(found):
        raise SystemExit(f"derive_targets found {len(got)} model versions, expected {len(expected)}")


def main() -> None:
    import mlflow  # noqa: F401  (import cost kept out of the figures)

    base = Path(tempfile.mkdtemp(prefix="bench_mlflow_"))
    print(f"tracking store with {N_EXPERIMENTS} experiments, {N_RUNS:,} runs (1-2 dataset inputs "
          f"each, {AFFECTED_SHARE:.0%} on the affected table), {N_VERSIONS:,} model versions of "
          f"{N_MODELS} models")
    try:
        measure("SQLite", f"sqlite:///{base / 'mlflow.db'}", base / "sqlite")
        if PG:
            db = f"bench_mlflow_{uuid.uuid4().hex[:8]}"
            host, port = "127.0.0.1", "5432"
            made = subprocess.run(["createdb", "-h", host, "-p", port, "-U", "root", db],
                                  capture_output=True, text=True)
            if made.returncode != 0:
                print(f"\nPostgreSQL skipped: createdb failed: {made.stderr.strip()}")
            else:
                try:
                    # SQLAlchemy 2.1 maps postgresql:// to psycopg (3); the venv has psycopg2
                    driver = "postgresql"
                    try:
                        import psycopg  # noqa: F401
                    except ImportError:
                        driver = "postgresql+psycopg2"
                    measure("PostgreSQL", f"{driver}://{PG_HOST}/{db}", base / "pg")
                finally:
                    subprocess.run(["dropdb", "-h", host, "-p", port, "-U", "root", "--force", db],
                                   capture_output=True, text=True)
        print(f"\npeak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
