"""Build compress/data/wiki.jsonl.gz from the Wikipedia sample in gensim's test data.

gensim ships `enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2`: 206 pages of
which 100 are real articles (the rest redirects). Each article's wikitext is stripped of markup
(gensim's filter_wiki, then bold/italic quotes and heading marks), cut to 20,000 characters, and
assigned to `train` (calibration) or `test` (evaluation) by a hash of its title, so evaluation text
is never calibration text. Wikipedia text is CC BY-SA.

    python benchmarks/prepare/build_wiki_dataset.py compress/data/wiki.jsonl.gz
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import re
import sys
from pathlib import Path

MAX_CHARS = 20_000


def clean(text: str) -> str:
    from gensim.corpora.wikicorpus import filter_wiki

    text = filter_wiki(text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"^=+\s*(.*?)\s*=+\s*$", r"\1", text, flags=re.M)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\n\s*\n+", "\n\n", text)
    return text.strip()


def main(out: Path) -> None:
    from gensim.corpora.wikicorpus import extract_pages
    from gensim.test.utils import datapath

    source = datapath("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    rows = []
    with bz2.open(source) as f:
        for title, raw, _ in extract_pages(f):
            if raw.lstrip().upper().startswith("#REDIRECT"):
                continue
            text = clean(raw)
            if len(text) < 2000:
                continue
            split = "train" if int(hashlib.sha256(title.encode()).hexdigest(), 16) % 2 == 0 else "test"
            rows.append({"title": title, "text": text[:MAX_CHARS], "split": split})
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    with gzip.GzipFile(out, "wb", compresslevel=9, mtime=0) as f:
        f.write(payload)
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "test")}
    print(f"{out}: {len(rows)} articles {counts}, {sum(len(r['text']) for r in rows)} characters")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
