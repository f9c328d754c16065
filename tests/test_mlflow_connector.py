"""Models that learned from a subject's data: the MLflow connector finds the registered model
versions whose training run logged a dataset holding the subject, and flags them for
retraining (nothing is deleted from MLflow).

Every test uses a real tracking store (SQLite file, or a fresh PostgreSQL database), real
runs that log their training inputs with `mlflow.log_input`, real registered model versions,
and the sample lake's Delta tables. The engine is driven through its CLI (`plan`,
`request submit`, `run`, `verify`); outcomes are read back from the MLflow registry.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from uuid import uuid4

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from conftest import Lake, read_table

FLAG = "erasure.retrain_required"
REQ = "erasure.request."
SUPERSEDED = "erasure.superseded_by"
PG_HOST = "root@127.0.0.1:5432"          # trust auth; the test runs as root
SUBJECT, OTHER, ABSENT = "42", "7", "249"     # 249 is in no table of the sample lake


# ---- fixtures ------------------------------------------------------------------------------
@pytest.fixture
def lake(tmp_path, monkeypatch) -> Lake:
    """conftest's sample lake, without the generator's own MLflow store (~20 s per lake):
    each test builds the tracking store it needs."""
    import inspect

    from sample_lake.generate import generate

    monkeypatch.delenv("ERASURE_SUBJECT_KEY", raising=False)
    monkeypatch.delenv("ERASURE_CONFIG", raising=False)
    kw = {"mlflow": False} if "mlflow" in inspect.signature(generate).parameters else {}
    info = generate(tmp_path / "lake", rows=2000, seed=11, feast=False, **kw)
    assert "[mlflow]" not in Path(info["config"]).read_text()
    return Lake(Path(info["out_dir"]), Path(info["config"]), info["tables"], Path(info["events"]))


@pytest.fixture(scope="module")
def mlflow():
    """MLflow imported once (2.5-5 s)."""
    import mlflow
    import mlflow.data
    import mlflow.data.delta_dataset_source
    import mlflow.pyfunc

    return mlflow


def echo_model(mlflow):
    """The cheapest model to log: returns its input."""
    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return model_input

    return Echo()


@pytest.fixture(scope="module")
def empty_store(mlflow, tmp_path_factory) -> Path:
    """An empty, migrated SQLite tracking store, made once: creating the schema takes ~6 s,
    so each test starts from a copy of this file."""
    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
    client.search_experiments()
    client.search_registered_models()
    return db


class Tracking:
    """One test's tracking store: trains (logs) models the way a training job does."""

    def __init__(self, mlflow, uri: str, artifacts: Path):
        self.mlflow = mlflow
        self.uri = uri
        self.client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        self.exp = self.client.create_experiment(f"training-{uuid4().hex[:6]}",
                                                 artifact_location=artifacts.as_uri())

    def delta_input(self, path: str, version: int):
        from mlflow.data.delta_dataset_source import DeltaDatasetSource

        df = DeltaTable(str(path), version=version).to_pandas()
        return self.mlflow.data.from_pandas(
            df, source=DeltaDatasetSource(path=str(path), delta_table_version=version),
            name=f"{Path(path).name}@{version}")

    def run(self, inputs: list, model: str | None):
        """A training run that logs its inputs and a model (registered as `model` if given).
        Returns (run id, ModelInfo)."""
        with self.mlflow.start_run(experiment_id=self.exp) as run:
            for ds in inputs:
                self.mlflow.log_input(ds, context="training")
            info = self.mlflow.pyfunc.log_model(
                name="model", python_model=echo_model(self.mlflow), pip_requirements=["mlflow"],
                registered_model_name=model)
        return run.info.run_id, info

    def train(self, model: str, inputs: list) -> tuple[str, str]:
        """(run id, registered version)."""
        run_id, info = self.run(inputs, model)
        return run_id, str(info.registered_model_version)

    def erasure_tags(self, model: str, version: str) -> dict[str, str]:
        mv = self.client.get_model_version(model, version)
        return {k: v for k, v in mv.tags.items() if k.startswith("erasure.")}

    def snapshot(self, model: str, version: str) -> tuple[dict, str]:
        mv = self.client.get_model_version(model, version)
        return dict(mv.tags), mv.description or ""


def _use(mlflow, monkeypatch, uri: str) -> None:
    # set_tracking_uri also exports MLFLOW_TRACKING_URI; monkeypatch restores the environment
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def _reset(mlflow) -> None:
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.fixture
def tracking(lake, mlflow, empty_store, monkeypatch, tmp_path):
    """A SQLite tracking store beside the lake's config, named relatively in erasure.toml."""
    shutil.copy(empty_store, lake.root / "mlflow.db")
    monkeypatch.chdir(tmp_path)            # nothing lands in ./mlruns of the repository
    uri = f"sqlite:///{lake.root / 'mlflow.db'}"
    _use(mlflow, monkeypatch, uri)
    append_config(lake, '[mlflow]\ntracking_uri = "sqlite:///mlflow.db"\n')
    yield Tracking(mlflow, uri, tmp_path / "artifacts")
    _reset(mlflow)


@pytest.fixture
def pg_tracking(lake, mlflow, monkeypatch, tmp_path):
    """A fresh PostgreSQL database per test (trust auth, user root), dropped afterwards.
    The driver is named (psycopg2 is what the project installs); see the test for the
    plain `postgresql://` form."""
    db = f"erasure_mlflow_{uuid4().hex[:8]}"
    subprocess.run(["createdb", "-h", "127.0.0.1", "-p", "5432", "-U", "root", db],
                   check=True, capture_output=True, text=True, timeout=60)
    try:
        monkeypatch.chdir(tmp_path)
        uri = f"postgresql+psycopg2://{PG_HOST}/{db}"
        _use(mlflow, monkeypatch, uri)
        append_config(lake, f'[mlflow]\ntracking_uri = "{uri}"\n')
        yield Tracking(mlflow, uri, tmp_path / "artifacts"), db
    finally:
        _reset(mlflow)
        # --force: MLflow's connection pools in this process still hold sessions
        proc = subprocess.run(["dropdb", "-h", "127.0.0.1", "-p", "5432", "-U", "root",
                               "--if-exists", "--force", db],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr


# ---- helpers ---------------------------------------------------------------------------------
def append_config(lake, text: str) -> None:
    lake.config.write_text(lake.config.read_text() + "\n" + text)


def cli(lake, capsys, *args) -> tuple[int, dict]:
    capsys.readouterr()                  # drop what MLflow printed while the test trained
    code, out = lake.cli(*args, "--json", capsys=capsys)
    try:
        return code, json.loads(out)
    except json.JSONDecodeError:
        raise AssertionError(f"`erasure {' '.join(args)}` exit {code}, no JSON: "
                             f"{out[:2000]!r}; stderr: {lake.last_err[-3000:]}") from None


def plan(lake, capsys, subject: str) -> dict:
    code, p = cli(lake, capsys, "plan", "--subject-id", subject)
    assert code == 0, lake.last_err
    return p


def models_in(p: dict) -> dict[str, dict]:
    return {t["name"]: t for t in p["targets"] if t["connector"] == "mlflow"}


def erase(lake, capsys, subject: str) -> tuple[str, int, dict]:
    code, sub = cli(lake, capsys, "request", "submit", "--subject-id", subject)
    assert code == 0, lake.last_err
    rid = sub["request_id"]
    code, res = cli(lake, capsys, "run", rid)
    return rid, code, res


def flag_lines(description: str, rid: str) -> list[str]:
    return [x for x in description.splitlines() if rid in x]


def version_of(path: str) -> int:
    return DeltaTable(path).version()


def rows_of(path: str, column: str, value: int) -> pa.Table:
    t = DeltaTable(path).to_pyarrow_table()
    return t.filter(pc.equal(t[column], value))


def unrelated_table(where: Path) -> str:
    """A Delta table outside the lake's lineage that happens to hold a `user_id` 42 too."""
    path = where / "unrelated" / "signups"
    for n in range(2):
        write_deltalake(path, pa.table({"user_id": pa.array([41 + n, 42 + n], pa.int64()),
                                        "plan": ["free", "pro"]}), mode="append")
    return str(path)


# ---- 1. affected, flagged; out of scope and unrelated models untouched ----------------------
def test_model_trained_on_subject_data_is_flagged_and_others_are_not(lake, tracking, capsys,
                                                                     tmp_path):
    """The sentiment model learned from clean/reviews at its current version, which holds
    subject 42: it is in the plan (with the aliases that serve it) and flagged after the run.
    A forecast trained on the daily aggregate (out of scope) and a churn model trained on a
    table outside the lake (which holds a user_id 42 of its own) are neither planned nor
    flagged."""
    clean, agg = lake.tables["clean/reviews"], lake.tables["agg/daily_ratings"]
    v = version_of(clean)
    assert v >= 1 and len(rows_of(clean, "reviewer_id", 42)) > 0
    other = unrelated_table(tmp_path)
    run_id, sv = tracking.train("sentiment", [tracking.delta_input(clean, v)])
    tracking.train("ratings_forecast", [tracking.delta_input(agg, version_of(agg))])
    tracking.train("churn", [tracking.delta_input(other, 1)])
    tracking.client.set_registered_model_alias("sentiment", "champion", sv)
    tracking.client.set_registered_model_alias("sentiment", "prod", sv)

    p = plan(lake, capsys, SUBJECT)
    models = models_in(p)
    assert set(models) == {f"sentiment/{sv}"}, models
    t = models[f"sentiment/{sv}"]
    assert t["rows"] == 1
    assert t["how"] == "trained_on"
    assert t["derived_from"]["name"] == clean
    assert t["derived_from"]["dataset_version"] == v
    assert t["derived_from"]["job"] == f"run:{run_id}"
    assert sorted(t["details"]["aliases"]) == ["champion", "prod"]
    assert t["details"]["flagged"] is False
    assert agg in {o["name"] for o in p["out_of_scope"]}

    rid, code, res = erase(lake, capsys, SUBJECT)
    assert code == 0 and res["status"] == "completed", res
    [mt] = [x for x in res["requests"][0]["targets"] if x["connector"] == "mlflow"]
    assert mt["name"] == f"sentiment/{sv}" and mt["verified"] is True

    tags = tracking.erasure_tags("sentiment", sv)
    assert tags == {FLAG: "true", REQ + rid: json.dumps([f"{clean}@v{v}"])}, tags
    desc = tracking.client.get_model_version("sentiment", sv).description or ""
    [line] = flag_lines(desc, rid)
    assert "retrain required" in line and f"{clean}@v{v}" in line
    assert tracking.erasure_tags("ratings_forecast", "1") == {}
    assert tracking.erasure_tags("churn", "1") == {}
    for m in ("ratings_forecast", "churn"):
        assert not tracking.client.get_model_version(m, "1").description
    # the lake itself lost the subject (the flag ran before the data was erased)
    assert 42 not in read_table(clean).column("reviewer_id").to_pylist()


# ---- 2. Delta version awareness ------------------------------------------------------------
def test_training_version_decides_before_append_and_after_erasure(lake, tracking, capsys):
    """A copy of raw/reviews (a second root) got subject 42's rows only in version 2: a model
    trained on version 1 never saw them and is not flagged; one trained on version 2 is.
    After the erasure a model trained on clean/reviews' new version is not affected by 42,
    but is flagged for subject 7, whose rows that version still holds."""
    raw, clean = lake.tables["raw/reviews"], lake.tables["clean/reviews"]
    t = DeltaTable(raw).to_pyarrow_table()
    others = t.filter(pc.not_equal(t["user_id"], 42))
    copy = str(lake.root / "tables" / "copy" / "reviews")
    write_deltalake(copy, others.slice(0, 1000))                     # v0
    write_deltalake(copy, others.slice(1000), mode="append")         # v1
    write_deltalake(copy, rows_of(raw, "user_id", 42), mode="append")  # v2: the subject arrives
    assert version_of(copy) == 2
    append_config(lake, '[[roots]]\nnamespace = "file"\nname = "tables/copy/reviews"\n'
                        'column = "user_id"\n')
    _, early = tracking.train("early", [tracking.delta_input(copy, 1)])
    _, late = tracking.train("late", [tracking.delta_input(copy, 2)])

    models = models_in(plan(lake, capsys, SUBJECT))
    assert models[f"early/{early}"]["rows"] == 0
    assert models[f"early/{early}"]["derived_from"]["dataset_version"] == 1
    assert models[f"late/{late}"]["rows"] == 1
    rid, code, res = erase(lake, capsys, SUBJECT)
    assert code == 0 and res["status"] == "completed", res
    assert tracking.erasure_tags("early", early) == {}
    assert tracking.erasure_tags("late", late) == {
        FLAG: "true", REQ + rid: json.dumps([f"{copy}@v2"])}

    # trained after the erasure, on the version without 42 (but with 7)
    v_after = version_of(clean)
    assert 42 not in DeltaTable(clean, version=v_after).to_pyarrow_table()["reviewer_id"].to_pylist()
    assert 7 in DeltaTable(clean, version=v_after).to_pyarrow_table()["reviewer_id"].to_pylist()
    _, post = tracking.train("post", [tracking.delta_input(clean, v_after)])
    assert models_in(plan(lake, capsys, SUBJECT))[f"post/{post}"]["rows"] == 0
    assert models_in(plan(lake, capsys, ABSENT))[f"post/{post}"]["rows"] == 0
    assert models_in(plan(lake, capsys, OTHER))[f"post/{post}"]["rows"] == 1
    rid7, code, res = erase(lake, capsys, OTHER)
    assert code == 0 and res["status"] == "completed", res
    assert tracking.erasure_tags("post", post) == {
        FLAG: "true", REQ + rid7: json.dumps([f"{clean}@v{v_after}"])}


def test_model_trained_on_delta_version_0_that_held_the_subject_is_flagged(
        lake, tracking, capsys):
    """Version 0 is the common case: a table written once, then appended to. MLflow drops
    `delta_table_version` 0 from the logged source, so the run's record names only the path.
    Here the copy held subject 42 at versions 0 and 1, and a routine retention job deleted
    the rows at version 2, before the request came. The model trained at version 1 is found
    by time travel; the one trained at version 0 learned from the same rows and must be
    found too: judging it by the table as it is now misses it (not conservative)."""
    raw = lake.tables["raw/reviews"]
    copy = str(lake.root / "tables" / "copy" / "reviews")
    t = DeltaTable(raw).to_pyarrow_table()
    write_deltalake(copy, pa.concat_tables([rows_of(raw, "user_id", 42), t.slice(0, 500)]))
    run0, m0 = tracking.train("trained_v0", [tracking.delta_input(copy, 0)])
    write_deltalake(copy, t.slice(500, 500), mode="append")             # v1
    _, m1 = tracking.train("trained_v1", [tracking.delta_input(copy, 1)])
    DeltaTable(copy).delete("user_id = 42")                             # v2: retention job
    assert version_of(copy) == 2 and len(rows_of(copy, "user_id", 42)) == 0
    append_config(lake, '[[roots]]\nnamespace = "file"\nname = "tables/copy/reviews"\n'
                        'column = "user_id"\n')
    [di] = tracking.client.get_run(run0).inputs.dataset_inputs
    assert "delta_table_version" not in json.loads(di.dataset.source)   # what MLflow keeps

    models = models_in(plan(lake, capsys, SUBJECT))
    assert models[f"trained_v1/{m1}"]["rows"] == 1
    t0 = models[f"trained_v0/{m0}"]
    rid, code, res = erase(lake, capsys, SUBJECT)
    assert code == 0, res
    assert tracking.erasure_tags("trained_v1", m1)[FLAG] == "true"
    assert (t0["rows"], tracking.erasure_tags("trained_v0", m0).get(FLAG)) == (1, "true"), (
        f"model trained on {copy}@v0, which held subject 42, was planned with rows={t0['rows']} "
        f"(dataset_version {t0['derived_from']['dataset_version']}) and is not flagged: "
        f"{tracking.erasure_tags('trained_v0', m0)}")


# ---- 3. idempotent flagging ------------------------------------------------------------------
def test_rerun_changes_nothing_and_second_request_adds_only_its_own_tag(lake, tracking, capsys):
    clean = lake.tables["clean/reviews"]
    v = version_of(clean)
    _, sv = tracking.train("sentiment", [tracking.delta_input(clean, v)])
    rid, code, res = erase(lake, capsys, SUBJECT)
    assert code == 0 and res["status"] == "completed", res
    tags1, desc1 = tracking.snapshot("sentiment", sv)
    assert tags1[FLAG] == "true" and len(flag_lines(desc1, rid)) == 1

    code, res = cli(lake, capsys, "run", rid)
    assert code == 0 and res["requests"][0]["status"] == "completed", res
    code, res = cli(lake, capsys, "run", "--replan", rid)
    assert code == 0, res
    assert tracking.snapshot("sentiment", sv) == (tags1, desc1)

    rid7, code, res = erase(lake, capsys, OTHER)
    assert code == 0 and res["status"] == "completed", res
    tags2, desc2 = tracking.snapshot("sentiment", sv)
    assert {k: v for k, v in tags2.items() if k.startswith("erasure.")} == {
        FLAG: "true", REQ + rid: tags1[REQ + rid], REQ + rid7: json.dumps([f"{clean}@v{v}"])}
    assert flag_lines(desc2, rid) == flag_lines(desc1, rid)         # not repeated, not rewritten
    assert len(flag_lines(desc2, rid7)) == 1
    assert desc2.startswith(desc1)

    code, _ = cli(lake, capsys, "run", rid7)
    assert code == 0
    assert tracking.snapshot("sentiment", sv) == (tags2, desc2)


# ---- 4. MLflow 3: registered from a logged model ------------------------------------------
def test_version_registered_from_logged_model_is_found_through_its_source_run(
        lake, tracking, mlflow, capsys):
    """MLflow 3 style: the run logs the model (no registration), and the version is
    registered later from `models:/<model_id>`; its link to the training run is the logged
    model's source_run_id."""
    clean = lake.tables["clean/reviews"]
    v = version_of(clean)
    run_id, info = tracking.run([tracking.delta_input(clean, v)], model=None)
    mv = mlflow.register_model(f"models:/{info.model_id}", "sentiment_lm")
    assert mv.source == f"models:/{info.model_id}"
    assert tracking.client.get_logged_model(info.model_id).source_run_id == run_id

    t = models_in(plan(lake, capsys, SUBJECT))[f"sentiment_lm/{mv.version}"]
    assert t["rows"] == 1 and t["derived_from"]["job"] == f"run:{run_id}"
    rid, code, res = erase(lake, capsys, SUBJECT)
    assert code == 0 and res["status"] == "completed", res
    assert tracking.erasure_tags("sentiment_lm", str(mv.version)) == {
        FLAG: "true", REQ + rid: json.dumps([f"{clean}@v{v}"])}


# ---- 5. trained on a Feast feature view ------------------------------------------------------
@pytest.fixture(scope="module")
def feast():
    import feast
    import feast.data_format
    import feast.types

    return feast


def build_feast_repo(feast, repo: Path, features: str) -> tuple[str, str]:
    """A Feast repo (SQLite online store) whose view reads the lake's user_features Delta
    table, applied and materialized. Returns (project, view)."""
    from feast.types import Float64, Int64

    project = f"mlf{uuid4().hex[:8]}"
    repo.mkdir(parents=True)
    (repo / "feature_store.yaml").write_text("\n".join([
        f"project: {project}", "registry: data/registry.db", "provider: local",
        "online_store:", "    type: sqlite", "    path: data/online_store.db",
        "offline_store:", "    type: file", "entity_key_serialization_version: 3", ""]))
    author = feast.Entity(name="review_author", join_keys=["entity_id"],
                          value_type=feast.ValueType.INT64)
    view = feast.FeatureView(
        name="author_stats", entities=[author], ttl=timedelta(days=3650), online=True,
        source=feast.FileSource(name="user_features", path=features,
                                file_format=feast.data_format.DeltaFormat(),
                                timestamp_field="event_timestamp"),
        schema=[feast.Field(name="entity_id", dtype=Int64),
                feast.Field(name="n_reviews", dtype=Int64),
                feast.Field(name="avg_rating", dtype=Float64)])
    store = feast.FeatureStore(repo_path=str(repo))
    store.apply([author, view])
    store.materialize(datetime(2020, 1, 1, tzinfo=timezone.utc),
                      datetime.now(timezone.utc) + timedelta(days=1))
    return project, view.name


def test_model_trained_on_feast_feature_view_is_affected_only_for_its_entities(
        lake, tracking, feast, mlflow, capsys, tmp_path):
    features = lake.tables["features/user_features"]
    repo = tmp_path / "feature_repo"
    project, view = build_feast_repo(feast, repo, features)
    append_config(lake, f'[[feast]]\nrepo = "{repo}"\n')
    df = DeltaTable(features).to_pandas()
    assert 42 in set(df["entity_id"]) and 249 not in set(df["entity_id"])
    run_id, rv = tracking.train("recommender", [
        mlflow.data.from_pandas(df, name=f"feast://{project}/{view}")])

    t = models_in(plan(lake, capsys, SUBJECT))[f"recommender/{rv}"]
    assert t["rows"] == 1
    assert (t["derived_from"]["namespace"], t["derived_from"]["name"]) == (f"feast://{project}",
                                                                           view)
    assert t["derived_from"]["job"] == f"run:{run_id}"
    assert models_in(plan(lake, capsys, ABSENT))[f"recommender/{rv}"]["rows"] == 0

    rid, code, res = erase(lake, capsys, SUBJECT)
    assert code == 0 and res["status"] == "completed", res
    tags = tracking.erasure_tags("recommender", rv)
    assert tags[FLAG] == "true" and REQ + rid in tags, tags
    assert view in json.loads(tags[REQ + rid])[0]
    rid_absent, code, res = erase(lake, capsys, ABSENT)
    assert code == 0 and res["status"] == "not_found", res     # nothing anywhere: said so
    assert REQ + rid_absent not in tracking.erasure_tags("recommender", rv)


# ---- 6. PostgreSQL tracking store ----------------------------------------------------------
def test_postgresql_tracking_store(lake, pg_tracking, capsys, tmp_path):
    """The same story on a PostgreSQL store: affected model flagged, the aggregate's and the
    unrelated table's models untouched. Last, the config form the docs give
    (`postgresql://user@host/db`, no driver) must work with what the project installs."""
    tracking, db = pg_tracking
    clean, agg = lake.tables["clean/reviews"], lake.tables["agg/daily_ratings"]
    v = version_of(clean)
    _, sv = tracking.train("sentiment", [tracking.delta_input(clean, v)])
    tracking.train("ratings_forecast", [tracking.delta_input(agg, version_of(agg))])
    tracking.train("churn", [tracking.delta_input(unrelated_table(tmp_path), 1)])
    tracking.client.set_registered_model_alias("sentiment", "champion", sv)

    models = models_in(plan(lake, capsys, SUBJECT))
    assert set(models) == {f"sentiment/{sv}"}, models
    t = models[f"sentiment/{sv}"]
    assert t["rows"] == 1 and t["details"]["aliases"] == ["champion"]
    assert t["namespace"] == f"mlflow:postgresql+psycopg2://127.0.0.1:5432/{db}"   # no user
    rid, code, res = erase(lake, capsys, SUBJECT)
    assert code == 0 and res["status"] == "completed", res
    assert tracking.erasure_tags("sentiment", sv) == {
        FLAG: "true", REQ + rid: json.dumps([f"{clean}@v{v}"])}
    assert tracking.erasure_tags("ratings_forecast", "1") == {}
    assert tracking.erasure_tags("churn", "1") == {}

    # the documented form, without a driver name
    lake.config.write_text(lake.config.read_text().replace(
        "postgresql+psycopg2://", "postgresql://"))
    code, out = lake.cli("plan", "--subject-id", OTHER, "--json", capsys=capsys)
    assert code == 0, (f"tracking_uri = \"postgresql://{PG_HOST}/{db}\" (the documented form): "
                       f"plan exit {code}: {lake.last_err.strip()[-600:]}")
    assert f"sentiment/{sv}" in models_in(json.loads(out))


# ---- 7. superseded by a clean retrain -----------------------------------------------------
def test_verify_marks_flag_superseded_by_clean_retrain(lake, tracking, capsys):
    clean = lake.tables["clean/reviews"]
    v = version_of(clean)
    _, old = tracking.train("sentiment", [tracking.delta_input(clean, v)])
    rid, code, res = erase(lake, capsys, SUBJECT)
    assert code == 0 and res["status"] == "completed", res
    request_tag = tracking.erasure_tags("sentiment", old)[REQ + rid]

    v_after = version_of(clean)
    assert v_after > v
    _, new = tracking.train("sentiment", [tracking.delta_input(clean, v_after)])
    code, out = cli(lake, capsys, "verify")
    assert code == 0 and out["status"] == "holds", out
    assert tracking.erasure_tags("sentiment", old) == {
        FLAG: "true", REQ + rid: request_tag, SUPERSEDED: new}
    assert tracking.erasure_tags("sentiment", new) == {}
    code, out = cli(lake, capsys, "verify", rid)                     # again: unchanged
    assert code == 0
    assert tracking.erasure_tags("sentiment", old)[SUPERSEDED] == new


def test_newer_version_trained_on_pre_erasure_data_does_not_supersede(lake, tracking, capsys):
    """A retraining job read clean/reviews at the version that still held subject 42, and
    registered its model after the erasure ran. That version learned from 42's rows: it is
    no clean successor, and the old version's flag must not be marked superseded by it."""
    clean = lake.tables["clean/reviews"]
    v = version_of(clean)
    _, old = tracking.train("sentiment", [tracking.delta_input(clean, v)])
    stale_input = tracking.delta_input(clean, v)      # read before the erasure
    rid, code, res = erase(lake, capsys, SUBJECT)
    assert code == 0 and res["status"] == "completed", res

    _, newer = tracking.train("sentiment", [stale_input])
    code, out = cli(lake, capsys, "verify")
    assert SUPERSEDED not in tracking.erasure_tags("sentiment", old), (
        f"sentiment v{old} marked superseded by v{newer}, which was trained on "
        f"{clean}@v{v} (the version holding subject 42): {tracking.erasure_tags('sentiment', old)}")


def test_verify_catches_a_removed_retrain_flag(lake, tracking, capsys):
    """The run flagged the model; someone removes the flag afterwards. The connector's own
    contract says a model that learned from the subject must carry the flag, so `erasure
    verify` must report the request violated."""
    clean = lake.tables["clean/reviews"]
    _, sv = tracking.train("sentiment", [tracking.delta_input(clean, version_of(clean))])
    rid, code, res = erase(lake, capsys, SUBJECT)
    assert code == 0 and res["status"] == "completed", res
    assert tracking.erasure_tags("sentiment", sv)[FLAG] == "true"
    tracking.client.delete_model_version_tag("sentiment", sv, FLAG)
    code, out = cli(lake, capsys, "verify", rid)
    assert code == 5 and out["status"] == "violated", (
        f"verify exit {code}, {out['status']}: the retrain flag of sentiment v{sv} (trained on "
        "data holding the subject) was removed after the run, and verify did not notice")
    assert any(f"sentiment/{sv}" in e or FLAG in e for e in out["requests"][0]["errors"]), out


# ---- 8. re-ingestion is caught by verify ------------------------------------------------------
def test_reingested_subject_fails_verify_naming_the_table(lake, tracking, capsys):
    raw, clean = lake.tables["raw/reviews"], lake.tables["clean/reviews"]
    tracking.train("sentiment", [tracking.delta_input(clean, version_of(clean))])
    back = rows_of(raw, "user_id", 42).slice(0, 1)
    assert len(back) == 1
    rid, code, res = erase(lake, capsys, SUBJECT)
    assert code == 0 and res["status"] == "completed", res
    code, out = cli(lake, capsys, "verify")
    assert code == 0 and out["status"] == "holds", out

    write_deltalake(raw, back, mode="append")                    # a late batch re-ingests 42
    code, out = cli(lake, capsys, "verify")
    assert code == 5 and out["status"] == "violated", out
    [r] = out["requests"]
    assert r["request_id"] == rid and r["status"] == "violated"
    assert any(raw in e for e in r["errors"]), r["errors"]
    assert not any(clean in e for e in r["errors"]), r["errors"]
