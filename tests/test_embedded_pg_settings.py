"""The embedded PostgreSQL's memory and WAL settings come from the machine's size and can be overridden
(EVENTSAPP_EMBEDDED_PG_SETTINGS); a server runs with them from its very first start."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from eventsapp import config, embedded_pg

MB = 1024 * 1024
GB = 1024 * MB


@pytest.mark.parametrize("memory", [256 * MB, 1 * GB, 3 * GB, 8 * GB, 64 * GB])
def test_shared_buffers_is_a_quarter_of_memory_within_bounds(memory):
    settings = embedded_pg.memory_settings(memory)
    quarter_mb = memory // 4 // MB
    assert settings["shared_buffers"] == f"{min(max(quarter_mb, 128), 2048)}MB"
    assert settings["effective_cache_size"] == f"{max(memory // 2 // MB, min(max(quarter_mb, 128), 2048))}MB"
    # Checkpoints far apart enough that a big import does not write full page images every ~1 GB.
    assert settings["max_wal_size"] == "4GB"


def test_the_override_variable_is_parsed_and_refused_naming_itself():
    parsed = config.from_env({"EVENTSAPP_EMBEDDED_PG_SETTINGS": "shared_buffers=256MB; max_wal_size=,work_mem = 8MB"})
    assert parsed["EVENTSAPP_EMBEDDED_PG_SETTINGS"] == {"shared_buffers": "256MB", "max_wal_size": None,
                                                        "work_mem": "8MB"}
    for bad in ("shared_buffers", "shared buffers=1GB", "work_mem='1MB'"):
        with pytest.raises(SystemExit, match="EVENTSAPP_EMBEDDED_PG_SETTINGS"):
            config.from_env({"EVENTSAPP_EMBEDDED_PG_SETTINGS": bad})


def test_other_lines_of_the_settings_file_are_kept(tmp_path):
    (tmp_path / "postgresql.auto.conf").write_text("# header\nlog_min_duration_statement = '250'\n")
    assert embedded_pg.write_settings(tmp_path, {"shared_buffers": "256MB"})
    assert not embedded_pg.write_settings(tmp_path, {"shared_buffers": "256MB"})  # unchanged
    embedded_pg.write_settings(tmp_path, {"work_mem": "8MB"})
    text = (tmp_path / "postgresql.auto.conf").read_text()
    assert "log_min_duration_statement = '250'" in text and "work_mem = '8MB'" in text
    assert "shared_buffers" not in text  # a value no longer wanted is gone, so the default applies


def show(url: str, *names: str) -> dict[str, str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return {name: connection.exec_driver_sql(f"SHOW {name}").scalar_one() for name in names}
    finally:
        engine.dispose()


@pytest.mark.slow
def test_a_new_embedded_server_runs_with_its_settings_from_the_first_start():
    # Not under pytest's tmp tree (see conftest): the server runs as another OS user when we are root.
    folder = Path(tempfile.mkdtemp(prefix="eventsapp-pgsettings-"))
    folder.chmod(0o755)
    data_dir = folder / "pgdata"
    try:
        url = embedded_pg.start(data_dir, {"shared_buffers": "64MB", "work_mem": "7MB"})
        sized = embedded_pg.memory_settings(embedded_pg.machine_memory())
        assert show(url, "shared_buffers", "work_mem", "max_wal_size", "maintenance_work_mem") == {
            "shared_buffers": "64MB", "work_mem": "7MB", "max_wal_size": sized["max_wal_size"],
            "maintenance_work_mem": sized["maintenance_work_mem"]}
        embedded_pg.stop(data_dir)
        # Started again with other overrides: they apply, and work_mem is back at PostgreSQL's default.
        url = embedded_pg.start(data_dir, {"shared_buffers": "96MB"})
        assert show(url, "shared_buffers", "work_mem") == {"shared_buffers": "96MB", "work_mem": "4MB"}
    finally:
        embedded_pg.stop(data_dir)
        shutil.rmtree(folder, ignore_errors=True)
