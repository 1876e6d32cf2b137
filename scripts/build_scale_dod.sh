#!/usr/bin/env bash
# The scale DoD (issue 18): compositional tasks, 2 seeds, mixed tuning recipes, packs of 8, on SmolLM2-135M.
# Resumable from scratch on a new machine: --bank copies the committed bank's plan into an empty runs/ and skips
# every banked job. After a while, bank what finished (append-only shard) and commit it:
#   soft2hard dod pack runs/dod-comp --append --encoding mixed --out dod/smollm2-135m-comp
# (mixed: each job's best checkpoint in fp16, the other in int8; docs/DOD_CARD.md)
set -euo pipefail
OUT=${OUT:-runs/dod-comp}
BANK=${BANK:-dod/smollm2-135m-comp}
WORKERS=${WORKERS:-2}
exec soft2hard dod build --out "$OUT" --kinds compositional --seeds 0,1 --tokens 20 --steps 40 --eval-every 20 \
  --batch-size 4 --max-test-examples 24 --recipes mixed --workers "$WORKERS" --pack 8 --bank "$BANK" "$@"
