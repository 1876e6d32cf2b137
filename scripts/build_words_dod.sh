#!/usr/bin/env bash
# The word-classification DoD over the 163-category inventory (issue 18: more cat/-like training tasks): label
# sets of 2-4 categories, 40 categories held out (30 held-out label sets, never in training), 2 seeds, the scale
# build's mixed tuning recipes, packs of 8, on SmolLM2-135M. Resumable on a new machine from the committed bank
# (an empty runs/ takes its plan). Bank what finished as an append-only shard and commit it:
#   soft2hard dod pack runs/dod-words --append --encoding mixed --out dod/smollm2-135m-words
set -euo pipefail
OUT=${OUT:-runs/dod-words}
BANK=${BANK:-dod/smollm2-135m-words}
WORKERS=${WORKERS:-2}
exec soft2hard dod build --out "$OUT" --kinds classification_large --large-classification-train 120 \
  --large-classification-heldout 30 --seeds 0,1 --tokens 20 --steps 40 --eval-every 20 --batch-size 4 \
  --max-test-examples 24 --recipes mixed --workers "$WORKERS" --pack 8 --bank "$BANK" "$@"
