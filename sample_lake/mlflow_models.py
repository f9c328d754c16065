"""MLflow tracking store for the sample lake: two registered models, one of which learned
from personal data.

``build_mlflow_store(out_dir, tables)`` writes ``out_dir/mlflow.db`` (SQLite tracking store
and model registry) and ``out_dir/mlartifacts/`` (the experiments' artifact location)::

    experiment "sentiment"     run "train_review_sentiment"
        inputs   clean/reviews           DeltaDatasetSource(path, delta_table_version), "training"
                 features/user_features  DeltaDatasetSource(path, delta_table_version), "training"
        model    TF-IDF(review_text) + (n_reviews, avg_rating) -> LogisticRegression(sentiment)
        registered as "review_sentiment" version 1, alias "champion"
    experiment "forecasting"   run "train_daily_rating_forecast"
        input    agg/daily_ratings       DeltaDatasetSource(path, delta_table_version), "training"
                 (an aggregate without a subject key: no user's data can be found in it)
        model    (day of week, day index) -> Ridge(avg_rating)
        registered as "daily_rating_forecast" version 1, alias "champion"

The sentiment model trains on a deterministic sample of at most ``MAX_TRAINING_ROWS``
reviews joined with their authors' features; the logged dataset inputs name the whole
tables at the version read (what an erasure engine must trace: the model learned from
that table version).

mlflow and scikit-learn are imported inside the function only (``import mlflow`` costs
seconds). The global MLflow tracking uri is set while the store is built and restored
afterwards; MLflow's INFO logging is silenced and its stdout output goes to stderr.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from pathlib import Path

__all__ = ["DB_FILE", "ARTIFACTS_DIR", "MODELS", "ALIAS", "MAX_TRAINING_ROWS", "build_mlflow_store"]

DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
#: registered model -> (experiment, logical tables it was trained on)
MODELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "review_sentiment": ("sentiment", ("clean/reviews", "features/user_features")),
    "daily_rating_forecast": ("forecasting", ("agg/daily_ratings",)),
}
ALIAS = "champion"
MAX_TRAINING_ROWS = 5000
_SEED = 7


@contextlib.contextmanager
def _quiet_mlflow(uri: str):
    """Point MLflow's fluent API (tracking and registry) at ``uri`` and silence it; restore
    the previous uris (and their environment variables) and log levels afterwards."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    loggers = [logging.getLogger(n) for n in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    old_tracking = getattr(tracking_utils, "_tracking_uri", None)
    old_registry = getattr(registry_utils, "_registry_uri", None)
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            # stdout stays clean for --json. Dataset and signature schemas hint that integer
            # columns cannot hold missing values: ours (ids, counts, day indexes) never do.
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
            # MLflow's SQL store on SQLAlchemy 2.1 (shown once feast has imported: feast turns
            # DeprecationWarnings on for the whole process)
            warnings.filterwarnings("ignore", message="The ``noload`` loader strategy is deprecated")
            yield mlflow
    finally:
        mlflow.set_tracking_uri(old_tracking)
        mlflow.set_registry_uri(old_registry)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _delta_input(mlflow, df, path: str, name: str):
    """An MLflow dataset for ``df`` whose source is the Delta table at its current version."""
    from deltalake import DeltaTable
    from mlflow.data.delta_dataset_source import DeltaDatasetSource

    version = DeltaTable(path).version()
    return mlflow.data.from_pandas(df, source=DeltaDatasetSource(path=path, delta_table_version=version),
                                   name=name), version


def _sentiment_training_data(tables: dict[str, str]):
    """A deterministic sample of clean reviews joined with their authors' features."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pds
    from deltalake import DeltaTable

    reviews = DeltaTable(tables["clean/reviews"]).to_pyarrow_dataset()
    n = reviews.count_rows()
    idx = np.arange(n)
    if n > MAX_TRAINING_ROWS:
        idx = np.sort(np.random.default_rng(_SEED).choice(n, MAX_TRAINING_ROWS, replace=False))
    sample = reviews.take(pa.array(idx), columns=["reviewer_id", "review_text", "sentiment"]).to_pandas()
    ids = pa.array(sorted(set(sample["reviewer_id"].tolist())), pa.int64())
    features = DeltaTable(tables["features/user_features"]).to_pyarrow_dataset().to_table(
        columns=["entity_id", "n_reviews", "avg_rating"],
        filter=pc.is_in(pds.field("entity_id"), value_set=ids)).to_pandas()
    joined = sample.merge(features, left_on="reviewer_id", right_on="entity_id", how="inner")
    return sample, features, joined


def _train_sentiment(joined):
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X = joined[["review_text", "n_reviews", "avg_rating"]]
    y = joined["sentiment"]
    model = Pipeline([
        ("features", ColumnTransformer([
            ("text", TfidfVectorizer(ngram_range=(1, 2), min_df=1), "review_text"),
            ("author", StandardScaler(), ["n_reviews", "avg_rating"]),
        ])),
        ("clf", LogisticRegression(max_iter=1000)),
    ])
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, random_state=_SEED)
    model.fit(X_tr, y_tr)
    acc = float(model.score(X_te, y_te)) if len(X_te) else float("nan")
    return model, X, acc


def _train_forecast(daily):
    import numpy as np
    from sklearn.linear_model import Ridge

    day = daily["day"].astype("datetime64[ns]")
    X = daily.assign(day_of_week=day.dt.dayofweek.astype("int64"),
                     day_index=((day - day.min()).dt.days).astype("int64"))[["day_of_week", "day_index"]]
    y = daily["avg_rating"]
    model = Ridge(alpha=1.0).fit(X, y)
    rmse = float(np.sqrt(np.mean((model.predict(X) - y) ** 2)))
    return model, X, rmse


def _log_and_register(mlflow, client, model, X, name: str) -> str:
    import sklearn
    from mlflow.models import infer_signature

    head = X.head(5)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            info = mlflow.sklearn.log_model(
                model, name="model", registered_model_name=name,
                signature=infer_signature(head, model.predict(head)),
                pip_requirements=[f"scikit-learn=={sklearn.__version__}"],   # skips slow inference
            )
    finally:   # MLflow print()s "Successfully registered model ..." to stderr: drop only that
        for line in captured.getvalue().splitlines(keepends=True):
            if not line.startswith(("Successfully registered model", "Created version")):
                sys.stderr.write(line)
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, ALIAS, version)
    return version


def build_mlflow_store(out_dir: Path, tables: dict[str, str]) -> str:
    """Create ``out_dir/mlflow.db`` with the two registered models; return its tracking uri.

    ``tables``: logical name -> absolute path, with ``clean/reviews``,
    ``features/user_features`` and ``agg/daily_ratings`` (Delta folders).
    """
    out = Path(out_dir).resolve()
    uri = f"sqlite:///{out / DB_FILE}"
    artifacts = (out / ARTIFACTS_DIR)
    artifacts.mkdir(parents=True, exist_ok=True)

    with _quiet_mlflow(uri) as mlflow:
        import mlflow.sklearn  # the flavor module, used as mlflow.sklearn below
        from deltalake import DeltaTable
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri, registry_uri=uri)

        def experiment(name: str) -> str:
            exp = client.get_experiment_by_name(name)
            if exp is not None:
                return exp.experiment_id
            return client.create_experiment(name, artifact_location=(artifacts / name).as_uri())

        # a) sentiment classifier: learned from the subjects' reviews and features
        sample, features, joined = _sentiment_training_data(tables)
        model, X, acc = _train_sentiment(joined)
        with mlflow.start_run(experiment_id=experiment(MODELS["review_sentiment"][0]),
                              run_name="train_review_sentiment"):
            ds, v_reviews = _delta_input(mlflow, sample, tables["clean/reviews"], "clean_reviews")
            mlflow.log_input(ds, context="training")
            ds, v_features = _delta_input(mlflow, features, tables["features/user_features"],
                                          "user_features")
            mlflow.log_input(ds, context="training")
            mlflow.log_params({"model": "tfidf+logreg", "training_rows": len(joined),
                               "clean_reviews_version": v_reviews,
                               "user_features_version": v_features})
            mlflow.log_metric("accuracy", acc)
            _log_and_register(mlflow, client, model, X, "review_sentiment")

        # b) daily rating forecast: an aggregate without a subject key
        daily = DeltaTable(tables["agg/daily_ratings"]).to_pandas()
        model, X, rmse = _train_forecast(daily)
        with mlflow.start_run(experiment_id=experiment(MODELS["daily_rating_forecast"][0]),
                              run_name="train_daily_rating_forecast"):
            ds, v_daily = _delta_input(mlflow, daily, tables["agg/daily_ratings"], "daily_ratings")
            mlflow.log_input(ds, context="training")
            mlflow.log_params({"model": "ridge", "training_rows": len(daily),
                               "daily_ratings_version": v_daily})
            mlflow.log_metric("rmse", rmse)
            _log_and_register(mlflow, client, model, X, "daily_rating_forecast")
    return uri
