#!/usr/bin/env bash
# Peak memory and time per round of each method at the convergence study's scale (every training
# document of 20 Newsgroups, MiniLM-L3, bf16, batch 32, 10 clients a round), for CLIENTS clients
# (100 by default) and TOKENS tokens (128 by default): one process per method, each in a shared
# artifacts folder under OUT (the partition and Stage 1 are made once), measured by /usr/bin/time.
# Run it twice with CLIENTS=20 and CLIENTS=100: what grows with the number of clients shows
# (METHODS="fft lora" to run fewer; SLoRA always runs).
#   OUT=/tmp/memory scripts/memory_per_method.sh     # about 15 min on 2 cores
# Prints: method, peak RSS (MiB), process seconds, and the run's own seconds per round.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/memory-per-method}
CLIENTS=${CLIENTS:-100}
TOKENS=${TOKENS:-128}
ROUNDS=${ROUNDS:-3}
METHODS=${METHODS:-fft lora ffa-lora fedex-lora lora-a2 sft}
mkdir -p "$OUT"
common=(--artifacts "$OUT/artifacts-$CLIENTS-$TOKENS" --set run.name=memory --set report.dir="$OUT/reports"
  --set 'run.seeds=[1]' --set data.max_train=0 --set data.max_len=$TOKENS --set partition.clients=$CLIENTS
  --set partition.scheme=iid --set federation.clients_per_round=10 --set federation.eval_every=$ROUNDS
  --set federation.eval_max_rows=1000 --set optim.precision=bf16 --set stage1.rounds=1 --set stage2.rounds=$((ROUNDS - 1)))
# The shared stages first (partition, Stage 1), so each method's process holds only its own run.
target/debug/pipeline "${common[@]}" --set 'baselines.methods=["lora"]' stage1 >/dev/null 2>&1
run() {  # label, extra args...
  local label=$1; shift
  /usr/bin/time -f "%M %e" -o "$OUT/time-$label" target/debug/pipeline "${common[@]}" "$@" >/dev/null 2>"$OUT/log-$label"
  read -r kib secs <"$OUT/time-$label"
  printf '%-12s %8.0f MiB %8.1f s\n' "$label" "$(echo "$kib / 1024" | bc -l)" "$secs"
}
echo "clients $CLIENTS, $TOKENS tokens, $ROUNDS rounds"
for m in $METHODS; do
  run "$m" --set "baselines.methods=[\"$m\"]" baselines
done
run slora --set 'baselines.methods=["lora"]' stage2
# Seconds per round from each run's own metrics (its rounds' wall time, evaluation included).
for dir in "$OUT/artifacts-$CLIENTS-$TOKENS"/{baselines,stage1,stage2}/*/; do
  target/debug/pipeline inspect "$dir" --json 2>/dev/null
done | python3 -c '
import json, sys
dec, text = json.JSONDecoder(), sys.stdin.read()
i = 0
while i < len(text):
    if text[i].isspace():
        i += 1
        continue
    doc, i = dec.raw_decode(text, i)
    by = {}
    for row in doc.get("metrics", []):
        by.setdefault(row["method"], []).append((row["round"], row["wall_seconds"]))
    for m, rows in sorted(by.items()):
        rows.sort()
        if len(rows) > 1:
            print(f"{m:<14} {(rows[-1][1] - rows[0][1]) / (len(rows) - 1):6.1f} s/round")
'
