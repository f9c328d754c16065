"""/v1/requests and the OpenLineage receiver (see erasure/service/__init__.py)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
