"""`connector erase` and `[store] keep` from the command line: what the operator sees. The
store-level rules (what goes, in which tenant, in how small transactions) are in the store
contract suite."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from connector.archive import copy_of
from connector.cli import EXIT_CONFIG, EXIT_OK, main
from connector.config import load_config
from connector.housekeeping import tidy
from connector.store import open_store
from tests.helpers import drop_config, dump

EVENTS = [{"kind": "events", "pattern": "*.csv", "event_name": "buy"}]


def test_erase_says_what_went_and_which_archive_copies_still_hold_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = drop_config(tmp_path, files=EVENTS, min_age="0s", tenant="acme")
    (tmp_path / "inbox" / "a.csv").write_text("identifier\nada@example.com\nbob@example.com\n")
    (tmp_path / "inbox" / "b.csv").write_text("identifier\nbob@example.com\n")
    assert main(["--config", str(config), "once"]) == EXIT_OK
    files = {f["path"].rsplit("/", 1)[1]: f["sha256"] for f in dump(config, "files", capsys)}
    capsys.readouterr()

    argv = ["--config", str(config), "erase", "--tenant", "acme", "ada@example.com"]
    assert main([*argv, "--reason", "erasure request #12"]) == EXIT_OK

    out = capsys.readouterr().out.splitlines()
    archive = tmp_path / "archive"
    assert out == [
        "erased 1 contact(s) and 1 event(s) of tenant acme; recorded in the audit trail"
        " (`connector dump audit`)",
        "archive copies that still hold them (the store cannot edit them):",
        f"  {copy_of(files['a.csv'], archive)}",
    ]
    assert [e["identifier"] for e in dump(config, "events", capsys)] == [
        "bob@example.com",
        "bob@example.com",
    ]
    [audit] = dump(config, "audit", capsys)
    assert audit["action"] == "erase" and audit["tenant"] == "acme"
    assert audit["reason"] == "erasure request #12" and audit["sha256"] is None
    assert "ada" not in json.dumps(audit)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["erase", "u1", "--reason", "x"], "--tenant"),
        (["erase", "--tenant", "acme", "u1"], "--reason"),
        (["erase", "--tenant", "acme", "u1", "--reason", " "], "say why"),
    ],
)
def test_erase_wants_a_tenant_and_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    config = drop_config(tmp_path, files=EVENTS)
    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(config), *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_housekeeping_applies_store_keep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With `[store] keep`, housekeeping (hourly in `run`, at each `once`) removes the
    records of files final longer ago; the ledger keeps them."""
    config_path = drop_config(tmp_path, files=EVENTS, min_age="0s")
    config_path.write_text(config_path.read_text().replace("[store]\n", '[store]\nkeep = "1d"\n'))
    (tmp_path / "inbox" / "a.csv").write_text("identifier\nu1\n")
    assert main(["--config", str(config_path), "once"]) == EXIT_OK
    config = load_config(config_path)
    with open_store(config.store) as store:
        store.query("UPDATE files SET processed_at = '2000-01-01T00:00:00Z'")
        tidy(config, store)
    assert dump(config_path, "events", capsys) == []
    assert [f["status"] for f in dump(config_path, "files", capsys)] == ["ingested"]
    with open_store(config.store) as store:
        tidy(config, store)  # (nothing more to do)
        assert store.prune(86_400.0, time.time()).files == 0


def test_a_keep_of_zero_is_refused_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = drop_config(tmp_path, files=EVENTS)
    config.write_text(config.read_text().replace("[store]\n", '[store]\nkeep = "0s"\n', 1))
    assert main(["--config", str(config), "once"]) == EXIT_CONFIG
    assert "store.keep" in capsys.readouterr().err
