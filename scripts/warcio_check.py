#!/usr/bin/env python3
"""Checks WARC files that rxla wrote with warcio (pip install warcio): `warcio check`
verifies every WARC-Block-Digest and WARC-Payload-Digest, then every record is read; with a
`sent.json` beside the WARC (URI -> sha256 of the body the server sent, written by the crawl
replay test), each response body warcio reads must hash to what was sent.

    RXLA_KEEP_CRAWL=/tmp/rxla-crawl cargo test --release -p data --test crawl_replay
    python3 scripts/warcio_check.py /tmp/rxla-crawl/*.warc.gz
"""
import collections
import hashlib
import json
import os
import subprocess
import sys

from warcio.archiveiterator import ArchiveIterator


def check(path):
    r = subprocess.run([sys.executable, "-m", "warcio.cli", "check", "-v", path],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-3000:])
        return [f"warcio check failed (exit {r.returncode})"]
    sent_path = os.path.join(os.path.dirname(path), "sent.json")
    sent = json.load(open(sent_path)) if os.path.exists(sent_path) else None
    types = collections.Counter()
    errors, matched = [], set()
    with open(path, "rb") as f:
        for rec in ArchiveIterator(f, check_digests="raise"):
            types[rec.rec_type] += 1
            body = rec.content_stream().read()
            if rec.rec_type == "response" and sent is not None:
                uri = rec.rec_headers.get_header("WARC-Target-URI")
                want = sent.get(uri)
                if want is None:
                    errors.append(f"{uri}: in the WARC but the server sent no page")
                elif hashlib.sha256(body).hexdigest() != want:
                    errors.append(f"{uri}: body differs from what the server sent")
                elif uri in matched or uri in SEEN:
                    errors.append(f"{uri}: a second response")
                else:
                    matched.add(uri)
    SEEN.update(matched)
    print(f"{path}: warcio read {sum(types.values())} records {dict(types)}; digests ok; "
          + (f"{len(matched)} bodies equal to what the server sent"
             if sent is not None else "no sent.json to compare bodies with"))
    if sent is not None:
        SENT.update(sent)
    return errors


SEEN, SENT = set(), {}


def main(paths):
    if not paths:
        print(__doc__)
        return 2
    errors = [e for p in paths for e in check(p)]
    if SENT:
        missing = set(SENT) - SEEN
        print(f"all files: {len(SEEN)}/{len(SENT)} pages the server sent are in the WARCs")
        errors += [f"{u}: sent but in no WARC" for u in sorted(missing)]
    for e in errors:
        print("ERROR:", e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
