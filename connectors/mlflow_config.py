"""`[mlflow]` of erasure.toml, as written (a relative sqlite path is resolved by
`connectors.mlflow.settings_from`).

Imported when a config is loaded, never at `erasure --help`; it needs pydantic and nothing of
mlflow.
"""

from __future__ import annotations

from pydantic import BaseModel

from erasure.config import SECTION, Text


class MlflowConfig(BaseModel):
    model_config = SECTION
    tracking_uri: Text
    registry_uri: Text | None = None
