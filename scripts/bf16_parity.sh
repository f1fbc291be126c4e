#!/usr/bin/env bash
# bf16 against fp32 on the convergence study's setting (IID, every training document, 64 tokens,
# 100 clients, 10 per round), seed 1, 10 rounds (1 sparse + 9 LoRA for SLoRA): two `pipeline all`
# runs that differ only in optim.precision, each in its own artifacts folder under OUT.
#   OUT=/tmp/parity scripts/bf16_parity.sh     # about 20 min on 2 cores; prints final accuracies
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/bf16-parity}
for prec in bf16 fp32; do
  target/debug/pipeline --artifacts "$OUT/artifacts-$prec" --set run.name=parity-$prec --set report.dir="$OUT/reports" \
    --set 'run.seeds=[1]' --set data.max_train=0 --set data.max_len=64 --set partition.clients=100 --set partition.scheme=iid \
    --set federation.clients_per_round=10 --set federation.eval_every=5 --set federation.eval_max_rows=1000 \
    --set stage1.rounds=1 --set stage2.rounds=9 --set 'baselines.methods=["fft","lora"]' --set optim.precision=$prec all
done
python3 - "$OUT/reports" <<'PY'
import json, sys
for p in ["fp32", "bf16"]:
    s = json.load(open(f"{sys.argv[1]}/parity-{p}/summary.json"))
    print(p, {m: f"{100 * v['accuracy']:.2f} %" for m, v in sorted(s["methods"].items())})
PY
