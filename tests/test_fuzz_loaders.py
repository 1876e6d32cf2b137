"""Bad-input sweep: property-based tests (hypothesis) over every loader of user-supplied files.

Every test generates ``EXAMPLES`` inputs per run, writes each into a fresh temporary folder and loads it. The
property is always the same: the load either succeeds and returns a sane object, or raises
:class:`Soft2HardError` whose message is one line naming the file (its path, or the folder it lives in). Any
other exception (KeyError, UnicodeDecodeError, sqlite3.DatabaseError, RecursionError, ...) fails the test.
docs/RELIABILITY.md ("Bad-input sweep") lists the loaders, the strategies and the measured result.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import sqlite3
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from soft2hard.cache import ResponseCache, request_key
from soft2hard.dod import config as dod_config
from soft2hard.dod.manifest import Manifest, PromptEntry, TaskEntry
from soft2hard.dod.plan import PlannedTask
from soft2hard.errors import Soft2HardError
from soft2hard.interpret.inspection import InspectConfig
from soft2hard.interpret.selection import SHIPPED_PROFILES, Profile
from soft2hard.optimize.pez import PezConfig
from soft2hard.optimize.rlprompt import RLPromptConfig
from soft2hard.prompts import SoftPrompt
from soft2hard.runs import prepare
from soft2hard.tasks import get_task
from soft2hard.tuning import TuningConfig

EXAMPLES = 1000  # generated cases per loader and run (docs/RELIABILITY.md quotes this number)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.large_base_example])


@contextmanager
def workdir() -> Iterator[Path]:
    """A fresh temporary folder for one example (symlinks resolved, so that error messages match it)."""
    with tempfile.TemporaryDirectory(prefix="s2h-fuzz-") as tmp:
        yield Path(os.path.realpath(tmp))


def write(path: Path, data: bytes, is_dir: bool = False) -> None:
    """``data`` into ``path``, or (``is_dir``) a folder where the file should be."""
    if is_dir:
        path.mkdir()
    else:
        path.write_bytes(data)


rarely = st.integers(0, 30).map(lambda n: n == 0)  # True about once in 31 cases


def load_or_reject(load, *names):
    """``load()``'s result, or None when it raised a one-line Soft2HardError naming one of ``names``.

    Any other exception propagates and fails the test."""
    try:
        result = load()
    except Soft2HardError as err:
        message = str(err)
        assert message.strip(), "empty error message"
        assert len(message.splitlines()) == 1, f"multi-line error: {message!r}"
        assert any(str(n) in message for n in names), f"{message!r} names none of {[str(n) for n in names]}"
        event("rejected (Soft2HardError)")
        return None
    event("loaded")
    return result


# --- shared strategies ---------------------------------------------------------------------------------------

NASTY_STRINGS = ["", " ", "\n", "a\nb", "\r", "\u2028", "\x00", "\ufeff", "\ud800x", "\udcff", "é", "../x",
                 "/etc/passwd", "x" * 300, "NaN"]
text = st.text(max_size=12) | st.sampled_from(NASTY_STRINGS)
numbers = (st.integers(-(2**70), 2**70) | st.floats() | st.sampled_from([0, 1, -1, 2**63, 10**400, 1e308]))
scalars = st.none() | st.booleans() | numbers | text
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(text, c, max_size=4),
                           max_leaves=10)
# JSON texts that json.loads rejects in ways other than JSONDecodeError, or that parse to surprises
NASTY_JSON = ["", " ", "{", "}", "[" * 3000, "[" * 1500 + "]" * 1500, '{"a":' * 1500, "1" * 5000,
              '{"a": ' + "9" * 5000 + "}", "NaN", "-Infinity", "1e999", "null", "[]", "{}", '"text"', "\ufeff{}",
              '{"a": 1} trailing', '{"a": "\\ud800"}', "{\"a\": 1, \"a\": 2}"]
raw_bytes = st.binary(max_size=300) | st.sampled_from([b"", b"\xff\xfe\x00", b"\x00" * 64, b"\xef\xbb\xbf"])


def dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def encode(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")


def json_file(valid) -> st.SearchStrategy[bytes]:
    """Bytes of a JSON file: a (mutated) valid document, random JSON, nasty JSON text, truncations or garbage."""
    return st.one_of(
        valid.map(lambda v: encode(dumps(v))),
        valid.map(lambda v: encode(dumps(v))),
        mutated(valid).map(lambda v: encode(dumps(v))),
        mutated(valid).map(lambda v: encode(dumps(v))),
        json_values.map(lambda v: encode(dumps(v))),
        st.sampled_from(NASTY_JSON).map(encode),
        st.tuples(valid.map(lambda v: encode(dumps(v))), st.integers(0, 400)).map(lambda t: t[0][: t[1]]),
        raw_bytes,
    )


def _slots(doc, out: list) -> list:
    """(container, key) for every value nested in ``doc``."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((doc, k))
            _slots(v, out)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append((doc, i))
            _slots(v, out)
    return out


def mutated(valid: st.SearchStrategy) -> st.SearchStrategy:
    """A valid document with 1-3 random edits: drop a field, replace a value (any JSON), add a stray field."""

    @st.composite
    def strategy(draw):
        doc = copy.deepcopy(draw(valid))
        for _ in range(draw(st.integers(1, 3))):
            slots = _slots(doc, [])
            if not slots:
                return draw(json_values)
            container, key = draw(st.sampled_from(slots))
            op = draw(st.sampled_from(["drop", "replace", "replace", "add"]))
            if op == "drop":
                del container[key]
            elif op == "replace":
                container[key] = draw(json_values)
            elif isinstance(container, dict):
                container[draw(text)] = draw(json_values)
            else:
                container.append(draw(json_values))
        return doc

    return strategy()


# --- 1. task files (JSONL / CSV) -------------------------------------------------------------------------------

cell = st.one_of(text, st.text(max_size=6, alphabet="ab ,\"\n\r;x"), st.sampled_from(["input", "output", "label"]))
json_cell = st.one_of(cell, json_values)
plain = st.sampled_from(["a", "b", " c ", "d e", "1"])  # ordinary non-blank values, so that some files load
good_value = st.one_of(plain, plain, plain, cell)
column = st.sampled_from(["input", "output", "label", " input ", "INPUT", "", "extra"])


@st.composite
def jsonl_bytes(draw) -> bytes:
    lines = []
    target = draw(st.sampled_from(["output", "label"]))  # what the good rows of this file give
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["good"] * 8 + ["row", "row", "json", "nasty", "blank"]))
        if kind == "good":
            lines.append(dumps({"input": draw(good_value), target: draw(good_value)}))
        elif kind == "row":
            row = {k: draw(json_cell) for k in draw(st.lists(column, max_size=4, unique=True))}
            lines.append(dumps(row))
        elif kind == "json":
            lines.append(dumps(draw(json_values)))
        elif kind == "nasty":
            lines.append(draw(st.sampled_from(NASTY_JSON)))
        else:
            lines.append(draw(st.sampled_from(["", "  ", "\t"])))
    start = draw(st.sampled_from([b"", b"", b"\xef\xbb\xbf", b"\xff"]))  # nothing, a UTF-8 BOM, a bad byte
    return start + encode(draw(st.sampled_from(["\n", "\r\n"])).join(lines))


@st.composite
def csv_bytes(draw) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    header = draw(st.sampled_from([["input", "output"], ["label", "input"]]) | st.lists(column, max_size=4))
    writer.writerow(header)
    for _ in range(draw(st.integers(0, 6))):
        width = len(header) if draw(st.integers(0, 4)) else draw(st.integers(0, 5))
        writer.writerow([draw(good_value) for _ in range(width)])
    data = encode(buf.getvalue())
    if draw(st.booleans()):  # damage: raw quotes, cut, stray bytes
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b'"', b'""x', b"\xff", b"\x00", b"", b"\n\n"])) + data[at:]
    return data


any_task_name = st.sampled_from(["t.jsonl", "t.csv", "T.JSONL", "t.Csv"])
task_files = st.one_of(  # (file name, bytes): mostly content that matches the suffix, sometimes not
    st.tuples(st.sampled_from(["t.jsonl", "T.JSONL"]), jsonl_bytes()),
    st.tuples(st.sampled_from(["t.csv", "t.Csv"]), csv_bytes()),
    st.tuples(any_task_name, jsonl_bytes() | csv_bytes() | raw_bytes | st.sampled_from(NASTY_JSON).map(encode)),
)


@FUZZ
@given(file=task_files, is_dir=rarely)
def test_task_files_never_crash(file, is_dir):
    name, data = file
    with workdir() as tmp:
        path = tmp / name
        write(path, data, is_dir)
        task = load_or_reject(lambda: get_task(str(path)), path)
        if task is not None:
            assert task.examples and task.source == "file"
            assert all(isinstance(ex.input, str) and ex.input.strip() == ex.input and ex.input for ex in task.examples)
            assert all(isinstance(ex.target, str) and ex.target.strip() == ex.target and ex.target
                       for ex in task.examples)
            if task.labels is not None:
                assert len(task.labels) >= 2 and set(task.labels) == {ex.target for ex in task.examples}


nonblank = st.text(min_size=1, max_size=12).filter(lambda s: s.strip() and "\x00" not in s)


@FUZZ
@given(pairs=st.lists(st.tuples(nonblank, nonblank), min_size=1, max_size=8),
       fmt=st.sampled_from(["jsonl", "csv"]), target=st.sampled_from(["output", "label"]))
def test_valid_task_files_load(pairs, fmt, target):
    if target == "label" and len({t.strip() for _, t in pairs}) < 2:
        pairs = [*pairs, ("extra input", pairs[0][1].strip() + "2")]
    with workdir() as tmp:
        path = tmp / f"t.{fmt}"
        if fmt == "jsonl":
            path.write_text("\n".join(dumps({"input": i, target: t}) for i, t in pairs), encoding="utf-8")
        else:
            buf = io.StringIO()
            writer = csv.writer(buf)
            writer.writerow(["input", target])
            writer.writerows(pairs)
            path.write_text(buf.getvalue(), encoding="utf-8", newline="")
        task = get_task(str(path))
        expected = [(i.strip(), t.strip()) for i, t in pairs]
        assert [(ex.input, ex.target) for ex in task.examples] == expected
        assert (task.labels is not None) == (target == "label")


# --- 2. prompt files (.safetensors, PEFT adapter directories) -------------------------------------------------

TORCH_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int8, torch.uint8,
                torch.bool]
ST_DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL",
             "F8_E4M3", "F8_E5M2", "C64", "f32", "X", ""]
ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "U16": 2,
            "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "C64": 8}
tensor_name = st.sampled_from(["prompt_embeddings", "x", "a", "b", "__metadata__x"]) | st.text(min_size=1, max_size=8)


@st.composite
def tensors(draw) -> torch.Tensor:
    shape = draw(st.lists(st.integers(0, 5), max_size=3))
    dtype = draw(st.sampled_from(TORCH_DTYPES))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    t = torch.randn(shape, generator=gen) * draw(st.sampled_from([1.0, 1e3, 1e-30, 1e40]))
    if t.numel() and draw(st.booleans()):
        t.view(-1)[draw(st.integers(0, t.numel() - 1))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    return t.to(dtype)


@st.composite
def handmade_safetensors(draw) -> bytes:
    """A safetensors byte layout built by hand: random dtypes, shapes, offsets, metadata and lengths."""
    header: dict = {}
    offset = 0
    for _ in range(draw(st.integers(0, 3))):
        dtype = draw(st.sampled_from(ST_DTYPES))
        shape = draw(st.lists(st.integers(0, 4), max_size=3) | json_values)
        size = 0
        if isinstance(shape, list) and all(isinstance(s, int) for s in shape):
            size = min(max(0, math.prod(shape) * ITEMSIZE.get(dtype, 1)), 1024)
        if draw(st.integers(0, 3)) == 0:
            size = draw(st.integers(0, 64))
        offsets = [offset, offset + size] if draw(st.integers(0, 3)) else draw(json_values)
        header[draw(tensor_name)] = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
        offset += size
    if draw(st.booleans()):
        header["__metadata__"] = draw(json_values)
    if draw(st.integers(0, 5)) == 0:
        header = draw(json_values)
    hbytes = encode(dumps(header)) if draw(st.integers(0, 5)) else draw(raw_bytes)
    hbytes += b" " * draw(st.integers(0, 8))
    length = len(hbytes) if draw(st.integers(0, 4)) else draw(st.sampled_from([0, 1, 7, 2**31, 2**64 - 1]))
    data = draw(st.binary(min_size=offset, max_size=offset) if draw(st.integers(0, 3)) else st.binary(max_size=80))
    return struct.pack("<Q", length) + hbytes + data


@st.composite
def prompt_tensors(draw) -> dict[str, torch.Tensor]:
    """One [n, d] float tensor (sometimes with a stray extra tensor): what a prompt file should hold."""
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]))
    t = torch.randn(draw(st.integers(1, 5)), draw(st.integers(1, 6)),
                    generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16)))).to(dtype)
    named = {draw(tensor_name): t}
    if draw(st.integers(0, 3)) == 0:
        named[draw(tensor_name)] = draw(tensors())
    return named


@st.composite
def safetensors_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["prompt", "prompt", "torch", "torch", "handmade", "handmade", "garbage",
                                 "truncated"]))
    if kind == "garbage":
        return draw(raw_bytes)
    if kind == "handmade":
        return draw(handmade_safetensors())
    named = draw(prompt_tensors() if kind == "prompt" else st.dictionaries(tensor_name, tensors(), max_size=3))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.safetensors"
        meta = draw(st.none() | st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))
        save_file(named, path, metadata=meta)
        data = path.read_bytes()
    if kind == "truncated" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    return data


def assert_sane_prompt(prompt) -> None:
    assert isinstance(prompt, SoftPrompt)
    t = prompt.tensor
    assert t.ndim == 2 and t.shape[0] > 0 and t.shape[1] > 0 and t.dtype == torch.float32
    assert torch.isfinite(t).all()
    assert prompt.model is None or isinstance(prompt.model, str)
    assert isinstance(prompt.metadata, dict)


@FUZZ
@given(data=safetensors_bytes(), name=st.sampled_from(["p.safetensors", "p.SAFETENSORS", "p", "p.bin", "p.pt"]))
def test_safetensors_prompt_files_never_crash(data, name):
    with workdir() as tmp:
        path = tmp / name
        path.write_bytes(data)
        prompt = load_or_reject(lambda: SoftPrompt.load(path), path)
        if prompt is not None:
            assert_sane_prompt(prompt)


ADAPTER_CONFIG = st.fixed_dictionaries(
    {"peft_type": st.just("PROMPT_TUNING"), "task_type": st.just("CAUSAL_LM")},
    optional={"num_virtual_tokens": st.integers(1, 5), "token_dim": st.integers(1, 6),
              "num_transformer_submodules": st.sampled_from([1, None]),
              "base_model_name_or_path": st.none() | text})


@st.composite
def adapter_dirs(draw) -> dict[str, bytes | None]:
    """File name -> bytes (None: a directory of that name) for a PEFT adapter directory."""
    files: dict[str, bytes | None] = {}
    choice = draw(st.integers(0, 9))
    if choice:
        files["adapter_config.json"] = draw(json_file(ADAPTER_CONFIG))
    elif draw(st.booleans()):
        files["adapter_config.json"] = None
    weights = draw(st.integers(0, 9))
    if weights >= 5:
        files["adapter_model.safetensors"] = draw(safetensors_bytes())
    elif weights >= 2:
        t = torch.randn(draw(st.integers(1, 5)), draw(st.integers(1, 6)))
        with tempfile.TemporaryDirectory() as tmp:
            save_file({"prompt_embeddings": t}, Path(tmp) / "w")
            files["adapter_model.safetensors"] = (Path(tmp) / "w").read_bytes()
    elif weights == 1:
        files["adapter_model.safetensors"] = None
    if draw(st.integers(0, 9)) == 0:
        files["adapter_model.bin"] = draw(raw_bytes)
    meta = draw(st.integers(0, 5))
    if meta >= 2:
        files["soft2hard.json"] = draw(json_file(st.dictionaries(text, json_values, max_size=3)))
    elif meta == 1:
        files["soft2hard.json"] = None
    return files


@FUZZ
@given(files=adapter_dirs())
def test_adapter_directories_never_crash(files):
    with workdir() as tmp:
        path = tmp / "adapter"
        path.mkdir()
        for name, data in files.items():
            if data is None:
                (path / name).mkdir()
            else:
                (path / name).write_bytes(data)
        prompt = load_or_reject(lambda: SoftPrompt.load(path), path)
        if prompt is not None:
            assert_sane_prompt(prompt)


@FUZZ
@given(n=st.integers(1, 8), d=st.integers(1, 16), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]),
       model=st.none() | st.text(min_size=1, max_size=12),
       metadata=st.dictionaries(st.text(max_size=8).filter(lambda k: k != "model"), json_values, max_size=3),
       as_dir=st.booleans())
def test_valid_prompts_load(n, d, seed, dtype, model, metadata, as_dir):
    t = torch.randn(n, d, generator=torch.Generator().manual_seed(seed)).to(dtype)
    with workdir() as tmp:
        if as_dir:
            path = SoftPrompt(t.float(), model=model, metadata=metadata).save(tmp / "adapter")
        else:
            path = tmp / "p.safetensors"
            save_file({"prompt_embeddings": t}, path)
        prompt = SoftPrompt.load(path)
        assert_sane_prompt(prompt)
        assert torch.equal(prompt.tensor, t.float())
        if as_dir:
            assert prompt.model == model


# --- 3. DoD manifests and their prompt entries ----------------------------------------------------------------

PROMPT_FILES = ["p.safetensors", "adapter", "bank.safetensors", "junk.safetensors", "link_in", "link_out", "loop",
                "sub", "sub/q.safetensors", "sub/../p.safetensors", "p.pt", "missing.safetensors", ".", "",
                "../outside.safetensors", "sub/../../outside.safetensors", "/etc/passwd", "a\x00b", "a\nb",
                "\ud800", "x" * 300, "link_out/x", "p.safetensors/x"]
BANK_KEYS = ["a", "b", "c", "d", "e", "zz"]


def _write_dod_files(root: Path) -> None:
    """The files that manifest entries may point at: good, bad, outside the folder, symlinks, a loop."""
    root.mkdir()
    good = torch.randn(2, 4)
    save_file({"prompt_embeddings": good}, root / "p.safetensors")
    SoftPrompt(good, model="m").save(root / "adapter")
    save_file({"a": good, "b": torch.zeros(2, 4, dtype=torch.int64), "c": torch.full((2, 4), math.nan),
               "d": torch.zeros(0, 4), "e": torch.zeros(4)}, root / "bank.safetensors")
    (root / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    (root / "p.pt").write_bytes(b"pickle")
    (root / "sub").mkdir()
    save_file({"x": good}, root / "sub" / "q.safetensors")
    save_file({"x": good}, root.parent / "outside.safetensors")
    (root / "link_in").symlink_to(root / "p.safetensors")
    (root / "link_out").symlink_to(root.parent / "outside.safetensors")
    (root / "loop").symlink_to(root / "loop")


prompt_entry = st.fixed_dictionaries(
    {"id": text, "file": st.sampled_from(PROMPT_FILES), "seed": st.integers(0, 3), "step": st.integers(0, 100),
     "validation_score": st.none() | st.floats(0, 1) | numbers, "best": st.booleans()},
    optional={"key": st.sampled_from(BANK_KEYS)})
task_entry = st.fixed_dictionaries(
    {"name": st.text(max_size=8), "kind": st.sampled_from(["general", "classification", "distilled"]),
     "group": st.text(max_size=4), "split": st.sampled_from(["train", "heldout"]), "reference": text,
     "reference_source": st.just("description"), "labels": st.none() | st.lists(text, max_size=3),
     "test_score": st.none() | st.floats(0, 1), "baseline_score": st.none() | st.floats(0, 1),
     "metric": st.none() | st.just("exact_match"), "prompts": st.lists(prompt_entry, max_size=3)})
manifest_doc = st.fixed_dictionaries(
    {"format": st.just("soft2hard-dod"), "version": st.just(1), "model": st.just("smollm2-135m"),
     "settings": st.dictionaries(text, json_values, max_size=2), "tasks": st.lists(task_entry, max_size=3)})


@FUZZ
@given(data=json_file(manifest_doc), as_dir=st.booleans(), is_dir=rarely)
def test_dod_manifests_never_crash(data, as_dir, is_dir):
    with workdir() as tmp:
        root = tmp / "dod"
        _write_dod_files(root)
        file = root / "manifest.json"
        write(file, data, is_dir)
        manifest = load_or_reject(lambda: Manifest.load(root if as_dir else file), file)
        if manifest is None:
            return
        assert isinstance(manifest.model, str) and isinstance(manifest.settings, dict)
        assert len({t.name for t in manifest.tasks}) == len(manifest.tasks)
        bank: dict = {}
        for task in manifest.tasks:
            assert isinstance(task, TaskEntry) and task.kind in ("general", "classification", "distilled")
            assert task.labels is None or all(isinstance(x, str) for x in task.labels)
            for entry in task.prompts:
                assert isinstance(entry, PromptEntry) and isinstance(entry.file, str)
                assert type(entry.seed) is int and type(entry.step) is int
                assert entry.validation_score is None or isinstance(entry.validation_score, float)
                tensor = load_or_reject(lambda e=entry: manifest.load_prompt(e, bank), root)
                if tensor is not None:
                    assert tensor.ndim == 2 and tensor.numel() > 0 and tensor.dtype == torch.float32
                    assert torch.isfinite(tensor).all()


# --- 4. configs: run folders, DoD plans, InSPEcT profiles, tuning/PEZ settings ---------------------------------

RESOLVED = {"task": "gen/plural", "model": "tiny", "n_tokens": 4, "steps": 10, "eval_every": 5, "lr": 0.03}


@FUZZ
@given(data=json_file(st.just(RESOLVED)), checkpoint=st.booleans(), is_dir=rarely)
def test_run_folder_config_on_resume_never_crashes(data, checkpoint, is_dir):
    with workdir() as tmp:
        out = tmp / "run"
        out.mkdir()
        write(out / "config.json", data, is_dir)
        if checkpoint:
            (out / "checkpoints" / "step_000005").mkdir(parents=True)
            (out / "checkpoints" / "step_000005" / "trainer_state.json").write_text("{}")
        existing = load_or_reject(lambda: prepare(out, RESOLVED, "a tuning run", "trainer_state.json",
                                                  resume=True, overwrite=False), out / "config.json")
        if existing is not None:
            assert existing == ([out / "checkpoints" / "step_000005"] if checkpoint else [])
            assert json.loads((out / "config.json").read_text()) == RESOLVED


BUILD = dod_config.BuildConfig(tasks=("gen/plural", "gen/antonym"))
BUILD_SETTINGS = json.loads(json.dumps(asdict(BUILD)))
planned_task = st.builds(
    lambda name, kind, split, labels, inputs: PlannedTask(name, kind, "g", split, "ref", "description", labels,
                                                           inputs).to_dict(),
    st.sampled_from(["gen/plural", "gen/antonym"]), st.sampled_from(["general", "classification"]),
    st.sampled_from(["train", "heldout"]), st.none() | st.lists(st.text(max_size=4), max_size=3).map(tuple),
    st.none() | st.just("gen/plural"))
plan_doc = st.fixed_dictionaries({"settings": st.just(BUILD_SETTINGS), "tasks": st.lists(planned_task, max_size=3)})


@FUZZ
@given(data=json_file(plan_doc), is_dir=rarely)
def test_dod_plan_reload_never_crashes(data, is_dir):
    with workdir() as tmp:
        write(tmp / dod_config.PLAN_NAME, data, is_dir)
        planned = load_or_reject(lambda: dod_config.load_or_create_plan(tmp, BUILD, tmp / "cache"),
                                 tmp / dod_config.PLAN_NAME, tmp)
        if planned is not None:
            for t in planned:
                assert isinstance(t, PlannedTask)
                for f in fields(PlannedTask):
                    value = getattr(t, f.name)
                    if f.name == "labels":
                        assert value is None or (isinstance(value, tuple) and all(isinstance(x, str) for x in value))
                    else:
                        assert isinstance(value, str) or (value is None and f.default is None)


VALID_PROFILE = {"model": "smollm2-135m", "pairs": [[3, 5], [10, 2]], "metric": "rouge_l", "n_prompts": 6,
                 "mean_scores": {"3,5": 0.25, "10,2": 0.2}, "inspect": {"n_demos": 4, "inject": "input"},
                 "calibration_prompts": ["a", "b"]}
profile_doc = st.one_of(st.just(VALID_PROFILE), st.sampled_from(sorted(SHIPPED_PROFILES.glob("*.json"))).map(
    lambda p: json.loads(p.read_text())))


@FUZZ
@given(data=json_file(profile_doc), is_dir=rarely)
def test_inspect_profiles_never_crash(data, is_dir):
    with workdir() as tmp:
        path = tmp / "profile.json"
        write(path, data, is_dir)
        profile = load_or_reject(lambda: Profile.load(path), path)
        if profile is not None:
            assert isinstance(profile.model, str) and isinstance(profile.metric, str)
            assert type(profile.n_prompts) is int and isinstance(profile.mean_scores, dict)
            assert all(isinstance(p, tuple) and len(p) == 2 and all(type(x) is int for x in p) for p in profile.pairs)
            assert all(isinstance(x, str) for x in profile.calibration_prompts)
            assert isinstance(profile.config(), InspectConfig)


def _config_values(cls, good: dict) -> st.SearchStrategy[dict]:
    """kwargs for ``cls``: known field names only (a typo is a programming error, not bad input), each value
    either a plausible good one or any JSON value (what a settings file could hold)."""
    return st.fixed_dictionaries({}, optional={f.name: st.sampled_from(good[f.name]) | json_values
                                               for f in fields(cls)})


def _assert_sane_config(cfg, ints: tuple[str, ...], floats: tuple[str, ...], optional_ints: tuple[str, ...],
                        strs: tuple[str, ...], optional_strs: tuple[str, ...]) -> None:
    for name in ints:
        assert type(getattr(cfg, name)) is int, name
    for name in optional_ints:
        assert getattr(cfg, name) is None or type(getattr(cfg, name)) is int, name
    for name in floats:
        value = getattr(cfg, name)
        assert type(value) in (int, float) and math.isfinite(value), name
    for name in strs:
        assert isinstance(getattr(cfg, name), str), name
    for name in optional_strs:
        assert getattr(cfg, name) is None or isinstance(getattr(cfg, name), str), name


TUNING_GOOD = {"n_tokens": [1, 20], "steps": [1, 80], "batch_size": [8], "lr": [0.03, 1], "weight_decay": [0.0, 0.1],
               "warmup_steps": [0, 10], "grad_clip": [1.0], "init": ["vocab", "random", "text"],
               "init_text": [None, "Give the plural"], "seed": [0, 7], "eval_every": [5], "max_eval_examples": [16],
               "max_test_examples": [40], "max_train_examples": [None, 100], "eval_batch_size": [16],
               "objective": ["task", "distill"], "teacher_prompt": [None, "Say it"],
               "distill_targets": ["task", "teacher"], "distill_max_new_tokens": [24], "patience": [None, 3]}


@FUZZ
@given(kwargs=_config_values(TuningConfig, TUNING_GOOD))
def test_tuning_config_never_crashes(kwargs):
    cfg = load_or_reject(lambda: TuningConfig(**kwargs), "")
    if cfg is not None:
        _assert_sane_config(cfg, ("n_tokens", "steps", "batch_size", "warmup_steps", "seed", "eval_every",
                                  "max_eval_examples", "max_test_examples", "eval_batch_size",
                                  "distill_max_new_tokens"),
                            ("lr", "weight_decay", "grad_clip"), ("max_train_examples", "patience"),
                            ("init", "objective", "distill_targets"), ("init_text", "teacher_prompt"))
        assert cfg.lr > 0 and cfg.weight_decay >= 0 and cfg.grad_clip > 0


PEZ_GOOD = {"n_tokens": [1, 10], "steps": [1, 200], "batch_size": [8], "lr": [0.3, 1], "grad_clip": [1.0],
            "weight": [0.0, 0.5, 1], "init": ["labels", "vocab"], "seed": [0, 3], "eval_every": [50],
            "max_eval_examples": [64], "max_test_examples": [200], "max_train_examples": [None, 100],
            "eval_batch_size": [16]}


@FUZZ
@given(kwargs=_config_values(PezConfig, PEZ_GOOD))
def test_pez_config_never_crashes(kwargs):
    cfg = load_or_reject(lambda: PezConfig(**kwargs), "")
    if cfg is not None:
        _assert_sane_config(cfg, ("n_tokens", "steps", "batch_size", "seed", "eval_every", "max_eval_examples",
                                  "max_test_examples", "eval_batch_size"),
                            ("lr", "grad_clip", "weight"), ("max_train_examples",), ("init",), ())


RLPROMPT_GOOD = {"n_tokens": [1, 5], "steps": [1, 150], "samples_per_step": [2, 8], "batch_size": [16],
                 "lr": [1e-4], "mlp_hidden": [256], "target_update": [0.01, 1], "correct_coef": [2.0],
                 "incorrect_coef": [1.8], "weight": [0.0, 0.3], "reward_scale": [1.0, 5],
                 "sql_loss": ["single_step", "path"], "top_k": [None, 256], "eval_every": [50], "seed": [0, 3],
                 "max_eval_examples": [64], "max_test_examples": [200], "max_train_examples": [None, 100],
                 "eval_batch_size": [16]}


@FUZZ
@given(kwargs=_config_values(RLPromptConfig, RLPROMPT_GOOD))
def test_rlprompt_config_never_crashes(kwargs):
    cfg = load_or_reject(lambda: RLPromptConfig(**kwargs), "")
    if cfg is not None:
        _assert_sane_config(cfg, ("n_tokens", "steps", "samples_per_step", "batch_size", "mlp_hidden", "seed",
                                  "eval_every", "max_eval_examples", "max_test_examples", "eval_batch_size"),
                            ("lr", "target_update", "correct_coef", "incorrect_coef", "weight",
                             "reward_scale"), ("max_train_examples", "top_k"), ("sql_loss",), ())
        assert cfg.samples_per_step >= 2 and 0 < cfg.target_update <= 1 and cfg.reward_scale > 0


# --- 5. cached API responses (SQLite) ---------------------------------------------------------------------------

REQUEST = {"endpoint": "http://127.0.0.1:1/v1/completions", "model": "m", "prompt": "hi", "max_tokens": 4}
KEY = request_key(REQUEST)
sql_value = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.floats(), text.map(lambda s: s.encode(
    "utf-8", "surrogatepass").decode("utf-8", "replace")), st.binary(max_size=12),
    st.binary(max_size=12).map(lambda b: ("invalid-utf8", b"\xff\xfe\n" + b)))
column_types = st.sampled_from(["", " TEXT", " INTEGER", " BLOB", " REAL", " TEXT NOT NULL", " PRIMARY KEY"])


@st.composite
def sqlite_files(draw) -> bytes:
    kind = draw(st.sampled_from(["schema", "schema", "rows", "garbled_schema", "garbage", "header", "damaged"]))
    if kind == "garbage":
        return draw(raw_bytes)
    if kind == "header":
        return b"SQLite format 3\x00" + draw(st.binary(max_size=600))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.sqlite"
        db = sqlite3.connect(str(path))
        if kind == "schema":  # a table, view or index named responses with other columns
            cols = draw(st.lists(st.sampled_from(["key", "request", "response", "created", "other"]), min_size=1,
                                 max_size=5, unique=True))
            shape = draw(st.sampled_from(["table", "table", "view", "other_table"]))
            decl = ", ".join(c + draw(column_types) for c in cols)
            if shape == "table":
                _execute(db, f"CREATE TABLE responses ({decl})")
            elif shape == "view":
                _execute(db, f"CREATE TABLE t ({decl})")
                _execute(db, "CREATE VIEW responses AS SELECT * FROM t")
            else:
                _execute(db, f"CREATE TABLE other ({decl})")
            target = "t" if shape == "view" else "other" if shape == "other_table" else "responses"
            for _ in range(draw(st.integers(0, 3))):
                values = [KEY if c == "key" and draw(st.booleans()) else draw(sql_value) for c in cols]
                _insert(db, target, cols, values)
        elif kind == "garbled_schema":  # the schema's own SQL or names are not UTF-8 (or not SQL)
            db.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, request TEXT, response TEXT)")
            db.execute("PRAGMA writable_schema=ON")
            column = draw(st.sampled_from(["sql", "name", "tbl_name"]))
            _execute(db, f"UPDATE sqlite_master SET {column} = CAST(? AS TEXT)",
                     (encode(draw(st.sampled_from(["CREATE TABLE responses (key) ,", "responses", "x"])))
                      + draw(st.binary(min_size=1, max_size=6)),))
        else:  # the real schema, rows with garbled values
            db.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, request TEXT NOT NULL, response TEXT "
                       "NOT NULL, created REAL NOT NULL DEFAULT (julianday('now')))")
            for _ in range(draw(st.integers(1, 4))):
                key = KEY if draw(st.booleans()) else draw(sql_value)
                _insert(db, "responses", ["key", "request", "response"], [key, draw(sql_value), draw(sql_value)])
        db.commit()
        db.close()
        data = path.read_bytes()
    if kind == "damaged" or draw(st.integers(0, 5)) == 0:  # truncate or overwrite a stretch of bytes
        at = draw(st.integers(0, len(data)))
        if draw(st.booleans()):
            data = data[:at]
        else:
            patch = draw(st.binary(min_size=1, max_size=64))
            data = data[:at] + patch + data[at + len(patch):]
    return data


def _insert(db: sqlite3.Connection, table: str, cols: list[str], values: list) -> None:
    marks = ", ".join("CAST(? AS TEXT)" if isinstance(v, tuple) else "?" for v in values)
    params = [v[1] if isinstance(v, tuple) else v for v in values]
    _execute(db, f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})", params)


def _execute(db: sqlite3.Connection, sql: str, params=()) -> None:
    try:
        db.execute(sql, params)
    except sqlite3.Error:
        pass  # SQLite refused the schema (two primary keys) or the row (NOT NULL): the file just holds less


@FUZZ
@given(data=sqlite_files(), wal=st.none() | raw_bytes)
def test_response_cache_never_crashes(data, wal):
    with workdir() as tmp:
        path = tmp / "responses.sqlite"
        path.write_bytes(data)
        if wal is not None:
            (tmp / "responses.sqlite-wal").write_bytes(wal)
        cache = load_or_reject(lambda: ResponseCache(path), path)
        if cache is None:
            return
        try:
            for request in (REQUEST, {**REQUEST, "max_tokens": 5}):
                got = load_or_reject(lambda r=request: cache.get(r), path)
                assert got is None or isinstance(got, str)
            if load_or_reject(lambda: cache.put({"other": 1}, "text") or True, path):
                assert load_or_reject(lambda: cache.get({"other": 1}), path) in ("text", None)  # None: rejected
            n = load_or_reject(lambda: len(cache), path)
            assert n is None or (type(n) is int and n >= 0)
        finally:
            cache.close()
