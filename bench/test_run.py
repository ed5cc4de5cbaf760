"""bench/run.py's own set-up: the database can be named, and a name that exists is
refused before anything is created (the run drops its database at the end)."""

from __future__ import annotations

import pytest

from bench import common, run


def test_a_bad_database_name_is_refused_with_a_message(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--only", "relay_vs_boto3", "--db-name", "Bench-Mine!"])
    assert exit_info.value.code == 2
    assert "use lower-case letters, digits and _" in capsys.readouterr().err


@pytest.mark.postgres
def test_an_existing_database_is_never_reused(db):
    with pytest.raises(common.BenchSetupError, match="'postgres' exists"):
        common.configure("moto", db_name="postgres")
    assert common._env is None  # nothing was started
