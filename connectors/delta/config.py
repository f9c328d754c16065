"""`[delta]` and `[delta.storage_options]` of erasure.toml: the Delta connector's settings.

Imported when a config is loaded (or the connector is built), never at `erasure --help`; it
needs pydantic and nothing of deltalake.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from erasure.config import SECTION, Count, Duration, Residue, Text


class DeltaSettings(BaseModel):
    """One setting for every Delta table (docs/configuration.md, `[delta] residue`)."""

    model_config = SECTION
    residue: Residue = "purge"
    max_conflict_retries: Count = 5
    # a file under the table that no commit names may be another writer's uncommitted data:
    # the purge deletes one holding a key only once it is older than this (seconds)
    orphan_grace: Duration = 3600
    # passed unchanged to deltalake.DeltaTable(storage_options=...): any key, string values
    storage_options: dict[str, Text] = Field(default_factory=dict)
