#!/usr/bin/env bash
# Training-step speed next to PyTorch, in the same minute: ../shared/bench/pytorch_step.py (PyTorch +
# transformers + peft; both OMP wait policies, the faster one is the reference) and `pipeline bench`,
# run back to back on MiniLM-L6, batch 32 x 128, 2 threads, then the ratios the speed targets use.
# Optionally an older `pipeline` binary (BEFORE=path) is timed in the same run, for before/after.
#
#   python3 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install -r ../shared/bench/requirements.txt
#   PYTHON=/tmp/torch-venv/bin/python scripts/bench_vs_pytorch.sh [SHARED_DIR]
#
# Env: PYTHON (python with torch, default python3), PIPELINE (default target/debug/pipeline),
# BEFORE (optional older binary), STEPS (timed steps per row, default 5), THREADS (default 2).
# Run it on an otherwise idle machine: absolute times on a shared machine drift, ratios less so.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${1:-../shared}
python=${PYTHON:-python3}
pipeline=${PIPELINE:-target/debug/pipeline}
steps=${STEPS:-5}
threads=${THREADS:-2}
model="$shared/models/all-MiniLM-L6-v2"
script="$shared/bench/pytorch_step.py"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

[[ -x $pipeline ]] || { echo "error: $pipeline not found (cargo build first)" >&2; exit 2; }
[[ -f $script ]] || { echo "error: $script not found (pass the shared folder)" >&2; exit 2; }
"$python" -c 'import torch, transformers, peft' 2>/dev/null \
    || { echo "error: $python has no torch/transformers/peft (see the header of this script)" >&2; exit 2; }

echo "# $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) x $(nproc), load $(cut -d' ' -f1 /proc/loadavg)"
for policy in PASSIVE ACTIVE; do
    "$python" "$script" --threads "$threads" --batch 32 --seq 128 --steps "$steps" --omp-wait "$policy" > "$out/torch-$policy.txt"
done
run_ours() { # binary label
    "$1" bench --model "$model" --shapes 32x128 --threads "$threads" --steps "$steps" --json 2>/dev/null > "$out/$2.json"
    # LoRA alone in its own process: its peak RSS is then its own.
    "$1" bench --model "$model" --shapes 32x128 --threads "$threads" --steps "$steps" --modes lora --json 2>/dev/null > "$out/$2-lora.json"
}
run_ours "$pipeline" ours
[[ -n ${BEFORE:-} ]] && run_ours "$BEFORE" before
echo "# load after: $(cut -d' ' -f1 /proc/loadavg)"

python3 - "$out" "${BEFORE:+before}" <<'EOF'
import json, sys, os
out, before = sys.argv[1], sys.argv[2]
torch = {}
for policy in ("PASSIVE", "ACTIVE"):
    for line in open(os.path.join(out, f"torch-{policy}.txt")):
        key, _, value = line.strip().partition(" ")
        torch.setdefault(policy, {})[key] = value
def best(mode):
    return min(float(torch[p][f"{mode}_ms_per_step"]) for p in torch if f"{mode}_ms_per_step" in torch[p])
def rows(label):
    rs = {}
    for line in open(os.path.join(out, f"{label}.json")):
        r = json.loads(line); rs[r["mode"]] = r
    lora = [json.loads(l) for l in open(os.path.join(out, f"{label}-lora.json"))][0]
    rs["lora"]["peak_rss_mb"] = lora["peak_rss_mb"]
    return rs
ours = rows("ours"); old = rows(before) if before else None
torch_rss = max(float(torch[p]["lora_peak_rss_mb"]) for p in torch)
print(f"PyTorch {torch['ACTIVE'].get('torch', '?')} (faster of OMP_WAIT_POLICY=PASSIVE/ACTIVE per mode)")
head = "| | PyTorch | " + ("before | " if old else "") + "pipeline bench | ratio | target | met |"
print(head); print("|" + "---|" * (head.count("|") - 1))
targets = [("FFT step (ms)", "fft", "full", 0.9), ("LoRA step (ms)", "lora", "lora", 0.7), ("SFT 1 % step (ms)", "sft", "sparse", 0.6)]
for name, tmode, omode, target in targets:
    t, o = best(tmode), ours[omode]["median_ms"]
    b = f"{old[omode]['median_ms']:.0f} | " if old else ""
    print(f"| {name} | {t:.0f} | {b}{o:.0f} | {o / t:.2f} | <= {target} | {'yes' if o / t <= target else 'NO'} |")
g = ours["eval"]["gflops"]; b = f"{old['eval']['gflops']:.0f} | " if old else ""
print(f"| forward-only GFLOP/s | - | {b}{g:.0f} | - | >= 140 | {'yes' if g >= 140 else 'NO'} |")
r = ours["lora"]["peak_rss_mb"]; b = f"{old['lora']['peak_rss_mb']:.0f} | " if old else ""
print(f"| LoRA peak RSS (MiB) | {torch_rss:.0f} | {b}{r:.0f} | {r / torch_rss:.2f} | <= 1 | {'yes' if r <= torch_rss else 'NO'} |")
EOF
