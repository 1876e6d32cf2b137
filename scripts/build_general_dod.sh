#!/usr/bin/env bash
# A third bank (issue 18): the general tasks (BIG-bench, Natural-Instructions, gen/*) that the committed banks do not
# hold and that leak into none of their held-out tasks (scripts/general_extra_tasks.py prints the rule's list).
# All of them are training tasks (--general-heldout 0): the held-out general tasks stay those of the first two banks.
# Same recipe as the scale bank: 2 seeds, mixed tuning settings, packs of 8. Resumable like build_scale_dod.sh:
#   soft2hard dod pack runs/dod-general --append --out dod/smollm2-135m-general
set -euo pipefail
OUT=${OUT:-runs/dod-general}
BANK=${BANK:-dod/smollm2-135m-general}
WORKERS=${WORKERS:-2}
TASKS=${TASKS:-$(python scripts/general_extra_tasks.py --subtasks-per-parent 3)}
bank=()
[ -d "$BANK" ] && bank=(--bank "$BANK")
exec soft2hard dod build --out "$OUT" --tasks "$TASKS" --general-heldout 0 --seeds 0,1 --tokens 20 --steps 40 \
  --eval-every 20 --batch-size 4 --max-test-examples 24 --max-input-chars 200 --recipes mixed \
  --workers "$WORKERS" --pack 8 "${bank[@]}" "$@"
