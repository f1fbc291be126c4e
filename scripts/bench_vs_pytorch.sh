#!/usr/bin/env bash
# Training-step speed next to PyTorch, in the same minute: ../shared/bench/pytorch_step.py (PyTorch +
# transformers + peft; both OMP wait policies, the faster one is the reference) in fp32 and under
# `--autocast bf16`, and `pipeline bench` with `--precision fp32` and `bf16`, run back to back on
# MiniLM-L6, batch 32 x 128, 2 threads, then the ratios the speed targets use (fp32 against PyTorch
# fp32, bf16 against PyTorch's bf16 autocast). SLORA_BF16_KERNEL=amx|avx512bf16 picks the kernel.
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

echo "# $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) x $(nproc), load $(cut -d' ' -f1 /proc/loadavg), bf16 kernel: ${SLORA_BF16_KERNEL:-detected}"
for autocast in none bf16; do
    for policy in PASSIVE ACTIVE; do
        "$python" "$script" --threads "$threads" --batch 32 --seq 128 --steps "$steps" --omp-wait "$policy" --autocast "$autocast" > "$out/torch-$autocast-$policy.txt"
    done
done
run_ours() { # binary label precision
    "$1" bench --model "$model" --shapes 32x128 --threads "$threads" --steps "$steps" --precision "$3" --json 2>/dev/null > "$out/$2-$3.json"
    # LoRA alone in its own process: its peak RSS is then its own.
    "$1" bench --model "$model" --shapes 32x128 --threads "$threads" --steps "$steps" --precision "$3" --modes lora --json 2>/dev/null > "$out/$2-$3-lora.json"
}
for precision in fp32 bf16; do
    run_ours "$pipeline" ours "$precision"
    [[ -n ${BEFORE:-} ]] && run_ours "$BEFORE" before "$precision"
done
echo "# load after: $(cut -d' ' -f1 /proc/loadavg)"

python3 - "$out" "${BEFORE:+before}" <<'PY'
import json, sys, os
out, before = sys.argv[1], sys.argv[2]
torch = {}  # autocast -> policy -> key -> value
for autocast in ("none", "bf16"):
    for policy in ("PASSIVE", "ACTIVE"):
        for line in open(os.path.join(out, f"torch-{autocast}-{policy}.txt")):
            key, _, value = line.strip().partition(" ")
            torch.setdefault(autocast, {}).setdefault(policy, {})[key] = value
def best(autocast, mode):
    runs = torch[autocast]
    return min(float(runs[p][f"{mode}_ms_per_step"]) for p in runs if f"{mode}_ms_per_step" in runs[p])
def rows(label, precision):
    rs = {}
    # JSON rows only (a binary older than the bf16 kernel line's move to stderr printed it on stdout).
    for line in open(os.path.join(out, f"{label}-{precision}.json")):
        if line.startswith("{"):
            r = json.loads(line); rs[r["mode"]] = r
    lora = [json.loads(l) for l in open(os.path.join(out, f"{label}-{precision}-lora.json")) if l.startswith("{")][0]
    rs["lora"]["peak_rss_mb"] = lora["peak_rss_mb"]
    return rs
ours = {p: rows("ours", p) for p in ("fp32", "bf16")}
old = {p: rows(before, p) for p in ("fp32", "bf16")} if before else None
print(f"PyTorch {torch['none']['ACTIVE'].get('torch', '?')} (faster of OMP_WAIT_POLICY=PASSIVE/ACTIVE per mode); "
      "bf16 = torch.autocast('cpu', torch.bfloat16) / optim.precision = \"bf16\"")
cols = ["PyTorch fp32", "PyTorch bf16"] + (["before fp32", "before bf16"] if old else []) + ["ours fp32", "ours bf16", "fp32 ratio", "bf16 ratio", "targets (fp32 / bf16)", "met"]
print("| | " + " | ".join(cols) + " |"); print("|---" * (len(cols) + 1) + "|")
# Targets: fp32 against PyTorch fp32 (the earlier speed issue), bf16 against PyTorch's autocast (issue 17).
targets = [("FFT step (ms)", "fft", "full", 0.9, 0.8), ("LoRA step (ms)", "lora", "lora", 0.7, 0.7), ("SFT 1 % step (ms)", "sft", "sparse", 0.6, 0.7)]
for name, tmode, omode, t32, t16 in targets:
    p32, p16 = best("none", tmode), best("bf16", tmode)
    o32, o16 = ours["fp32"][omode]["median_ms"], ours["bf16"][omode]["median_ms"]
    b = f"{old['fp32'][omode]['median_ms']:.0f} | {old['bf16'][omode]['median_ms']:.0f} | " if old else ""
    met = "yes" if o32 / p32 <= t32 and o16 / p16 <= t16 else "NO"
    print(f"| {name} | {p32:.0f} | {p16:.0f} | {b}{o32:.0f} | {o16:.0f} | {o32 / p32:.2f} | {o16 / p16:.2f} | <= {t32} / <= {t16} | {met} |")
g32, g16 = ours["fp32"]["eval"]["gflops"], ours["bf16"]["eval"]["gflops"]
b = f"{old['fp32']['eval']['gflops']:.0f} | {old['bf16']['eval']['gflops']:.0f} | " if old else ""
print(f"| forward-only GFLOP/s | - | - | {b}{g32:.0f} | {g16:.0f} | - | - | >= 140 / > 233 | {'yes' if g32 >= 140 and g16 > 233 else 'NO'} |")
r32 = max(float(torch["none"][p]["lora_peak_rss_mb"]) for p in torch["none"])
r16 = max(float(torch["bf16"][p]["lora_peak_rss_mb"]) for p in torch["bf16"])
o32, o16 = ours["fp32"]["lora"]["peak_rss_mb"], ours["bf16"]["lora"]["peak_rss_mb"]
b = f"{old['fp32']['lora']['peak_rss_mb']:.0f} | {old['bf16']['lora']['peak_rss_mb']:.0f} | " if old else ""
print(f"| LoRA peak RSS (MiB) | {r32:.0f} | {r16:.0f} | {b}{o32:.0f} | {o16:.0f} | {o32 / r32:.2f} | {o16 / r16:.2f} | <= 1 / <= 1 | {'yes' if o32 <= r32 and o16 <= r16 else 'NO'} |")
PY
