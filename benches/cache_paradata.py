"""Converts public, labelled paraphrase corpora into the pairs format of `hybridfast cache eval`.

Three public sources, each a GitHub repository cloned outside this one (licences and counts
in docs/cache.md). None of it is committed here:

    git clone https://github.com/brmson/dataset-sts /tmp/dataset-sts
    git clone https://github.com/curai/medical-question-pair-dataset /tmp/mqp
    git clone https://github.com/whiskeyromeo/CommunityQuestionAnswering /tmp/semeval-cqa
    python benches/cache_paradata.py /tmp/dataset-sts /tmp/paradata \
        --mqp /tmp/mqp --cqa /tmp/semeval-cqa

writes `calibration.jsonl` (what the verifier is fitted and its thresholds chosen on) and
`heldout.jsonl` (never used for fitting or choosing; only measured), one pair a line:
`{"a": ..., "b": ..., "duplicate": true|false, "source": ...}`. The first text of a pair is
the one stored, the second the one asked.

Labels: MRPC's own binary paraphrase judgement; SemEval STS scores of 4 or more ("mostly
equivalent, only unimportant details differ") are duplicates, anything lower is not (a
score of 3 means important information differs: a cache must not serve that). Medical
Question Pairs: the doctors' label (a rewording with the same intent, or a related question
whose answer would be wrong). SemEval-2016 Task 3 subtask B (Qatar Living forum questions
and the related questions a search engine found for them): "PerfectMatch" is a duplicate,
"Relevant" (covers some aspects) and "Irrelevant" are not.

The splits never share a source question. MRPC train+validation and STS 2012-2015
calibrate; MRPC test and STS 2016 (with its StackExchange question-question set) are held
out. Medical Question Pairs split by the doctor who wrote them: doctors 1-7 calibrate, 8-11
are held out. Qatar Living: the task's training part 2 calibrates, its development set is
held out. STS 2012 MSRpar is skipped (its pairs come from MRPC, whose test half is held
out). SICK is not used: its sentences are systematic rewrites of a few hundred seeds.

Each text is asked once per split (`asked_once`): STS grades some student answers against a
dozen references and the corpora reuse sentences, and one text asked thirty times weighed
thirty times in the fit and the rates with the one outcome (34 copies of one STS student
answer once set how the verifier treated every short question).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

csv.field_size_limit(1 << 24)

STS_DUPLICATE = 4.0
MQP_HELD_OUT_DOCTORS = frozenset({"8", "9", "10", "11"})

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


def mqp(path: Path) -> tuple[list[Pair], list[Pair]]:
    """Medical Question Pairs (`mqp.csv`: doctor, question, rewrite or near miss, label)."""
    calibration: list[Pair] = []
    heldout: list[Pair] = []
    with path.open(encoding="utf-8") as f:
        for doctor, a, b, label in csv.reader(f):
            held = doctor in MQP_HELD_OUT_DOCTORS
            pair = {"a": a, "b": b, "duplicate": label == "1", "source": "mqp"}
            (heldout if held else calibration).append(pair)
    return calibration, heldout


def _clean(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def qatar_living(path: Path, source: str) -> Iterator[Pair]:
    """SemEval-2016 Task 3 subtask B: each original question stored, each related question
    the search engine found for it asked. A question is its body (the subject alone is often
    a word or two); a body that is empty falls back to the subject."""
    for org in ET.parse(path).getroot().iter("OrgQuestion"):
        a = _clean(org.findtext("OrgQBody")) or _clean(org.findtext("OrgQSubject"))
        for rel in org.iter("RelQuestion"):
            b = _clean(rel.findtext("RelQBody")) or _clean(rel.findtext("RelQSubject"))
            label = rel.get("RELQ_RELEVANCE2ORGQ")
            yield {"a": a, "b": b, "duplicate": label == "PerfectMatch", "source": source}


def collect(
    root: Path, mqp_root: Path | None, cqa_root: Path | None
) -> tuple[list[Pair], list[Pair]]:
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
    if mqp_root is not None:
        cal, held = mqp(mqp_root / "mqp.csv")
        calibration += cal
        heldout += held
    if cqa_root is not None:
        data = cqa_root / "Data"
        calibration += qatar_living(
            data / "train/SemEval2016-Task3-CQA-QL-train-part2.xml", "qatarliving-train2"
        )
        heldout += qatar_living(data / "dev/SemEval2016-Task3-CQA-QL-dev.xml", "qatarliving-dev")
    return calibration, heldout


def corpus(source: str) -> str:
    """The corpus a pair's `source` names (`sts2016-...` is STS, `mrpc-test` is MRPC)."""
    name = source.split("-")[0]
    return "sts" if name.startswith("sts") else name


def asked_once(pairs: list[Pair]) -> list[Pair]:
    """The first pair of each asked text: STS grades some student answers against a dozen
    references, and MRPC and the forums reuse sentences, so a text asked thirty times
    would weigh thirty times in the rates (and the fit) with the one outcome."""
    seen: set[str] = set()
    kept = []
    for p in pairs:
        asked = str(p["b"]).strip()
        if asked not in seen:
            seen.add(asked)
            kept.append(p)
    return kept


def write(pairs: list[Pair], path: Path) -> None:
    with path.open("w", encoding="utf-8") as f:
        for p in pairs:
            if str(p["a"]).strip() and str(p["b"]).strip():
                f.write(json.dumps(p, ensure_ascii=False) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sts", type=Path, help="a clone of brmson/dataset-sts")
    ap.add_argument("out", type=Path)
    ap.add_argument("--mqp", type=Path, help="a clone of curai/medical-question-pair-dataset")
    ap.add_argument("--cqa", type=Path, help="a clone of whiskeyromeo/CommunityQuestionAnswering")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    calibration, heldout = (asked_once(p) for p in collect(args.sts, args.mqp, args.cqa))
    write(calibration, args.out / "calibration.jsonl")
    write(heldout, args.out / "heldout.jsonl")
    # Each held-out corpus alone too, so that `cache eval` measures it in its own cache.
    for part in sorted({corpus(str(p["source"])) for p in heldout}):
        write(
            [p for p in heldout if corpus(str(p["source"])) == part],
            args.out / f"heldout-{part}.jsonl",
        )
    for name, pairs in (("calibration", calibration), ("heldout", heldout)):
        by_source: dict[str, list[int]] = {}
        for p in pairs:
            part = corpus(str(p["source"]))
            counts = by_source.setdefault(part, [0, 0])
            counts[0] += 1
            counts[1] += int(bool(p["duplicate"]))
        dup = sum(1 for p in pairs if p["duplicate"])
        parts = ", ".join(f"{k} {n} ({d} dup)" for k, (n, d) in sorted(by_source.items()))
        print(f"{name}: {len(pairs)} pairs, {dup} duplicates: {parts}")


if __name__ == "__main__":
    main()
