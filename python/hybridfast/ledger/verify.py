"""Integrity checks of the SQLite ledger: its write-ahead log and its database file.

SQLite trusts a WAL frame only while the running checksum holds; at the first frame that
fails, it silently drops that frame and every one after it, so one flipped byte in the WAL
can lose thousands of acknowledged records without an error anywhere. `check_wal` reads the
log the way SQLite will and reports frames that would be dropped although later, intact
frames follow them (a torn last write after a crash is not reported: it was never
acknowledged). It must run before any SQLite connection opens the file, because opening it
replays the log and the first checkpoint then deletes what was dropped; `protect_wal`
keeps a copy for recovery by hand.

`quick_check` runs `PRAGMA quick_check` on the database read-only.

Python's `sqlite3` is used only while no native connection to the file is open in this
process (at start, before the ledger opens, or in the `ledger verify` command's own
process): two SQLite libraries in one process would drop each other's POSIX locks.
"""

from __future__ import annotations

import shutil
import sqlite3
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

_WAL_MAGIC = (0x377F0682, 0x377F0683)  # checksums little-endian, big-endian
_WAL_HEADER = 32
_FRAME_HEADER = 24


@dataclass
class WalReport:
    """What SQLite will make of a WAL file."""

    path: str
    frames: int = 0  # complete frames in the file
    valid_frames: int = 0  # frames SQLite replays (up to the last valid commit)
    lost_frames: int = 0  # intact-looking frames after a bad one: dropped although written
    problems: list[str] = field(default_factory=list)


def _checksum(data: bytes, s0: int, s1: int, big_endian: bool) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    mask = 0xFFFFFFFF
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & mask
        s1 = (s1 + words[i + 1] + s0) & mask
    return s0, s1


def check_wal(db_path: str | Path) -> WalReport:
    """Reads `<db>-wal` (if any) frame by frame, as SQLite's recovery does."""
    wal = Path(f"{db_path}-wal")
    report = WalReport(str(wal))
    try:
        data = wal.read_bytes()
    except FileNotFoundError:
        return report
    if len(data) < _WAL_HEADER:
        return report
    magic, _version, page_size, _seq, salt1, salt2, c0, c1 = struct.unpack(">8I", data[:32])
    if magic not in _WAL_MAGIC:
        report.problems.append(f"{wal}: not a SQLite write-ahead log (bad magic number)")
        return report
    big = magic == _WAL_MAGIC[1]
    frame_size = _FRAME_HEADER + page_size
    report.frames = (len(data) - _WAL_HEADER) // frame_size
    s0, s1 = _checksum(data[:24], 0, 0, big)
    header_ok = (s0, s1) == (c0, c1)
    broken_at: int | None = None if header_ok else 0
    last_commit = 0
    offset = _WAL_HEADER
    for index in range(report.frames):
        head = data[offset : offset + _FRAME_HEADER]
        _page, commit_size, f_salt1, f_salt2, f0, f1 = struct.unpack(">6I", head)
        if (f_salt1, f_salt2) != (salt1, salt2):
            break  # frames of an earlier generation of the log: not part of it
        if broken_at is None:
            s0, s1 = _checksum(head[:8], s0, s1, big)
            s0, s1 = _checksum(data[offset + _FRAME_HEADER : offset + frame_size], s0, s1, big)
            if (s0, s1) != (f0, f1):
                broken_at = index
            elif commit_size:
                last_commit = index + 1
        elif commit_size:
            report.lost_frames = index + 1 - broken_at
        offset += frame_size
    report.valid_frames = last_commit
    if broken_at is not None and report.lost_frames:
        where = "the log's header" if not header_ok else f"frame {broken_at + 1}"
        report.problems.append(
            f"{wal}: {where} fails its checksum; SQLite will drop it and "
            f"{report.lost_frames} committed frame(s) written after it "
            f"(only {report.valid_frames} of {report.frames} frames are readable)"
        )
    return report


def protect_wal(db_path: str | Path) -> str:
    """Copies a damaged log aside before SQLite replays it; returns the copy's path."""
    copy = f"{db_path}-wal.damaged-{int(time.time())}"
    shutil.copy2(f"{db_path}-wal", copy)
    return copy


def quick_check(db_path: str | Path) -> list[str]:
    """`PRAGMA quick_check` on the database, read-only; [] when it is sound."""
    uri = f"{Path(db_path).resolve().as_uri()}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        return [f"{db_path}: cannot open the ledger ({exc})"]
    try:
        rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return [f"{db_path}: {exc}"]
    finally:
        db.close()
    found = [str(r[0]) for r in rows]
    return [] if found == ["ok"] else [f"{db_path}: {line}" for line in found]


def verify(db_path: str | Path) -> tuple[WalReport, list[str]]:
    """Both checks, the log first (reading the database replays the log)."""
    return check_wal(db_path), quick_check(db_path)


def startup_check(db_path: str | Path) -> list[str]:
    """What `serve` logs before it opens the ledger: problems, and where a damaged log was
    copied. Empty for a sound (or new) ledger."""
    path = Path(db_path)
    if not path.exists():
        return []
    wal = check_wal(path)
    messages = list(wal.problems)
    if wal.problems:
        messages.append(f"a copy of the damaged log is at {protect_wal(path)}")
    messages += quick_check(path)
    return messages
