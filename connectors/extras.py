"""Which optional library each configured connector needs, checked before it is built.

Feast, MLflow, SQL and Spark are extras (`pip install 'erasure[feast]'`, `'erasure[mlflow]'`,
`'erasure[sql]'`, `'erasure[spark]'`, or `'erasure[all]'`). A config that names a connector whose library is not
installed is a configuration error (exit 3) that says what to install, raised when the
registry is built, before anything is planned or recorded. The check asks `importlib.util.find_spec`, which looks
the module up on the path without importing it: building the registry stays cheap.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from erasure.errors import ConfigError


@dataclass(frozen=True)
class Extra:
    section: str        # the config section that asks for the library, as written in the file
    module: str         # the top-level module that must be importable
    install: str        # the pip argument that installs it

    @property
    def command(self) -> str:
        return f"pip install '{self.install}'"


FEAST = Extra("[[feast]]", "feast", "erasure[feast]")
MLFLOW = Extra("[mlflow]", "mlflow", "erasure[mlflow]")
# a postgresql:// MLflow store is opened with psycopg2 (MLflow's own default driver), which
# neither MLflow nor the extra installs
MLFLOW_POSTGRES = Extra("[mlflow] with a postgresql:// uri", "psycopg2", "psycopg2-binary")
SQL = Extra("[[sql]]", "sqlalchemy", "erasure[sql]")
SPARK = Extra("[spark]", "pyspark", "erasure[spark]")
# a postgresql:// [[sql]] url is opened with psycopg2 (the extra installs it; a bare
# postgresql:// would mean psycopg 3 to SQLAlchemy 2.1)
SQL_POSTGRES = Extra("[[sql]] with a postgresql:// url", "psycopg2", "erasure[sql]")


def installed(module: str) -> bool:
    """Whether a top-level module can be imported, without importing it."""
    return importlib.util.find_spec(module) is not None


def require(extra: Extra) -> None:
    """Raise ConfigError naming the pip command when the extra's module is not installed."""
    if not installed(extra.module):
        raise ConfigError(f"{extra.section} is configured but {extra.module} is not installed: "
                          f"{extra.command}")
