"""Log formats and settings: text on a terminal as before, JSON lines elsewhere, request ids."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Iterator

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from ragline import logs
from ragline.api.middleware import request_id_of
from ragline.cli import app
from ragline.config import LogSettings, Settings

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING ragline\.test disk full=95$")


@pytest.fixture(autouse=True)
def restore_root() -> Iterator[None]:
    """Each test's handler and level are taken off the root logger afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_text_on_a_terminal_is_the_format_it_always_was() -> None:
    """`auto` on a real terminal (a pty) writes ragline's text lines, unchanged, even inside a
    request: no JSON, no request fields added."""
    leader, follower = os.openpty()
    with open(follower, "w", closefd=True) as terminal:
        logs.configure(LogSettings(), logging.INFO, terminal)
        token = logs.begin_request(logs.RequestContext("req-1", key_id="k1"))
        logging.getLogger("ragline.test").warning("disk full=%d", 95)
        logs.end_request(token)
        terminal.flush()
        written = os.read(leader, 4096).decode()
    os.close(leader)
    assert TEXT_LINE.match(written.strip()), written
    assert not logs.is_json()


def test_auto_is_json_lines_when_stderr_is_not_a_terminal() -> None:
    """A pipe or a container's output gets one JSON object per line, with the RFC 3339 UTC
    time, level, logger, message, the request's fields and a traceback as one string."""
    buffer = io.StringIO()
    logs.configure(LogSettings(), logging.INFO, buffer)
    token = logs.begin_request(logs.RequestContext("req-1", key_id="k1", collection="kb"))
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logging.getLogger("ragline.test").exception("failed job=%s", "j1")
    logs.end_request(token)
    logging.getLogger("ragline.test").info("after", extra={logs.FIELDS: {"chunks": 3}})
    inside, after = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", inside["ts"])
    assert inside["level"] == "ERROR" and inside["logger"] == "ragline.test"
    assert inside["message"] == "failed job=j1"
    assert (inside["request_id"], inside["key_id"], inside["collection"]) == ("req-1", "k1", "kb")
    assert "ValueError: boom" in inside["exception"]
    assert after == {**after, "message": "after", "chunks": 3} and "request_id" not in after


def test_the_format_setting_overrides_auto() -> None:
    """`text` is text on a pipe too; `json` is JSON on a terminal too."""
    assert not logs.wants_json("text", io.StringIO())
    leader, follower = os.openpty()
    with open(follower, "w") as terminal:
        assert logs.wants_json("json", terminal) and not logs.wants_json("auto", terminal)
    os.close(leader)


def test_the_level_is_the_setting_else_the_commands_default_and_verbose_means_info() -> None:
    assert logs.level_of(LogSettings(), "WARNING") == logging.WARNING
    assert logs.level_of(LogSettings(), "WARNING", verbose=True) == logging.INFO
    assert logs.level_of(LogSettings(level="DEBUG"), "INFO", verbose=True) == logging.DEBUG
    assert logs.level_of(LogSettings(level="ERROR"), "INFO") == logging.ERROR


def test_log_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """RAGLINE_LOG__FORMAT and RAGLINE_LOG__LEVEL (any case); an unknown format is refused."""
    monkeypatch.setenv("RAGLINE_LOG__FORMAT", "json")
    monkeypatch.setenv("RAGLINE_LOG__LEVEL", "debug")
    assert Settings().log == LogSettings(format="json", level="DEBUG")
    monkeypatch.setenv("RAGLINE_LOG__FORMAT", "xml")
    with pytest.raises(ValidationError):
        Settings()


def test_every_command_applies_the_log_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    """The CLI's callback configures logging from the settings before any command runs."""
    monkeypatch.setenv("RAGLINE_HOME", str(tmp_path))
    monkeypatch.setenv("RAGLINE_LOG__FORMAT", "json")
    monkeypatch.setenv("RAGLINE_LOG__LEVEL", "ERROR")
    result = CliRunner().invoke(app, ["collections"])
    assert result.exit_code == 0, result.output
    assert logs.is_json() and logging.getLogger().level == logging.ERROR


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("req-42.a_b", True),
        ("0" * 128, True),
        ("0" * 129, False),
        ("two words", False),
        ("line\r\nlevel=ERROR", False),
        ("", False),
        ("caf\xe9", False),
    ],
)
def test_a_callers_request_id_is_kept_only_when_short_and_printable(sent: str, kept: bool) -> None:
    scope = {"headers": [(b"x-request-id", sent.encode("latin-1"))]}
    request_id = request_id_of(scope)
    assert (request_id == sent) is kept
    assert re.fullmatch(r"[\x21-\x7e]{1,128}", request_id)
