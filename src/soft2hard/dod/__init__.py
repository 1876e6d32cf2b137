"""The dataset of datasets (DoD): many tasks, each with trained soft prompts and a reference text.

``plan`` picks tasks and splits them, ``build`` trains the prompts (Ray fan-out, resumable), ``manifest`` reads
and writes the index, ``bank`` packs a build into one compact fp16 file that can be committed.
"""

DEFAULT_PACK = 8  # prompts per model pass in `dod build`; bench/dod.py measured it on the 2-core CPU (BENCHMARKS.md)
# `dod build --recipes mixed`: settings a user might pick, so that the translator does not learn one recipe
RECIPES = {"mixed": ({}, {"n_tokens": 10, "steps": 60, "init": "random"}, {"n_tokens": 32},
                     {"steps": 80, "lr": 1e-2})}
