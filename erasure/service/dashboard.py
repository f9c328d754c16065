"""The privacy office's dashboard at / (see erasure/service/__init__.py)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
