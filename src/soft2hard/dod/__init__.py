"""The dataset of datasets (DoD): many tasks, each with trained soft prompts and a reference text.

``plan`` picks tasks and splits them, ``build`` trains the prompts (Ray fan-out, resumable), ``manifest`` reads
and writes the index, ``bank`` packs a build into one compact fp16 file that can be committed.
"""

DEFAULT_PACK = 8  # prompts per model pass in `dod build`; bench/dod.py measured it on the 2-core CPU (BENCHMARKS.md)
