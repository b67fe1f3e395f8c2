"""A Prometheus URL's credentials never reach the monitor's error: it is stored (the monitor's row, shown to every
doctor), returned and logged. Against http://user:secret@127.0.0.1:1/ (nothing listens; the name does not
resolve either, as urllib takes the userinfo for part of the host)."""

import logging
from pathlib import Path

import pytest
from sqlalchemy import column, inspect, select, table

from xraylab.db.session import Database, upgrade_schema
from xraylab.monitor.health import PrometheusError, query, read_health
from xraylab.monitor.run import MonitorRunner
from xraylab.settings import load_settings

URLS = ["http://user:secret@127.0.0.1:1/", "http://user:secret@127.0.0.1/",  # the second: an InvalidURL
        "http://127.0.0.1:1/api?token=secret", "http://user:p%40secret@127.0.0.1:1"]


@pytest.mark.parametrize("url", URLS)
def test_read_health_error_has_no_credentials(url: str) -> None:
    reading = read_health(url, timeout=1)
    assert reading.error and "secret" not in reading.error
    assert "127.0.0.1" in reading.error  # still says which Prometheus
    with pytest.raises(PrometheusError) as failure:
        query(url, "up", timeout=1)
    assert "secret" not in str(failure.value)


def test_health_run_stores_and_logs_no_credentials(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = URLS[0]
    settings = load_settings(PROMETHEUS_URL=url, STATE_DIR=tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}")
    db = Database(settings.DATABASE_URL)
    upgrade_schema(db.engine)
    try:
        runner = MonitorRunner(settings, db, "v1", sinks=[])
        with caplog.at_level(logging.DEBUG):
            summary = runner.health_run()
        assert not summary.ran and "unreachable" in summary.message
        assert "secret" not in summary.message  # what the monitor actor stores as the row's message
        assert "secret" not in caplog.text and "unreachable" in caplog.text
        with db.engine.connect() as conn:  # nothing the run stored carries it either
            for name in inspect(conn).get_table_names():
                columns = [column(c["name"]) for c in inspect(conn).get_columns(name)]
                rows = conn.execute(select(*columns).select_from(table(name))).all()
                assert "secret" not in repr(rows), name
    finally:
        db.dispose()
