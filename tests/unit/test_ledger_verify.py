"""`hybridfast ledger verify` and the start-up check: a flipped byte in the write-ahead log
used to drop every record after it without a word (`PRAGMA quick_check` does not see it)."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from pathlib import Path

import pytest

from hybridfast.cli import main
from hybridfast.cli.serve import _check_ledger
from hybridfast.config import parse_config
from hybridfast.ledger.verify import check_wal, quick_check, startup_check

PAGE = 4096


def ledger_with_wal(tmp_path: Path, rows: int = 200) -> Path:
    """A copy of a WAL-mode database taken while its writer is open: the log holds every
    transaction (as after `serve` is killed)."""
    live = tmp_path / "live"
    live.mkdir()
    db = sqlite3.connect(live / "ledger.db")
    db.execute(f"PRAGMA page_size={PAGE}")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE entries (id INTEGER PRIMARY KEY, request_id TEXT)")
    for i in range(rows):
        db.execute("INSERT INTO entries (request_id) VALUES (?)", (f"req-{i}" * 100,))
        db.commit()
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(live / "ledger.db", copy / "ledger.db")
    shutil.copy(live / "ledger.db-wal", copy / "ledger.db-wal")
    db.close()
    return copy / "ledger.db"


def flip_a_byte(db: Path, frame: int) -> None:
    wal = Path(f"{db}-wal")
    data = bytearray(wal.read_bytes())
    data[32 + frame * (24 + PAGE) + 24 + 100] ^= 0x40
    wal.write_bytes(bytes(data))


def config_file(tmp_path: Path, db: Path) -> Path:
    path = tmp_path / "hybridfast.yaml"
    path.write_text(f"ledger:\n  backend: sqlite\n  path: {db}\n")
    return path


def test_a_sound_log_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = ledger_with_wal(tmp_path)
    report = check_wal(db)
    assert report.problems == []
    assert report.valid_frames == report.frames > 100
    assert main(["ledger", "verify", "--config", str(config_file(tmp_path, db))]) == 0
    assert "ok:" in capsys.readouterr().out


def test_a_flipped_byte_in_the_log_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ledger_with_wal(tmp_path)
    flip_a_byte(db, 50)
    report = check_wal(db)
    assert report.valid_frames <= 50
    assert report.lost_frames > 100
    assert "frame 51 fails its checksum" in report.problems[0]
    # What SQLite makes of it: the rows after the damage are gone, and quick_check is happy.
    assert quick_check(db) == []
    kept = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    assert kept.execute("SELECT count(*) FROM entries").fetchone()[0] < 200
    kept.close()
    assert main(["ledger", "verify", "--config", str(config_file(tmp_path, db))]) == 1
    assert "DAMAGED" in capsys.readouterr().err


def test_a_torn_last_frame_is_not_damage(tmp_path: Path) -> None:
    """The last transaction cut short by a crash was never acknowledged."""
    db = ledger_with_wal(tmp_path)
    frames = check_wal(db).frames
    flip_a_byte(db, frames - 1)
    assert check_wal(db).problems == []


def test_start_up_logs_damage_loudly_and_keeps_a_copy_of_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = ledger_with_wal(tmp_path)
    flip_a_byte(db, 10)
    config = parse_config(f"ledger: {{path: '{db}'}}\n", "x.yaml", {}).config
    with caplog.at_level(logging.ERROR, logger="hybridfast.ledger"):
        _check_ledger(config)
    assert "LEDGER DAMAGED" in caplog.text
    copies = list(db.parent.glob("ledger.db-wal.damaged-*"))
    assert len(copies) == 1
    assert copies[0].read_bytes() == Path(f"{db}-wal").read_bytes()


def test_a_new_ledger_has_nothing_to_check(tmp_path: Path) -> None:
    assert startup_check(tmp_path / "none.db") == []


def test_a_damaged_database_file_fails_quick_check(tmp_path: Path) -> None:
    db = tmp_path / "plain.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("CREATE INDEX tv ON t (v)")
    conn.executemany("INSERT INTO t (v) VALUES (?)", [(f"v{i}" * 50,) for i in range(2000)])
    conn.commit()
    conn.close()
    data = bytearray(db.read_bytes())
    for page in range(2, 6):  # b-tree page headers: the page type and cell counts
        for offset in range(page * 4096, page * 4096 + 8):
            data[offset] ^= 0xFF
    db.write_bytes(bytes(data))
    assert quick_check(db) != []
