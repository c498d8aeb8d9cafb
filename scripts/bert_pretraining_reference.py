#!/usr/bin/env python3
"""Reference MLM + NSP loss and gradients of HF transformers' BertForPreTraining, for
tests/bert_loss_parity.rs.

Usage (the directory holds rxla's init exported to HF layout and one batch, written by
`cargo test --release --test bert_loss_parity -- --ignored write_inputs`):
  HF_HUB_OFFLINE=1 python3 scripts/bert_pretraining_reference.py tests/fixtures/bert_pretraining
Writes DIR/reference.json: the loss (MLM mean over the batch's targets + NSP mean over rows),
its two parts, and the gradients of a few named tensors in HF layout (torch linears (out, in)).
Needs torch and transformers (a venv is fine); the Rust test itself needs no Python.
"""
import json
import os
import sys

import torch
from transformers import BertForPreTraining

GRADS = [
    "bert.embeddings.word_embeddings.weight",  # tied to the MLM decoder: both paths
    "bert.embeddings.position_embeddings.weight",
    "bert.encoder.layer.0.attention.self.query.weight",
    "bert.encoder.layer.0.attention.self.value.bias",  # (a key bias has no gradient)
    "bert.encoder.layer.1.intermediate.dense.weight",
    "bert.encoder.layer.1.output.LayerNorm.weight",
    "bert.pooler.dense.weight",
    "cls.predictions.transform.dense.weight",
    "cls.predictions.bias",
    "cls.seq_relationship.weight",
]


def main(d):
    torch.manual_seed(0)
    model, info = BertForPreTraining.from_pretrained(
        d, attn_implementation="eager", output_loading_info=True, torch_dtype=torch.float32
    )
    missing = [k for k in info["missing_keys"] if not k.startswith("cls.predictions.decoder")]
    if missing or info["unexpected_keys"] or info["mismatched_keys"]:
        sys.exit(f"not loaded unchanged: {info}")
    assert model.cls.predictions.decoder.weight.data_ptr() == (
        model.bert.embeddings.word_embeddings.weight.data_ptr()
    ), "the decoder is tied to the word embeddings"
    model.eval()  # no dropout (the config has none either)
    with open(os.path.join(d, "batch.json")) as f:
        batch = {k: torch.tensor(v) for k, v in json.load(f).items()}
    out = model(**batch)
    # The parts, recomputed as BertForPreTraining does (CrossEntropyLoss, ignore_index -100).
    ce = torch.nn.CrossEntropyLoss()
    v = model.config.vocab_size
    mlm = ce(out.prediction_logits.view(-1, v), batch["labels"].view(-1))
    nsp = ce(out.seq_relationship_logits.view(-1, 2), batch["next_sentence_label"].view(-1))
    assert torch.allclose(out.loss, mlm + nsp), (out.loss, mlm + nsp)
    out.loss.backward()
    params = dict(model.named_parameters())
    grads = {n: params[n].grad.tolist() for n in GRADS}
    fixture = {
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "loss": out.loss.item(),
        "mlm_loss": mlm.item(),
        "nsp_loss": nsp.item(),
        "grads": grads,
    }
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(fixture, f)
        f.write("\n")
    print(f"loss {out.loss.item():.6f} (MLM {mlm.item():.6f}, NSP {nsp.item():.6f})")


if __name__ == "__main__":
    main(sys.argv[1])
