#!/usr/bin/env python3
"""Near-duplicate dedup side by side: `rxla data dedup` vs datatrove's MinHash pipeline
(signatures -> buckets -> clusters -> filter) on one corpus, same settings (word 5-grams,
20 bands x 5 rows). The corpus: the Wikipedia dump's articles (gensim's, through `rxla data
extract`) and near-copies of each made with word-edit rates from 0.2% to 20%. Prints one
table: documents removed, precision/recall of the removed documents against the truth
(a document is a duplicate when its exact word-5-gram Jaccard with a smaller id is >= 0.8),
wall seconds on one core, docs/s and MB/s.

  python3 -m venv /tmp/venv && /tmp/venv/bin/pip install datatrove==0.10.1 zstandard
  cargo build --release && /tmp/venv/bin/python scripts/dedup_bench.py [COPIES]
"""
import glob, io, json, os, random, re, subprocess, sys, tempfile, time

import zstandard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RXLA = os.path.join(ROOT, "target", "release", "rxla")
RATES = [0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2]


def read_zst_jsonl(path):
    with open(path, "rb") as f:
        raw = zstandard.ZstdDecompressor().stream_reader(f).read()
    return [json.loads(l) for l in raw.decode().splitlines() if l.strip()]


def edit(words, rate, rng):
    out = []
    for w in words:
        if rng.random() < rate:
            k = rng.randrange(3)
            if k == 0:
                out.append(f"x{rng.getrandbits(32)}")
            elif k == 2:
                out += [w, f"y{rng.getrandbits(32)}"]
        else:
            out.append(w)
    return " ".join(out)


def shingles(text, n=5):
    w = [t.strip(".,;:!?\"'()[]{}").lower() for t in text.split()]
    w = [t for t in w if t]
    return {" ".join(w[i:i + n]) for i in range(max(1, len(w) - n + 1))}


def truth(docs):
    """Ids that have J >= 0.8 with a document of smaller id (copies of one article only:
    different articles are far apart)."""
    by_group = {}
    for d in docs:
        by_group.setdefault(d["group"], []).append(d)
    dup = set()
    for group in by_group.values():
        sh = {d["id"]: shingles(d["text"]) for d in group}
        ids = sorted(sh)
        for i, a in enumerate(ids):
            for b in ids[i + 1:]:
                inter = len(sh[a] & sh[b])
                if inter / max(1, len(sh[a] | sh[b])) >= 0.8:
                    dup.add(b)
    return dup


def score(removed, dup):
    tp = len(removed & dup)
    return tp / max(1, len(removed)), tp / max(1, len(dup))


def run_rxla(tmp, docs):
    work = os.path.join(tmp, "rxla")
    fdir = os.path.join(work, "filter")
    os.makedirs(fdir)
    path = os.path.join(fdir, "corpus.jsonl.zst")
    body = "".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in docs)
    with open(path, "wb") as f:
        f.write(zstandard.ZstdCompressor().compress(body.encode()))
    report = {"stage": "filter", "docs_in": len(docs), "docs_out": len(docs), "bytes_in": 0,
              "bytes_out": 0, "rejects": {}, "duplicates_removed": 0, "tasks_run": 1,
              "tasks_skipped": 0, "seconds": 0.0, "mb_per_s": 0.0, "counts": {}}
    with open(path + ".report.json", "w") as f:
        json.dump(report, f)
    cfg = os.path.join(tmp, "rxla.toml")
    with open(cfg, "w") as f:
        f.write(f'work_dir = "{work}"\n[dedup]\nexact = false\nurl = false\nthreshold = 0.8\n')
    t0 = time.perf_counter()
    subprocess.run([RXLA, "data", "dedup", "--config", cfg], check=True, capture_output=True)
    secs = time.perf_counter() - t0
    kept = set()
    for p in glob.glob(os.path.join(work, "dedup", "*.jsonl.zst")):
        kept |= {d["id"] for d in read_zst_jsonl(p)}
    return {d["id"] for d in docs} - kept, secs


def run_datatrove(tmp, docs):
    from datatrove.executor.local import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster,
                                          MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    base = os.path.join(tmp, "dt")
    inp = os.path.join(base, "in")
    os.makedirs(inp)
    with open(os.path.join(inp, "corpus.jsonl"), "w") as f:
        for d in docs:
            f.write(json.dumps({"id": d["id"], "text": d["text"]}) + "\n")
    # Its default shingle hash (sha1, 64 bits): its xxhash option fails on str in 0.10.1.
    cfg = MinhashConfig(n_grams=5, num_buckets=20, hashes_per_bucket=5,
                        hash_config=HashConfig(precision=64, hash_fc="sha1"))
    reader = lambda: JsonlReader(inp)
    stages = [
        [reader(), MinhashDedupSignature(output_folder=f"{base}/sigs", config=cfg)],
        [MinhashDedupBuckets(input_folder=f"{base}/sigs", output_folder=f"{base}/buckets", config=cfg)],
        [MinhashDedupCluster(input_folder=f"{base}/buckets", output_folder=f"{base}/remove_ids", config=cfg)],
        [reader(), MinhashDedupFilter(input_folder=f"{base}/remove_ids"),
         JsonlWriter(f"{base}/out", compression=None)],
    ]
    t0 = time.perf_counter()
    for i, pipe in enumerate(stages):
        tasks = cfg.num_buckets if i == 1 else 1
        LocalPipelineExecutor(pipeline=pipe, tasks=tasks, workers=1,
                              logging_dir=f"{base}/logs{i}").run()
    secs = time.perf_counter() - t0
    kept = set()
    for p in glob.glob(f"{base}/out/*.jsonl"):
        with open(p) as f:
            kept |= {json.loads(l)["id"] for l in f if l.strip()}
    return {d["id"] for d in docs} - kept, secs


def main():
    copies = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "wiki.toml")
        with open(cfg, "w") as f:
            f.write(f'work_dir = "{tmp}/wiki"\n[extract]\ninputs = ["package:wiki"]\n')
        subprocess.run([RXLA, "data", "extract", "--config", cfg], check=True, capture_output=True)
        arts = []
        for p in sorted(glob.glob(f"{tmp}/wiki/extract/*.jsonl.zst")):
            arts += [d for d in read_zst_jsonl(p) if len(d["text"].split()) >= 100]
        docs = []
        for g, a in enumerate(arts):
            words = a["text"].split()
            docs.append({"id": f"{g:04d}", "text": a["text"], "group": g})
            for c in range(copies):
                for r in RATES:
                    docs.append({"id": f"{g:04d}~{c}~{r:.3f}", "text": edit(words, r, rng), "group": g})
        dup = truth(docs)
        mb = sum(len(d["text"].encode()) for d in docs) / 1e6
        print(f"{len(docs)} documents ({len(arts)} articles, {copies} x {len(RATES)} near-copies each), "
              f"{mb:.1f} MB, {len(dup)} true duplicates at J >= 0.8")
        print("| dedup | removed | precision | recall | seconds (1 core) | docs/s | MB/s |")
        print("|---|---|---|---|---|---|---|")
        for label, fn in (("datatrove 0.10.1 MinHash", run_datatrove), ("rxla data dedup", run_rxla)):
            removed, secs = fn(tmp, docs)
            p, r = score(removed, dup)
            print(f"| {label} | {len(removed)} | {p:.4f} | {r:.4f} | {secs:.2f} | "
                  f"{len(docs) / secs:.0f} | {mb / secs:.2f} |")


if __name__ == "__main__":
    main()
