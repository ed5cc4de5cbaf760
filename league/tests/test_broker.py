import logging
import os

from kombu import Connection
from kombu.transport import resolve_transport

from league.broker import Transport


def test_filesystem_urls_use_the_atomic_transport():
    assert resolve_transport("filesystem") is Transport


def test_messages_appear_whole_and_partial_files_are_never_read(tmp_path):
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path)}
    with Connection("filesystem://", transport_options=options) as conn:
        channel = conn.default_channel
        # A message still being written, as another process would leave it mid-write.
        (tmp_path / ".1_x.celery.msg.partial").write_bytes(b"")
        channel._put("celery", {"body": "hello"})
        files = sorted(os.listdir(tmp_path))
        assert [f for f in files if f.endswith(".celery.msg")] and not [f for f in files if f.startswith(".") and "hello" in f]
        assert channel._get("celery") == {"body": "hello"}
        assert os.listdir(tmp_path) == [".1_x.celery.msg.partial"]  # left alone, not read as an empty message


def test_the_filesystem_broker_prints_no_hostname_warning(caplog):
    """kombu warns "No hostname was supplied" for a URL without a host; a filesystem
    broker has none to supply, and the warning landed in schedule_season's output."""
    from league.celery import app

    with caplog.at_level(logging.WARNING, logger="kombu"), app.connection_for_write() as connection:
        assert connection.info()["transport"]
    assert "No hostname was supplied" not in caplog.text
