"""A config typo or a wrong type is a configuration error (exit 3) that names the key, and
nothing is recorded: no ledger, no subject key, no lineage store (issue 9, item 4).

Each case starts from the sample lake's generated erasure.toml (valid), changes one thing,
writes the result next to it and runs the real CLI in-process."""

from __future__ import annotations

import pytest

from erasure.cli import run_cli


def _edit(old: str, new: str):
    def apply(text: str) -> str:
        assert old in text, f"the generated config no longer contains {old!r}"
        return text.replace(old, new, 1)
    return apply


def _append(extra: str):
    return lambda text: text + "\n" + extra


def _prepend(top: str):
    return lambda text: top + "\n" + text


ROOT_TABLES = '[[datasets]]\nnamespace = "file"\nname = "tables/agg/daily_ratings"\n'

CASES = {
    # a typo in a key name: the default (purge) would destroy the time travel asked to be kept
    "delta-residue-typo": (
        _edit('residue = "purge"', 'residu = "keep-history"'),
        "[delta] unknown key 'residu' (did you mean 'residue'?)", "request"),
    # an empty reason silently dropped the dataset from the plan
    "datasets-exclude-empty": (
        _append(ROOT_TABLES + 'exclude = "legal hold"\n\n[[datasets]]\nnamespace = "file"\n'
                'name = "tables/exports/user_activity.parquet"\nexclude = ""\n'),
        "[[datasets]] #2 exclude must be a non-empty string (a reason)", "request"),
    "datasets-exclude-false": (
        _append(ROOT_TABLES + "exclude = false\n"),
        "[[datasets]] #1 exclude must be a non-empty string (a reason)", "plan"),
    "datasets-column-empty": (
        _append(ROOT_TABLES + 'column = ""\n'),
        "[[datasets]] #1 column must be a non-empty string", "plan"),
    # a pattern that matches nothing gave an empty graph: only the root was erased
    "lineage-events-match-nothing": (
        _edit('events = ["events/*.jsonl"]', 'events = ["event/*.jsonl"]'),
        "[lineage] events[0] 'event/*.jsonl' matches no file", "request"),
    "lineage-lenient-string": (
        _edit('store = ".erasure/lineage.db"', 'store = ".erasure/lineage.db"\nlenient = "false"'),
        "[lineage] lenient must be true or false", "plan"),
    # bool is an int subclass in Python: true was taken as 1
    "delta-retries-bool": (
        _edit('residue = "purge"', 'residue = "purge"\nmax_conflict_retries = true'),
        "[delta] max_conflict_retries must be a non-negative integer", "plan"),
    # used to crash with "internal error: AttributeError"
    "datasets-not-tables": (
        _prepend('datasets = "x"'),
        "datasets must be an array of tables ([[datasets]] entries)", "plan"),
    "unknown-top-level-table": (
        _append("[lineag]\nlenient = true\n"),
        "unknown table [lineag] (did you mean [lineage]?)", "plan"),
    "roots-unknown-key": (
        _edit('column = "user_id"', 'column = "user_id"\ncolumns = "user_id"'),
        "[[roots]] #1 unknown key 'columns' (did you mean 'column'?)", "request"),
    "delta-orphan-grace-no-unit": (
        _edit('residue = "purge"', 'residue = "purge"\norphan_grace = 3600'),
        '[delta] orphan_grace must be a duration such as "90s", "30m", "1h" or "2d"', "plan"),
    "delta-orphan-grace-words": (
        _edit('residue = "purge"', 'residue = "purge"\norphan_grace = "an hour"'),
        '[delta] orphan_grace must be a duration such as "90s", "30m", "1h" or "2d"', "plan"),
    "storage-option-not-string": (
        _append('[[storage]]\nprefix = "s3://a"\n[[storage]]\nprefix = "s3://b"\n'
                'options = { AWS_REGION = 1 }\n'),
        "[[storage]] #2 options AWS_REGION must be a non-empty string", "plan"),
    "delta-storage-option-not-string": (
        _append("[delta.storage_options]\nAWS_REGION = 1\n"),
        "[delta.storage_options] AWS_REGION must be a non-empty string", "plan"),
    # read lazily before: exit 3, but only after the subject key had been created
    "mlflow-unknown-key": (
        _append('[mlflow]\ntracking_url = "sqlite:///mlflow.db"\n'),
        "[mlflow] unknown key 'tracking_url' (did you mean 'tracking_uri'?)", "request"),
    "signing-dir-empty": (
        _append('[signing]\ndir = ""\n'),
        "[signing] dir must be a non-empty string", "plan"),
    "feast-unknown-key": (
        _append('[[feast]]\nrepos = "feature_repo"\n'),
        "[[feast]] #1 unknown key 'repos' (did you mean 'repo'?)", "plan"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_is_exit_3_naming_the_key_and_records_nothing(lake, capsys, case):
    edit, message, command = CASES[case]
    cfg = lake.root / "strict.toml"
    cfg.write_text(edit(lake.config.read_text()))
    capsys.readouterr()
    argv = (["plan", "--subject-id", "42"] if command == "plan"
            else ["request", "submit", "--subject-id", "42"])

    code = run_cli(["--config", str(cfg), *argv])

    err = capsys.readouterr().err
    assert code == 3, f"exit {code}: {err.strip()[-600:]}"
    assert message in err, err
    assert str(cfg) in err, err                    # which file, too
    assert not (lake.root / ".erasure" / "ledger.db").exists()
    assert not (lake.root / ".erasure" / "keys" / "subject.key").exists()
    assert not (lake.root / ".erasure").exists(), sorted(
        str(p) for p in (lake.root / ".erasure").rglob("*"))
