#!/usr/bin/env python3
"""The run `rxla train --config C` makes, trained again by HF transformers' BertForPreTraining:
same step-0 weights, same batches, same optimizer and schedule, same held-out examples.

  rxla batches --config C --steps N --out DIR      # batches, held-out examples, init (HF layout)
  python3 scripts/bert_hf_train.py DIR [--rxla-run RUN] [--threads 2]

DIR/rxla_config.json (written by `rxla batches`) gives the optimizer, schedule, steps and eval
cadence. Mirrors rxla's trainer: AdamW (decoupled decay on tensors of rank >= 2 only), global
gradient-norm clipping, lr(step s) = lr * (s+1)/warmup during warmup then linear (or cosine) to
min_lr_ratio; eval metrics are per-example means over masked positions, then over examples.
Dropout masks are torch's (rxla draws its own), so the curves agree in distribution, not bit
for bit. Writes DIR/hf_metrics.jsonl; with --rxla-run, prints both loss curves side by side
(means over windows of `--window` steps of the steps both logged) and the held-out metrics.
Needs torch, transformers and safetensors (a venv is fine); no rxla test runs it.
"""
import argparse
import json
import math
import os
import time

import torch
from safetensors.torch import load_file
from transformers import BertForPreTraining


def lr_lambda(cfg, total):
    opt, sch = cfg["optimizer"], cfg.get("schedule", {})
    kind = sch.get("kind", "constant")
    warm = float(sch.get("warmup_steps", 0))
    floor = float(sch.get("min_lr_ratio", 0.0))
    span = max(total - warm, 1.0)

    def f(s):  # as train/src/optim.rs lr_at: t = s + 1
        t = s + 1.0
        if kind != "constant" and t <= warm:
            return t / warm
        p = min(max((t - warm) / span, 0.0), 1.0)
        if kind == "warmup_cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))
        if kind == "warmup_linear":
            return 1 - (1 - floor) * p
        return 1.0

    return f


def inputs(t, prefix, idx=None):
    g = (lambda k: t[f"{prefix}.{k}"][idx]) if idx is not None else (lambda k: t[f"{prefix}.{k}"])
    return dict(
        input_ids=g("tokens").long(),
        token_type_ids=g("segments").long(),
        attention_mask=g("mask").long(),
        labels=g("mlm_labels").long(),
        next_sentence_label=g("nsp_labels").long(),
    )


@torch.no_grad()
def evaluate(model, t, batch):
    model.eval()
    n = t["eval.tokens"].shape[0]
    sums = dict(eval_mlm_loss=0.0, eval_mlm_accuracy=0.0, eval_nsp_loss=0.0, eval_nsp_accuracy=0.0)
    for a in range(0, n, batch):
        b = {k: v[a : a + batch] for k, v in inputs(t, "eval").items()}
        out = model(
            input_ids=b["input_ids"],
            token_type_ids=b["token_type_ids"],
            attention_mask=b["attention_mask"],
        )
        labels = b["labels"]
        w = (labels != -100).float()
        safe = labels.clamp(min=0)
        nll = torch.nn.functional.cross_entropy(
            out.prediction_logits.transpose(1, 2), safe, reduction="none"
        )
        hit = (out.prediction_logits.argmax(-1) == safe).float()
        cnt = w.sum(1).clamp(min=1)
        sums["eval_mlm_loss"] += ((nll * w).sum(1) / cnt).sum().item()
        sums["eval_mlm_accuracy"] += ((hit * w).sum(1) / cnt).sum().item()
        nsp = out.seq_relationship_logits
        y = b["next_sentence_label"]
        sums["eval_nsp_loss"] += torch.nn.functional.cross_entropy(nsp, y, reduction="sum").item()
        sums["eval_nsp_accuracy"] += (nsp.argmax(-1) == y).float().sum().item()
    model.train()
    return {k: v / n for k, v in sums.items()}


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--rxla-run", help="the rxla run's output directory (its metrics.jsonl)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--steps", type=int, help="stop early (default: the config's steps)")
    ap.add_argument("--compare-only", action="store_true", help="only print the tables")
    a = ap.parse_args()
    if a.compare_only:
        rx = read_jsonl(os.path.join(a.rxla_run, "metrics.jsonl"))
        return compare(rx, read_jsonl(os.path.join(a.dir, "hf_metrics.jsonl")), a.window)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    with open(os.path.join(a.dir, "rxla_config.json")) as f:
        cfg = json.load(f)
    t = load_file(os.path.join(a.dir, "batches.safetensors"))
    have = t["train.tokens"].shape[0]
    total = int(cfg["train"]["steps"])
    steps = min(a.steps or total, have)
    model, info = BertForPreTraining.from_pretrained(
        os.path.join(a.dir, "init"), output_loading_info=True, torch_dtype=torch.float32
    )
    missing = [k for k in info["missing_keys"] if not k.startswith("cls.predictions.decoder")]
    if missing or info["unexpected_keys"] or info["mismatched_keys"]:
        raise SystemExit(f"rxla's init did not load unchanged: {info}")
    o = cfg["optimizer"]
    if o.get("kind", "adamw") != "adamw":
        raise SystemExit(f"this script mirrors AdamW, not {o['kind']}")
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        dict(params=[p for p in params if p.dim() >= 2], weight_decay=o.get("weight_decay", 0.0)),
        dict(params=[p for p in params if p.dim() < 2], weight_decay=0.0),
    ]
    opt = torch.optim.AdamW(
        groups,
        lr=o["lr"],
        betas=(o.get("beta1", 0.9), o.get("beta2", 0.999)),
        eps=o.get("eps", 1e-8),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, total))
    clip = o.get("clip_norm")
    tr = cfg["train"]
    eval_every, eval_batch = tr.get("eval_every", 0), tr.get("eval_batch_size") or tr["batch_size"]
    out_path = os.path.join(a.dir, "hf_metrics.jsonl")
    log = open(out_path, "w")
    model.train()
    start = time.time()
    train_s = 0.0
    for s in range(steps):
        t0 = time.time()
        out = model(**inputs(t, "train", s))
        out.loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip else float("inf"))
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        train_s += time.time() - t0
        rec = dict(step=s + 1, loss=out.loss.item(), grad_norm=gnorm.item())
        if (eval_every and (s + 1) % eval_every == 0) or s + 1 == steps:
            rec.update(evaluate(model, t, eval_batch))
            print(json.dumps(rec), flush=True)
        log.write(json.dumps(rec) + "\n")
        log.flush()  # a partial run still compares (--compare-only)
    wall = time.time() - start
    log.close()
    summary = dict(
        steps=steps,
        seconds=wall,
        train_seconds=train_s,
        seconds_per_step=train_s / max(steps, 1),
        torch=torch.__version__,
        transformers=__import__("transformers").__version__,
        threads=a.threads,
    )
    summary.update({k: v for k, v in rec.items() if k.startswith("eval_")})
    with open(os.path.join(a.dir, "hf_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary))
    if a.rxla_run:
        compare(read_jsonl(os.path.join(a.rxla_run, "metrics.jsonl")), read_jsonl(out_path), a.window)


def compare(rx, hf, window):
    """Markdown: mean training loss over each window of the steps both logged, then the
    held-out metrics at each step both evaluated."""
    hf_by = {r["step"]: r for r in hf}
    rx = [r for r in rx if r.get("step") in hf_by and "loss" in r]
    print(f"\n| steps | rxla loss | transformers loss |\n|---|---|---|")
    last = max((r["step"] for r in rx), default=0)
    for w0 in range(0, last, window):
        rows = [r for r in rx if w0 < r["step"] <= w0 + window]
        if rows:
            m = lambda xs: sum(xs) / len(xs)
            print(
                f"| {w0 + 1}-{min(w0 + window, last)} | {m([r['loss'] for r in rows]):.4f} "
                f"| {m([hf_by[r['step']]['loss'] for r in rows]):.4f} |"
            )
    keys = ["eval_mlm_loss", "eval_mlm_accuracy", "eval_nsp_loss", "eval_nsp_accuracy"]
    print("\n| step | " + " | ".join(f"{k} rxla / hf" for k in keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for r in rx:
        h = hf_by[r["step"]]
        if all(k in r and k in h for k in keys):
            cells = " | ".join(f"{r[k]:.4f} / {h[k]:.4f}" for k in keys)
            print(f"| {r['step']} | {cells} |")


if __name__ == "__main__":
    main()
