#!/usr/bin/env python3
"""Loads `pipeline export` output with transformers + peft and checks it against the run.

For an exported adapter folder (adapter_config.json + adapter_model.safetensors; its
base_model_name_or_path names the base: the pretrained model, or for SLoRA the corrected base that
the export writes beside it), this script
  1. loads the base with transformers' AutoModelForSequenceClassification and the adapter with
     peft's PeftModel.from_pretrained (nothing of this project's code is involved),
  2. evaluates it on the partition's test shard (token ids as the pipeline tokenized them),
  3. compares the accuracy with the run's final accuracy from the stage's metrics.parquet (the test
     shard must be the whole evaluation set: federation.eval_max_rows >= its rows), and
  4. with --merged DIR, compares peft's logits with those of the merged transformers model
     (`pipeline export --merged`), and checks that peft's merge_and_unload gives the same weights.

Needs torch, transformers, peft, safetensors and pyarrow (e.g. ../shared/bench/requirements.txt
plus pyarrow). Exit 0 when every check holds, 1 otherwise. Example:

  pipeline --config configs/ci.toml --artifacts /tmp/ci all
  pipeline --config configs/ci.toml --artifacts /tmp/ci export --method slora --merged --out /tmp/ci-slora
  python scripts/check_export_with_peft.py --adapter /tmp/ci-slora/adapter --merged /tmp/ci-slora/merged \
      --test /tmp/ci/partition/*/test.parquet --metrics /tmp/ci/stage2/*/metrics.parquet
  The LoRA baseline: `export --method lora`, then --metrics /tmp/ci/baselines/*/metrics.parquet
  --method lora (that file holds every baseline).
"""
import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load_test(path):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    cols = table.column_names
    ids = table.column("input_ids").to_pylist()
    labels = table.column("label" if "label" in cols else "labels").to_pylist()
    return ids, labels


def batches(ids, labels, pad_id, size=64):
    import torch

    for start in range(0, len(ids), size):
        rows = ids[start:start + size]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, :len(r)] = 1
        yield input_ids, mask, torch.tensor(labels[start:start + size])


def logits_of(model, ids, labels, pad_id):
    import torch

    outs = []
    with torch.no_grad():
        for input_ids, mask, _ in batches(ids, labels, pad_id):
            outs.append(model(input_ids=input_ids, attention_mask=mask).logits)
    return torch.cat(outs)


def final_accuracy(metrics_path, method):
    import pyarrow.parquet as pq

    rows = [r for r in pq.read_table(metrics_path).to_pylist() if method is None or r["method"] == method]
    if not rows:
        sys.exit(f"{metrics_path} has no rows of method {method!r}")
    last = max(rows, key=lambda r: r["round"])
    return last["accuracy"], last["method"], last["round"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapter", required=True, help="folder with adapter_config.json")
    ap.add_argument("--base", help="base model folder (default: the adapter's base_model_name_or_path)")
    ap.add_argument("--test", required=True, help="the partition's test.parquet")
    ap.add_argument("--metrics", required=True, help="the stage's metrics.parquet (final accuracy)")
    ap.add_argument("--method", help="the metrics rows to take (e.g. `lora` in the baselines' file); default: all")
    ap.add_argument("--merged", help="`pipeline export --merged` model folder to compare logits with")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="largest |logit difference| allowed")
    a = ap.parse_args()

    import torch
    import transformers
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = json.load(open(os.path.join(a.adapter, "adapter_config.json")))
    base_dir = a.base or cfg["base_model_name_or_path"]
    ids, labels = load_test(a.test)
    num_labels = max(labels) + 1
    base = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=num_labels)
    model = PeftModel.from_pretrained(base, a.adapter).eval()
    pad_id = base.config.pad_token_id or 0
    logits = logits_of(model, ids, labels, pad_id)
    accuracy = (logits.argmax(-1) == torch.tensor(labels)).double().mean().item()
    expected, method, rnd = final_accuracy(a.metrics, a.method)
    ok = True
    print(f"peft {__import__('peft').__version__}, transformers {transformers.__version__}: base {base_dir}")
    print(f"accuracy with peft: {accuracy:.4f} on {len(ids)} test rows; the run recorded {expected:.4f} ({method}, round {rnd})")
    if abs(accuracy - expected) > 1.0 / len(ids) + 1e-9:
        print("FAIL: accuracies differ by more than one row")
        ok = False
    if a.merged:
        merged = AutoModelForSequenceClassification.from_pretrained(a.merged).eval()
        diff = (logits_of(merged, ids, labels, pad_id) - logits).abs().max().item()
        print(f"peft vs exported merged model: largest |logit difference| {diff:.2e}")
        if diff > a.tolerance:
            print("FAIL: the merged model does not reproduce peft's logits")
            ok = False
        unloaded = model.merge_and_unload()
        mine = merged.state_dict()
        worst = max((unloaded.state_dict()[k] - v).abs().max().item() for k, v in mine.items() if k in unloaded.state_dict())
        print(f"peft merge_and_unload vs exported merged weights: largest difference {worst:.2e}")
        if worst > a.tolerance:
            print("FAIL: merge_and_unload differs from the exported merged weights")
            ok = False
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
