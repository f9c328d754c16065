"""Issue 9, item 16: the suite runs from a fresh clone with nothing beside it. No test, no
engine code and no build file reads outside the repository; the real-world data the tests use
is in tests/data with its provenance and licence."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import TESTDATA

REPO = Path(__file__).resolve().parents[1]
# what reaching outside looks like: the shared folder by name, or a climb above the repository
# (spelled in parts, so that this file does not itself name the folder it looks for)
SHARED = "shared"
OUTSIDE = re.compile("|".join(re.escape(p) for p in (
    f"{SHARED}/testdata", f"../{SHARED}", f"/work/{SHARED}")) + r"|parents\[[2-9]\]")


def _sources() -> list[Path]:
    files = [REPO / "Makefile", REPO / ".ci" / "run", REPO / "pyproject.toml"]
    for folder in ("erasure", "connectors", "sample_lake", "tests", "bench"):
        files += sorted((REPO / folder).rglob("*.py"))
    return [f for f in files if f.is_file()]


def test_no_code_or_test_reads_outside_the_repository():
    offending = []
    for f in _sources():
        if f == Path(__file__).resolve():
            continue
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if OUTSIDE.search(line):
                offending.append(f"{f.relative_to(REPO)}:{n}: {line.strip()}")
    assert offending == []


def test_test_data_lives_in_the_repository_with_its_provenance():
    assert TESTDATA.resolve().is_relative_to(REPO)
    provenance = (TESTDATA / "PROVENANCE.md").read_text(encoding="utf-8")
    for folder in ("delta-rs-tables", "openlineage-events"):
        assert (TESTDATA / folder).is_dir()
        assert folder in provenance
    assert "Apache-2.0" in provenance
    # every table the Delta tests copy is here, log included
    for table in ("table-with-dv-small", "cdf-table", "checkpoints", "table_with_column_mapping"):
        assert any((TESTDATA / "delta-rs-tables" / table / "_delta_log").glob("*.json")), table
