#!/usr/bin/env python3
"""A tiny random RoBERTa sequence classifier and transformers' outputs on it, for the parity tests.

RoBERTa (the model of FedPETuning, LoRA-A², FedEx-LoRA and FedSA-LoRA) differs from BERT in four
places the Rust encoder must get right, and this fixture checks each:

* weight names: `roberta.embeddings.*`, `roberta.encoder.layer.N.*` (BERT's layers), no pooler, and
  the head `classifier.dense` -> tanh -> `classifier.out_proj` on the first token `<s>`;
* position ids: `create_position_ids_from_input_ids`, i.e. non-pad tokens count up from
  `pad_token_id + 1` = 2 and pads sit at row `pad_token_id` = 1 (stored as `position_ids`);
* a one-row token-type table (`type_vocab_size = 1`), still added;
* byte-level BPE through `tokenizer.json` with `<s>` = 0, `<pad>` = 1, `</s>` = 2.

Writes, into tests/fixtures/roberta-tiny/:

    config.json, model.safetensors     RobertaForSequenceClassification.save_pretrained, unmodified
    tokenizer.json, tokenizer_config.json
                                       RobertaTokenizer(vocab, merges).save_pretrained; the byte-level
                                       BPE is trained by `tokenizers` on CORPUS (vocabulary VOCAB)
    expected.safetensors               input_ids, attention_mask, token_type_ids, position_ids,
                                       labels, last_hidden_state, classifier_input (input of
                                       out_proj), logits, loss, grad.<name> (GRAD_PARAMS), and the
                                       LoRA case: lora_logits, lora_loss
    lora_factors.safetensors           `<module>.lora_A.weight` [r, in] / `.lora_B.weight` [out, r]
                                       for the 12 target linears (BERT's target names)
    expected.json                      inputs, tolerances (the parity fixtures' policy), versions,
                                       sha256 of the other files

Reference: `model.eval()` (dropout off), float32, eager attention, 2 intra-op threads; the
tokenizer is called as `tokenizer(SENTENCES, padding='longest', truncation=True,
max_length=MAX_LEN)` (right padding with `<pad>` = 1). Weights: `torch.manual_seed(0)`,
`initializer_range = 1/sqrt(32)` (with 0.02 the attention is nearly uniform and an attention-scale
or GELU bug would hide under the tolerance), then LayerNorm weights 1 + 0.1 randn and LayerNorm and
Linear biases 0.05 randn (generator seed 10), as the parity fixtures do. LoRA: r = 4, lora_alpha = 8
(scaling 2), A ~ U(-1/sqrt(in), 1/sqrt(in)) and B ~ N(0, 0.02) (generator seed 1, module order);
`lora_logits` is transformers' model with every target weight replaced by W + 2·B@A, which is
what a LoRA layer computes (peft's `merge`).

Run (the venv of ../shared/bench/requirements.txt; torch 2.15, transformers 5.24, tokenizers 0.23):
    OMP_WAIT_POLICY=PASSIVE python scripts/make_roberta_fixture.py [--out tests/fixtures/roberta-tiny]
Running it again writes identical bytes.
"""

import argparse
import hashlib
import json
import math
import pathlib

import tokenizers
import torch
import transformers
from safetensors.torch import save_file
from tokenizers import ByteLevelBPETokenizer
from transformers import AutoTokenizer, RobertaConfig, RobertaForSequenceClassification, RobertaTokenizer

# The byte-level alphabet (256) + 5 special tokens + 59 merges: words split into a few pieces.
VOCAB = 320
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
SENTENCES = [
    "The goalkeeper saved a late penalty.",
    "Café owners in Zürich protested against the new rules.",
    "Stocks rallied on Wall Street after the central bank unexpectedly held interest rates steady.",
]
LABELS = [0, 2, 1]
NUM_LABELS = 3
# The third sentence is cut here (its `</s>` kept), the others are padded to it.
MAX_LEN = 40
CORPUS = SENTENCES + [
    "The central bank held rates steady on Monday.",
    "Owners of the new stadium saved the penalty rules.",
    "Researchers said the goalkeeper was late again.",
    "Interest in the street protested against stocks.",
]
LORA_R, LORA_ALPHA = 4, 8.0
LORA_TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
GRAD_PARAMS = [
    "roberta.embeddings.word_embeddings.weight",
    "roberta.embeddings.position_embeddings.weight",
    "roberta.embeddings.token_type_embeddings.weight",
    "roberta.embeddings.LayerNorm.weight",
    "roberta.encoder.layer.0.attention.self.query.weight",
    "roberta.encoder.layer.1.output.dense.weight",
    "classifier.dense.weight",
    "classifier.dense.bias",
    "classifier.out_proj.weight",
    "classifier.out_proj.bias",
]


def train_tokenizer(out: pathlib.Path) -> None:
    """A byte-level BPE trained on CORPUS, saved the way transformers saves RoBERTa's."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=VOCAB, min_frequency=1, special_tokens=SPECIAL_TOKENS, show_progress=False)
    model = json.loads(bpe._tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = RobertaTokenizer(vocab=model["vocab"], merges=merges, model_max_length=MAX_LEN)
    tok.save_pretrained(out)
    ids = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert ids == [0, 1, 2, 3, 4], f"special tokens at {ids}"


def perturb(model: torch.nn.Module) -> None:
    """LayerNorm weights 1 + 0.1 randn, LayerNorm and Linear biases 0.05 randn: a loader that drops or
    swaps them is caught (the parity fixtures' rule)."""
    g = torch.Generator().manual_seed(10)
    with torch.no_grad():
        for _, module in model.named_modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(1 + 0.1 * torch.randn(module.weight.shape, generator=g))
                module.bias.copy_(0.05 * torch.randn(module.bias.shape, generator=g))
            elif isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.copy_(0.05 * torch.randn(module.bias.shape, generator=g))


def lora_factors(model: torch.nn.Module) -> dict:
    """Random A and B (B nonzero, unlike peft's init, so that the update shows) per target linear."""
    g = torch.Generator().manual_seed(1)
    out = {}
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or not any(name == t or name.endswith("." + t) for t in LORA_TARGETS):
            continue
        bound = 1 / math.sqrt(module.in_features)
        out[f"{name}.lora_A.weight"] = (torch.rand(LORA_R, module.in_features, generator=g) * 2 - 1) * bound
        out[f"{name}.lora_B.weight"] = 0.02 * torch.randn(module.out_features, LORA_R, generator=g)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = pathlib.Path(__file__).resolve().parent.parent
    ap.add_argument("--out", type=pathlib.Path, default=root / "tests/fixtures/roberta-tiny")
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)

    train_tokenizer(out)
    tok = AutoTokenizer.from_pretrained(out)
    enc = tok(SENTENCES, padding="longest", truncation=True, max_length=MAX_LEN, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    types = torch.zeros_like(ids)
    assert ids.shape[1] == MAX_LEN and int(mask[0].sum()) < int(mask[1].sum()) < MAX_LEN, "three lengths, padding"
    assert int((ids == 3).sum()) == 0, "no <unk>: byte-level BPE covers every byte"

    config = RobertaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        hidden_act="gelu", max_position_embeddings=64, type_vocab_size=1, layer_norm_eps=1e-5,
        initializer_range=1 / math.sqrt(32), pad_token_id=1, bos_token_id=0, eos_token_id=2, num_labels=NUM_LABELS,
    )
    torch.manual_seed(0)
    model = RobertaForSequenceClassification(config).eval()
    perturb(model)
    model.save_pretrained(out)
    # From the saved files only, as the Rust side reads them.
    model = RobertaForSequenceClassification.from_pretrained(out, attn_implementation="eager").eval()
    position_ids = model.roberta.embeddings.create_position_ids_from_input_ids(ids, config.pad_token_id)

    captured = {}
    hook = model.classifier.out_proj.register_forward_pre_hook(lambda _m, a: captured.update(x=a[0].detach().clone()))
    labels = torch.tensor(LABELS, dtype=torch.int64)
    o = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels, output_hidden_states=True)
    hook.remove()
    o.loss.backward()
    params = dict(model.named_parameters())
    tensors = {
        "input_ids": ids, "attention_mask": mask, "token_type_ids": types, "position_ids": position_ids,
        "labels": labels, "last_hidden_state": o.hidden_states[-1].detach().contiguous(),
        "classifier_input": captured["x"], "logits": o.logits.detach(), "loss": o.loss.detach(),
    }
    grads = {f"grad.{n}": params[n].grad.detach().clone() for n in GRAD_PARAMS}
    tensors.update(grads)

    factors = lora_factors(model)
    scaling = LORA_ALPHA / LORA_R
    with torch.no_grad():
        for name, module in model.named_modules():
            if f"{name}.lora_A.weight" in factors:
                module.weight += scaling * factors[f"{name}.lora_B.weight"] @ factors[f"{name}.lora_A.weight"]
        lo = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
    tensors["lora_logits"], tensors["lora_loss"] = lo.logits, lo.loss
    save_file({k: v.contiguous() for k, v in tensors.items()}, out / "expected.safetensors")
    save_file(factors, out / "lora_factors.safetensors")

    # The parity fixtures' policy: forward atol 1e-4; gradients 1e-4 of their largest magnitude.
    keys = {k: {"atol": 1e-4, "rtol": 1e-4} for k in
            ["last_hidden_state", "classifier_input", "logits", "loss", "lora_logits", "lora_loss"]}
    for k, g in grads.items():
        keys[k] = {"atol": float(f"{1e-4 * g.abs().max().item():.2g}"), "rtol": 1e-4}
    files = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
             "expected.safetensors", "lora_factors.safetensors"]
    meta = {
        "model_class": "RobertaForSequenceClassification",
        "written_by": "scripts/make_roberta_fixture.py: save_pretrained(safe_serialization=True), unmodified; "
                      "torch.manual_seed(0), initializer_range 1/sqrt(32), LayerNorm weights 1 + 0.1 randn and "
                      "LayerNorm/Linear biases 0.05 randn (seed 10)",
        "inputs": {"sentences": SENTENCES, "labels": LABELS, "max_length": MAX_LEN,
                   "padding": "longest, right, <pad> = 1", "tokens": [tok.convert_ids_to_tokens(r) for r in ids.tolist()]},
        "reference": "eval(), float32, eager attention; last_hidden_state = hidden_states[-1] at every position "
                     "(padding included); classifier_input = input of classifier.out_proj; loss = mean cross-entropy; "
                     "grad.<name> = dense gradients of that loss",
        "lora": {"r": LORA_R, "lora_alpha": LORA_ALPHA, "target_modules": LORA_TARGETS,
                 "modules": sorted({k.rsplit(".lora_", 1)[0] for k in factors}),
                 "lora_logits": "transformers' model with W + (lora_alpha/r)·B@A in every target linear"},
        "grad_params": GRAD_PARAMS,
        "loss": o.loss.item(),
        "expected_safetensors": {"keys": keys},
        "sha256": {f: hashlib.sha256((out / f).read_bytes()).hexdigest() for f in files},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__},
    }
    (out / "expected.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    total = sum((out / f).stat().st_size for f in files)
    print(f"roberta-tiny: vocab {len(tok)}, lengths {mask.sum(1).tolist()}, {len(factors) // 2} LoRA modules, "
          f"{total} bytes -> {out}")


if __name__ == "__main__":
    main()
