#!/usr/bin/env bash
# The main job: set up (scripts/setup.sh), then train dense DER++ and SparCL-DER++ at 90 % sparsity on
# Split Fashion-MNIST (5 tasks x 2 classes, MLP 784-256-256-10, 5 epochs per task) and print one table:
# Class-IL and Task-IL accuracy, forgetting, training FLOPs (x fewer than dense), training time, density.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
EPOCHS=${EPOCHS:-5}
COMMON=(dataset=fashion-mnist model=mlp hidden=256,256 stream=class-il tasks=5 method=derpp buffer_size=500
        alpha=0.1 beta=0.5 lr=0.03 batch_size=32 replay_batch_size=32 masked_head=true epochs="$EPOCHS" seed=0 threads=2)
sparsecl train "${COMMON[@]}" --out runs/main/dense-derpp --overwrite
# the SparCL release's settings for the sparse layers (initialised as the dense ones, one learning rate), which
# the README's figures were measured with; without these two keys the run takes sparsecl's sparse defaults
sparsecl train "${COMMON[@]}" sparsity.density=0.1 sparcl.tdm=true sparcl.ddr=true sparcl.dgm=true \
    sparcl.dgm_ratio=0.92 sparsity.init=dense sparsity.lr_scaling=none --out runs/main/sparcl-derpp-90 --overwrite
echo
sparsecl compare runs/main/dense-derpp runs/main/sparcl-derpp-90
