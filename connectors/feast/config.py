"""`[[feast]]` of erasure.toml: one entry per Feast repo folder.

Imported when a config is loaded, never at `erasure --help`; it needs pydantic and nothing of
feast.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ValidationInfo

from erasure.config import SECTION, PathText, base_dir, refuse, resolve_path


def _is_a_feast_repo(repo: str, info: ValidationInfo) -> str:
    folder = resolve_path(base_dir(info), repo)
    if not (folder / "feature_store.yaml").is_file():
        raise refuse(f": no feature_store.yaml in {folder}")
    return repo


class FeastRepoEntry(BaseModel):
    model_config = SECTION
    repo: Annotated[PathText, AfterValidator(_is_a_feast_repo)]
