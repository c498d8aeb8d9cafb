#!/usr/bin/env python3
"""Checks that `rxla export --format hf` output loads in HF transformers unchanged.

Usage:
  rxla export --run runs/bert --format hf --out /tmp/bert-hf
  rxla embed --pretrained /tmp/bert-hf --text "..." --text "..." > /tmp/rxla.jsonl
  HF_HUB_OFFLINE=1 python3 scripts/bert_export_check.py /tmp/bert-hf /tmp/rxla.jsonl
Loads the directory with `BertForPreTraining.from_pretrained` (strict: no missing or unexpected
tensors but the tied decoder), recomputes each text's mean-pooled, L2-normalized embedding and
prints the largest difference from rxla's. Needs torch and transformers; tests need no Python.
"""
import json
import sys

import torch
from transformers import AutoTokenizer, BertForPreTraining


def main(model_dir, rxla_jsonl):
    model, info = BertForPreTraining.from_pretrained(
        model_dir, attn_implementation="eager", output_loading_info=True
    )
    missing = [k for k in info["missing_keys"] if not k.startswith("cls.predictions.decoder")]
    if missing or info["unexpected_keys"] or info["mismatched_keys"]:
        sys.exit(f"not loaded unchanged: {info}")
    model.eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.backend_tokenizer.no_padding()
    tok.backend_tokenizer.no_truncation()
    worst = 0.0
    rows = [json.loads(l) for l in open(rxla_jsonl)]
    for row in rows:
        enc = tok(row["text"], return_tensors="pt")
        if enc["input_ids"][0].tolist() != row["token_ids"]:
            sys.exit(f"token ids differ for {row['text']!r}")
        with torch.no_grad():
            hidden = model.bert(**enc).last_hidden_state[0]
        emb = torch.nn.functional.normalize(hidden.mean(0), dim=0)
        worst = max(worst, (emb - torch.tensor(row["embedding"])).abs().max().item())
    print(f"{len(rows)} texts: loaded unchanged; max |embedding difference| {worst:.2e}")
    if worst > 1e-4:
        sys.exit("embeddings differ by more than 1e-4")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
