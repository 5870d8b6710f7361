"""Converts public, labelled paraphrase corpora into the pairs format of `hybridfast cache eval`.

The corpora come from https://github.com/brmson/dataset-sts (a collection of the original
releases, each with its own licence: see docs/cache.md). None of it is committed here:

    git clone https://github.com/brmson/dataset-sts /tmp/dataset-sts
    python benches/cache_paradata.py /tmp/dataset-sts /tmp/paradata

writes `calibration.jsonl` (what the verifier is fitted and its thresholds chosen on) and
`heldout.jsonl` (never used for fitting or choosing; only measured), one pair a line:
`{"a": ..., "b": ..., "duplicate": true|false, "source": ...}`.

Labels: MRPC's own binary paraphrase judgement; SemEval STS scores of 4 or more ("mostly
equivalent, only unimportant details differ") are duplicates, anything lower is not (a
score of 3 means important information differs: a cache must not serve that).

The split is by release: MRPC train+validation and STS 2012-2015 calibrate; MRPC test and
STS 2016 (with its StackExchange question-question set) are held out. STS 2012 MSRpar is
skipped (its pairs come from MRPC, whose test half is held out). SICK, also in that
collection, is not used: its sentences are systematic rewrites of a few hundred seeds, so
one index holds dozens of near-identical sentences and says little about real traffic.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path

csv.field_size_limit(1 << 24)

STS_DUPLICATE = 4.0

Pair = dict[str, object]


def mrpc(path: Path, source: str) -> Iterator[Pair]:
    with path.open(encoding="utf-8-sig") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(rows)  # header
        for row in rows:
            if len(row) == 5:
                yield {"a": row[3], "b": row[4], "duplicate": row[0] == "1", "source": source}


def sts(path: Path, source: str) -> Iterator[Pair]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or not parts[0].strip():
                continue  # pairs without a gold score
            score = float(parts[0])
            yield {
                "a": parts[1],
                "b": parts[2],
                "duplicate": score >= STS_DUPLICATE,
                "source": source,
            }


def collect(root: Path) -> tuple[list[Pair], list[Pair]]:
    msr = root / "data/para/msr"
    sem = root / "data/sts/semeval-sts"
    calibration: list[Pair] = [
        *mrpc(msr / "msr-para-train.tsv", "mrpc-train"),
        *mrpc(msr / "msr-para-val.tsv", "mrpc-val"),
    ]
    for year in ("2012", "2013", "2014", "2015"):
        for f in sorted((sem / year).glob("*.tsv")):
            if "MSRpar" not in f.name:
                calibration.extend(sts(f, f"sts{year}-{f.stem}"))
    heldout: list[Pair] = [*mrpc(msr / "msr-para-test.tsv", "mrpc-test")]
    for f in sorted((sem / "2016").glob("*.tsv")):
        heldout.extend(sts(f, f"sts2016-{f.stem}"))
    return calibration, heldout


def write(pairs: list[Pair], path: Path) -> None:
    with path.open("w", encoding="utf-8") as f:
        for p in pairs:
            if str(p["a"]).strip() and str(p["b"]).strip():
                f.write(json.dumps(p, ensure_ascii=False) + "\n")


def main() -> None:
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    calibration, heldout = collect(root)
    write(calibration, out / "calibration.jsonl")
    write(heldout, out / "heldout.jsonl")
    for name, pairs in (("calibration", calibration), ("heldout", heldout)):
        dup = sum(1 for p in pairs if p["duplicate"])
        print(f"{name}: {len(pairs)} pairs, {dup} duplicates")


if __name__ == "__main__":
    main()
