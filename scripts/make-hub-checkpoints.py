#!/usr/bin/env python3
"""Small checkpoints in the real key layout of the paper's hub models, for tests.

`distilbert-base-uncased` and `albert-base-v2` reach this project as masked-LM checkpoints: what
transformers' `DistilBertForMaskedLM` / `AlbertForMaskedLM` `save_pretrained` writes, MLM head
included (`vocab_transform`, `vocab_layer_norm`, `vocab_projector` / `predictions.*`), ALBERT with
one shared layer group and its embedding projection (`embedding_hidden_mapping_in`) and without a
pooler. This script builds both at a small size with random weights and saves them with
transformers itself, so the tests load exactly the names and shapes the real files have:

    tests/fixtures/hub-checkpoints/<hub id>/
        config.json, model.safetensors          save_pretrained, unmodified
        tokenizer.json, vocab.txt, ...          the uncased BERT WordPiece cut to its first 3,000 ids
        expected.safetensors, expected.json     the base encoder's last_hidden_state on 4 sentences

The reference output comes from `AutoModel.from_pretrained(<folder>)` (the MLM head dropped by
transformers' own loader), eager attention, float32, eval mode. The vocabulary is cut so the
files stay small (the real ones are 30,522 x 768 embeddings); ids and special tokens are BERT's.

Run (a venv with ../shared/bench/requirements.txt):
    python scripts/make-hub-checkpoints.py [--shared ../shared] [--out tests/fixtures/hub-checkpoints]
Running it again writes identical bytes.
"""

import argparse
import hashlib
import json
import pathlib
import shutil

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import AlbertConfig, AlbertForMaskedLM, AutoModel, DistilBertConfig, DistilBertForMaskedLM

VOCAB = 3000
SENTENCES = [
    "The goalkeeper saved a late penalty.",
    "Stocks rallied on Wall Street after the central bank held interest rates steady.",
    "Researchers unveiled a battery prototype that could double the range of electric cars.",
    "He said the game was over.",
]
MAX_LEN = 32

MODELS = {
    # distilbert-base-uncased's config, scaled down (768 -> 32 wide, 6 -> 2 layers).
    "distilbert-base-uncased": (
        DistilBertForMaskedLM,
        DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128,
                         activation="gelu", initializer_range=0.2, pad_token_id=0),
    ),
    # albert-base-v2's config, scaled down: E=16, H=32, 3 layers sharing one group, gelu_new.
    "albert-base-v2": (
        AlbertForMaskedLM,
        AlbertConfig(vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_hidden_layers=3, num_hidden_groups=1,
                     inner_group_num=1, num_attention_heads=2, intermediate_size=64, hidden_act="gelu_new",
                     max_position_embeddings=128, type_vocab_size=2, initializer_range=0.2, pad_token_id=0,
                     classifier_dropout_prob=0.1),
    ),
}


def cut_tokenizer(src: pathlib.Path, dst: pathlib.Path) -> None:
    """BERT's uncased WordPiece with only its first VOCAB ids (special tokens, characters, ~1,000
    frequent words and subwords); padding and truncation left to the caller."""
    tok = json.loads((src / "tokenizer.json").read_text())
    tok["model"]["vocab"] = {t: i for t, i in tok["model"]["vocab"].items() if i < VOCAB}
    tok["truncation"] = None
    tok["padding"] = None
    (dst / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False, indent=1) + "\n")
    lines = (src / "vocab.txt").read_text().splitlines()[:VOCAB]
    (dst / "vocab.txt").write_text("\n".join(lines) + "\n")
    for name in ["tokenizer_config.json", "special_tokens_map.json"]:
        shutil.copyfile(src / name, dst / name)


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = pathlib.Path(__file__).resolve().parent.parent
    ap.add_argument("--shared", type=pathlib.Path, default=root.parent / "shared")
    ap.add_argument("--out", type=pathlib.Path, default=root / "tests/fixtures/hub-checkpoints")
    args = ap.parse_args()
    torch.set_num_threads(1)
    source_tokenizer = args.shared / "fixtures/parity/bert-tiny"
    for hub_id, (cls, config) in MODELS.items():
        out = args.out / hub_id
        out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        model = cls(config).eval()
        perturb(model)
        model.save_pretrained(out)
        cut_tokenizer(source_tokenizer, out)

        tok = Tokenizer.from_file(str(out / "tokenizer.json"))
        tok.enable_truncation(MAX_LEN)
        tok.enable_padding(pad_id=0, pad_token="[PAD]")
        enc = tok.encode_batch(SENTENCES)
        ids = torch.tensor([e.ids for e in enc], dtype=torch.int64)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.int64)
        types = torch.tensor([e.type_ids for e in enc], dtype=torch.int64)
        assert int((ids == 100).sum()) < ids.numel() // 4, "too many [UNK]: the cut vocabulary is too small"

        base = AutoModel.from_pretrained(out, attn_implementation="eager").eval()
        kwargs = {} if config.model_type == "distilbert" else {"token_type_ids": types}
        with torch.no_grad():
            hidden = base(input_ids=ids, attention_mask=mask, **kwargs).last_hidden_state.contiguous()
        save_file(
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
             "labels": torch.arange(len(SENTENCES), dtype=torch.int64), "last_hidden_state": hidden},
            out / "expected.safetensors",
        )
        with safe_open(out / "model.safetensors", "pt") as f:
            keys = sorted(f.keys())
        encoder_keys = {k for k in base.state_dict()}
        prefix = config.model_type + "."
        not_encoder = [k for k in keys if not (k.startswith(prefix) and k[len(prefix):] in encoder_keys)]
        meta = {
            "hub_id": hub_id,
            "model_class": cls.__name__,
            "written_by": "save_pretrained(safe_serialization=True), unmodified; random weights, torch.manual_seed(0), "
                          "initializer_range 0.2, LayerNorm weights 1 + 0.1 randn and biases 0.05 randn (seed 10)",
            "checkpoint_keys": keys,
            "not_encoder_keys": not_encoder,
            "inputs": {"sentences": SENTENCES, "max_length": MAX_LEN, "padding": "longest, [PAD] = 0"},
            "reference": "AutoModel.from_pretrained(folder, attn_implementation='eager').eval(), float32; "
                         "last_hidden_state at every position, padding included",
            "expected_safetensors": {"keys": {"last_hidden_state": {"atol": 1e-4, "rtol": 1e-4}}},
            "sha256": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())
                       if p.name not in ("expected.json",)},
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        }
        (out / "expected.json").write_text(json.dumps(meta, indent=1) + "\n")
        print(f"{hub_id}: {len(keys)} tensors ({len(not_encoder)} outside the encoder: {', '.join(not_encoder)}) -> {out}")


if __name__ == "__main__":
    main()
