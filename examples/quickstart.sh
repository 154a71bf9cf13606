#!/usr/bin/env bash
# Set up scriba on a fresh machine and run the main job: train a small model on the example dataset
# shipped in examples/froc_sample, then evaluate it with `ketos test`. A few minutes on 2 CPU cores.
# 295 lines and 10 epochs show the pipeline at work (a run here reached about 83 % character accuracy on
# the test lines); real models need thousands of lines and more epochs.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q torch==2.13.0   # CPU build on these machines; GPU users: see README
.venv/bin/pip install -q -e .
out=quickstart-out
rm -rf "$out"
.venv/bin/ketos --workers 1 --threads 2 train -f path -u NFD \
    -t examples/froc_sample/train.lst -e examples/froc_sample/val.lst -o "$out" \
    -s '[1,48,0,1 Cr3,3,32 Gn8 Mp2,2 Cr3,3,64 Gn8 Mp2,2 S1(1x0)1,3 Lbx128 Lbx128]' \
    -B 4 -r 2e-3 -q fixed -N 10
model=$(ls "$out"/best_*.safetensors | head -n 1)
.venv/bin/ketos --workers 1 --threads 2 test -f path -u NFD -B 16 -m "$model" -e examples/froc_sample/test.lst
