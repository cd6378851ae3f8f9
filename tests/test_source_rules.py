"""A source's optional reading rules, off by default so that the documented CSV rules
stay the default: times without an offset (`timezone`, `timestamp_formats`), a decimal
comma (`decimal`), and back-dated events refused (`max_event_age`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from connector.cli import main
from connector.config import load_config
from connector.errors import ConfigError
from tests.helpers import dump, local_source, write_config


def _config(root: Path, **settings: Any) -> Path:
    """A source "shop" on ``root/in`` reading events named "buy", with these settings."""
    files = [{"kind": "events", "pattern": "*.csv", "event_name": "buy"}]
    return write_config(root, local_source(root, "shop", folder="in", files=files, **settings))


def _import(tmp_path: Path, config: Path, text: str, *flags: str) -> int:
    path = tmp_path / "events.csv"
    path.write_text(text)
    argv = ["--config", str(config), "import", str(path), "--source", "shop", "--kind", "events"]
    return main([*argv, *flags])


def test_times_without_an_offset_are_read_in_the_sources_zone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Brussels is UTC+2 in summer and UTC+1 in winter; ISO times without an offset and the
    source's formats are read there; a time with an offset keeps it; anything else is
    still rejected, saying which forms were tried."""
    config = _config(tmp_path, timezone="Europe/Brussels", timestamp_formats=["%d/%m/%Y %H:%M"])
    text = (
        "identifier,timestamp\n"
        "u1,2023-10-02T15:08:41\n"  # summer: 13:08:41Z
        "u2,2023-12-02 15:08:41\n"  # winter: 14:08:41Z
        "u3,02/10/2023 15:08\n"
        "u4,2023-10-02T15:08:41+00:00\n"
        "u5,1696252121\n"
        "u6,2 Oct 2023\n"
    )
    assert _import(tmp_path, config, text) == 0
    stamps = {e["identifier"]: e["timestamp"] for e in dump(config, "events", capsys)}
    assert stamps == {
        "u1": 1696252121,
        "u2": 1701526121,
        "u3": 1696252080,
        "u4": 1696259321,
        "u5": 1696252121,
    }
    assert main(["--config", str(config), "dump", "rejects"]) == 0
    [reject] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (reject["line"], reject["reason"]) == (
        7,
        "timestamp '2 Oct 2023' is neither Unix seconds, an ISO 8601 date-time nor of the"
        " source's timestamp_formats",
    )


def test_without_a_zone_a_time_without_offset_is_still_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    assert _import(tmp_path, config, "identifier,timestamp\nu1,2023-10-02T15:08:41\n") == 0
    assert dump(config, "events", capsys) == []


def test_a_decimal_comma_is_read_as_a_number_when_the_source_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With decimal = ",": "12,50" is 12.5 and "-0,5" is -0.5; "1,234,5" and "a,b" stay
    text; a point still reads as one. Without it, "12,50" is the string it was."""
    text = 'identifier,total,note\nu1,"12,50","1,234,5"\nu2,"-0,5","a,b"\nu3,7.25,x\n'
    config = _config(tmp_path, decimal=",", delimiter=",")
    assert _import(tmp_path, config, text) == 0
    data = {e["identifier"]: e["data"] for e in dump(config, "events", capsys)}
    assert data == {
        "u1": {"total": 12.5, "note": "1,234,5"},
        "u2": {"total": -0.5, "note": "a,b"},
        "u3": {"total": 7.25, "note": "x"},
    }
    plain = tmp_path / "plain"
    plain.mkdir()
    config = _config(plain)
    assert _import(plain, config, text) == 0
    assert dump(config, "events", capsys)[0]["data"] == {"total": "12,50", "note": "1,234,5"}


def test_unix_seconds_may_have_a_decimal_comma_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With decimal = ",", "1696252121,9" is a timestamp (truncated) as "1696252121.9" is;
    without it, the row is rejected as before."""
    text = 'identifier,timestamp\nu1,"1696252121,9"\n'
    config = _config(tmp_path, decimal=",", delimiter=",")
    assert _import(tmp_path, config, text) == 0
    assert [e["timestamp"] for e in dump(config, "events", capsys)] == [1696252121]
    plain = tmp_path / "plain"
    plain.mkdir()
    config = _config(plain, delimiter=",")
    assert _import(plain, config, text) == 0
    assert dump(config, "events", capsys) == []


def test_events_older_than_max_event_age_are_rejected_and_counted_by_a_dry_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An event 31 days old is rejected with a reason; one a day old, one with no
    timestamp (the processing time) and one in the future are kept; a dry run says how
    many rows it would reject for their age."""
    config = _config(tmp_path, max_event_age="30d")
    now = int(time.time())
    text = (
        f"identifier,timestamp\nu1,{now - 31 * 86400}\nu2,{now - 86400}\nu3,\n"
        f"u4,{now + 3600}\nu5,2001-01-01T00:00:00Z\n"
    )
    assert _import(tmp_path, config, text, "--dry-run") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [
        f'  line 2: timestamp "{now - 31 * 86400}" is older than max_event_age (30d)',
        '  line 6: timestamp "2001-01-01T00:00:00Z" is older than max_event_age (30d)',
        "  2 of the rejected rows: events older than max_event_age",
    ]
    assert _import(tmp_path, config, text) == 0
    assert [e["identifier"] for e in dump(config, "events", capsys)] == ["u2", "u3", "u4"]


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"timezone": "Europe/Brusels"}, "unknown time zone 'Europe/Brusels'"),
        ({"timestamp_formats": ["%d/%m/%Y"]}, "timestamp_formats without %z read times"),
        ({"timestamp_formats": ["%d/%m/%Y %%z"]}, "timestamp_formats without %z read times"),
        ({"timezone": "UTC", "timestamp_formats": ["%H:%M %Z"]}, "%Z reads a zone's name"),
        ({"timezone": "UTC", "timestamp_formats": ["dd/mm/yyyy"]}, "has no strptime directive"),
        ({"decimal": ";"}, "decimal"),
        ({"max_event_age": "0s"}, "max_event_age"),
    ],
)
def test_bad_reading_rules_fail_at_start_up_naming_the_key(
    tmp_path: Path, settings: dict[str, Any], says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        load_config(_config(tmp_path, **settings))


def test_a_format_of_digits_alone_comes_before_unix_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With timestamp_formats = ["%Y%m%d"], 20231002 is that day (not 20,231,002 seconds
    after 1970); a cell no format reads is still read as Unix seconds."""
    config = _config(tmp_path, timezone="UTC", timestamp_formats=["%Y%m%d%H%M", "%Y%m%d"])
    text = "identifier,timestamp\nu1,20231002\nu2,202310021508\nu3,1696252121\n"
    assert _import(tmp_path, config, text) == 0
    stamps = {e["identifier"]: e["timestamp"] for e in dump(config, "events", capsys)}
    assert stamps == {"u1": 1696204800, "u2": 1696259280, "u3": 1696252121}


def test_max_event_age_counts_from_the_time_the_rules_give(tmp_path: Path) -> None:
    """A file's age limit is counted from its processing time, fixed once: a replay counts
    from when the file was first taken, not from the replay's own time."""
    from connector.csvrules.reader import open_scanned
    from connector.csvrules.records import FileParser
    from connector.csvrules.rules import FileRules

    path = tmp_path / "e.csv"
    path.write_text("identifier,name,timestamp\nu1,buy,1000000\nu2,buy,1086400\n")
    day = 86_400
    rules = FileRules(kind="events", max_event_age=day, max_event_age_text="1d")
    for taken, rejected in ((1_086_400 + day // 2, [2]), (1_086_400 + 2 * day, [2, 3])):
        with open_scanned(path) as raw:
            parser = FileParser(raw, rules.with_age_counted_from(taken))
            lines = [line for b in parser.batches(10) for line, _, _ in b.rejects]
        assert lines == rejected
