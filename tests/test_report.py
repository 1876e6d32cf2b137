"""The HTML report of an evaluation folder: content, escaping, bad inputs, and a real headless Chromium render."""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import os
import re
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from soft2hard.cli import report as cli_report
from soft2hard.cli.common import Parser
from soft2hard.errors import Soft2HardError
from soft2hard.report import write_report
from tests.conftest import require

SCRIPT = "<script>document.title='pwned'</script>"
IMG = "<img src=x onerror=\"document.title='pwned2'\">"
EVIL_TASK = f"gen/evil{SCRIPT}{IMG}"
TASKS = ("gen/plural", "cls/sentiment", EVIL_TASK)
SOURCE, TARGET = "smollm2-135m", "local:gemma3-270m"
TARGET_CONDITIONS = ("zero_shot", "few_shot", "reference", "projection", "inspect", "translator")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _row(task: str, condition: str, model: str, score: float | None) -> dict:
    gen = task != "cls/sentiment"
    text = condition not in ("soft_prompt", "zero_shot", "few_shot")
    return {"task": task, "answer_type": "generation" if gen else "classification", "condition": condition,
            "model": model, "metric": "rouge_l" if gen else "accuracy", "score": score,
            "exact_match": score if score is not None else None, "rouge_l": score if gen else None, "n": 20,
            "instruction": f"do {task}" if text else None, "perplexity": 12.5 if text else None,
            "word_validity": 0.9 if text else None, "faithfulness": 0.7 if text else None,
            "faithfulness_kl": 0.3 if text else None, "degenerate": [] if text else None}


def make_folder(root: Path, optional: bool = True) -> Path:
    """A synthetic ``soft2hard evaluate`` folder with an HTML/JS payload in a task name, a text and an output."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, task in enumerate(TASKS):
        rows.append(_row(task, "soft_prompt", SOURCE, 0.9 - 0.1 * i))
        for j, cond in enumerate(TARGET_CONDITIONS):
            score = None if (task == "gen/plural" and cond == "translator") else round(0.1 * j + 0.05 * i, 3)
            rows.append(_row(task, cond, TARGET, score))
    (root / "results.json").write_text(json.dumps(rows))
    if not optional:
        return root
    summary = {"settings": {"source": SOURCE, "targets": [TARGET], "seed": 0, "note": SCRIPT},
               "by_model": {SOURCE: {"soft_prompt": {"mean": 0.8, "std": 0.1, "n_tasks": 3}}}}
    texts = {}
    for task in TASKS:
        texts[task] = {"answer_type": "generation", "reference": f"Reference for {task}",
                       "texts": {"projection": {"text": "plural plural nouns", "perplexity": 310.2,
                                                "faithfulness": 0.41},
                                 "inspect": {"text": f"make it plural {SCRIPT} {IMG}", "perplexity": 55.0,
                                             "faithfulness": None},
                                 "translator": {"text": "Write the plural form.", "perplexity": None}}}
    layers = [1, 5, 9, 13]
    grid = [[round(0.05 * (s + t), 3) for t in range(4)] for s in range(4)]
    texts["gen/plural"]["inspect_grid"] = {"layers": layers, "rouge_l": grid, "best": [13, 13]}
    texts[EVIL_TASK]["inspect_grid"] = {"layers": layers, "rouge_l": grid, "best": [5, 9]}
    preds = {f"{TARGET}|{task}|{cond}": [{"input": f"cat {k}", "gold": "cats", "output": f"{SCRIPT}{IMG} {k}"}
                                         for k in range(5)]
             for task in TASKS for cond in ("zero_shot", "inspect")}
    (root / "summary.json").write_text(json.dumps(summary))
    (root / "texts.json").write_text(json.dumps(texts))
    (root / "predictions.json").write_text(json.dumps(preds))
    return root


class _Tags(HTMLParser):
    """Collects the elements (tag, attributes) of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def _parse(text: str) -> _Tags:
    p = _Tags()
    p.feed(text)
    return p


def test_report_content_escaping_and_self_contained(tmp_path):
    folder = make_folder(tmp_path / "eval")
    path = write_report(folder)
    assert path == folder / "report.html"
    text = path.read_text(encoding="utf-8")
    # the payload is text, never markup
    assert "<script>document.title" not in text and "<img src=x" not in text
    assert html.escape(SCRIPT, quote=True) in text and html.escape(IMG, quote=True) in text
    page = _parse(text)
    assert page.title == "soft2hard evaluation"
    assert not [t for t, _ in page.tags if t in ("script", "iframe", "object", "embed", "link")]
    # sections
    for section in ('id="settings"', 'id="summary"', 'id="per-task"', 'id="plots"', 'id="descriptions"',
                    'id="inspect"', 'id="predictions"', "<details>"):
        assert section in text, section
    for name in ("gen/plural", "cls/sentiment", SOURCE, TARGET, "Reference for gen/plural", "310.200"):
        assert html.escape(name) in text, name
    # only the first 3 predictions per group
    assert html.escape(f"{SCRIPT}{IMG} 2") in text and html.escape(f"{SCRIPT}{IMG} 3") not in text
    # images: inline PNG data URIs only; nothing fetched from anywhere
    imgs = [a for t, a in page.tags if t == "img"]
    assert len(imgs) == 1 + 1 + 2  # bars per target (soft prompt folded in), means, heatmaps (2)
    for a in imgs:
        assert a["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(a["src"].split(",", 1)[1]).startswith(PNG_SIGNATURE)
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?!data:)[a-z]+:""", text, re.I)


def test_summary_is_computed_from_rows(tmp_path):
    folder = make_folder(tmp_path / "eval")
    text = write_report(folder).read_text(encoding="utf-8")
    scores = [0.9, 0.8, 0.7]  # soft_prompt on the source, over the 3 tasks (summary.json says 0.8 +- 0.1)
    mean = sum(scores) / 3
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / 2)  # sample std, as in summary.json
    assert f"{mean:.3f} &plusmn; {std:.3f}" in text
    # translator: one null score left out -> n_tasks 2; the null cell is a dash
    assert re.search(r"<td>translator</td><td class=\"num\">[^<]*</td><td class=\"num\">2</td>", text)
    assert "\u2013" in text
    # best cell per row is highlighted (translator has the top score on the target model)
    assert text.count('class="num best"') >= len(TASKS)  # one table per target, soft prompt included


def test_seen_in_training_and_provenance_are_shown(tmp_path):
    """A result whose interpreter saw the task (evaluate's ``seen_in_training``, on the row and on the text) is
    flagged in its table cell and on its description card; summary.json's provenance is shown in the header."""
    folder = make_folder(tmp_path / "eval")
    plain = write_report(folder).read_text(encoding="utf-8")
    assert "seen in training" not in plain and "written by" not in plain
    rows = json.loads((folder / "results.json").read_text())
    for r in rows:
        if r["task"] == "gen/plural" and r["condition"] == "inspect":
            r["seen_in_training"] = True
    (folder / "results.json").write_text(json.dumps(rows))
    texts = json.loads((folder / "texts.json").read_text())
    texts["gen/plural"]["texts"]["inspect"]["seen_in_training"] = True
    (folder / "texts.json").write_text(json.dumps(texts))
    summary = json.loads((folder / "summary.json").read_text())
    summary["provenance"] = {"soft2hard": "0.1.0", "git_commit": None, "torch": SCRIPT}
    (folder / "summary.json").write_text(json.dumps(summary))
    text = write_report(folder).read_text(encoding="utf-8")
    row = next(line for line in text.split("<tr>") if line.startswith("<th>gen/plural</th><td"))
    cells = row.split("<td")[1:]
    conds = ["soft_prompt", *TARGET_CONDITIONS]
    assert ['seen in training' in c for c in cells] == [c == "inspect" for c in conds]
    assert text.count('<span class="seen">seen in training</span>') == 2  # the cell and the card
    assert "not a held-out score" in text
    assert "<b>written by:</b> soft2hard 0.1.0, torch " + html.escape(SCRIPT) in text  # None left out, escaped


def test_selection_and_induction_provenance_are_on_their_cards(tmp_path):
    folder = make_folder(tmp_path / "eval")
    texts = json.loads((folder / "texts.json").read_text())
    texts["gen/plural"]["texts"]["translator_selected"] = {
        "text": "Write the plural.", "selected": "translator:beam:1", "verified": True, "selection_agreement": 0.75,
        "selection_inputs": 16, "perplexity": 12.0, "faithfulness": 0.5}
    texts["gen/plural"]["texts"]["induced"] = {"text": "Add s.", "inducer": "api:gemma-3-270m", "n_demos": 5}
    texts[EVIL_TASK]["texts"]["translator_selected"] = {"text": "", "selected": "empty", "verified": False,
                                                        "selection_agreement": 0.25, "selection_inputs": 8}
    (folder / "texts.json").write_text(json.dumps(texts))
    text = write_report(folder).read_text(encoding="utf-8")
    assert "selected translator:beam:1 (verified; agreement 0.750 on 16 validation inputs)" in text
    assert "selected empty (NOT verified: no text sent; agreement 0.250 on 8 validation inputs)" in text
    assert "induced by api:gemma-3-270m from 5 demos" in text
    texts["gen/plural"]["texts"]["translator_selected"]["verified_by"] = "kl"  # same agreement as no text
    (folder / "texts.json").write_text(json.dumps(texts))
    text = write_report(folder).read_text(encoding="utf-8")
    assert "selected translator:beam:1 (verified by a lower KL only; agreement 0.750 on 16 validation inputs)" in text


def test_optional_files_absent_and_out(tmp_path):
    folder = make_folder(tmp_path / "eval", optional=False)
    out = tmp_path / "elsewhere" / "r.html"
    assert write_report(folder, out) == out
    text = out.read_text(encoding="utf-8")
    assert 'id="summary"' in text and 'id="per-task"' in text
    for section in ('id="settings"', 'id="descriptions"', 'id="inspect"', 'id="predictions"'):
        assert section not in text
    assert not (folder / "report.html").exists()


def _bad_folder(tmp_path: Path, case: str) -> tuple[Path, str]:
    folder = tmp_path / "eval"
    if case == "no_folder":
        return folder, "results.json"
    folder.mkdir()
    results = folder / "results.json"
    if case == "no_results":
        return folder, "results.json"
    if case == "not_list":
        results.write_text(json.dumps({"task": "x"}))
    elif case == "missing_score":
        row = _row("gen/plural", "zero_shot", TARGET, 0.5)
        del row["score"]
        results.write_text(json.dumps([row]))
    elif case == "invalid_json":
        results.write_text("[{")
    elif case == "bad_texts":
        make_folder(folder)
        (folder / "texts.json").write_text("[1, 2]")
        return folder, "texts.json"
    return folder, "results.json"


@pytest.mark.parametrize("case", ["no_folder", "no_results", "not_list", "missing_score", "invalid_json",
                                  "bad_texts"])
def test_bad_inputs_are_one_line_errors(tmp_path, case):
    folder, name = _bad_folder(tmp_path, case)
    with pytest.raises(Soft2HardError) as err:
        write_report(folder)
    msg = str(err.value)
    assert name in msg and "\n" not in msg
    if case == "missing_score":
        assert "score" in msg
    assert not (folder / "report.html").exists()


def test_cli_command(tmp_path, capsys):
    folder = make_folder(tmp_path / "eval")
    parser = Parser(prog="soft2hard")
    cli_report.add_parsers(parser.add_subparsers(dest="command", parser_class=Parser))
    args = parser.parse_args(["report", str(folder), "--out", str(tmp_path / "x.html")])
    cli_report.COMMANDS[args.command](args)
    assert capsys.readouterr().out.strip() == str(tmp_path / "x.html")
    assert (tmp_path / "x.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    args = parser.parse_args(["report", str(folder)])
    assert isinstance(args, argparse.Namespace) and args.out is None


def _chromium(tmp_path: Path, *args: str) -> str:
    """Run headless Chromium (its own profile, no network chatter) and return stdout; stops within 60 s."""
    chromium = require("chromium", "chromium-browser", executable=True,
                       hint="apt-get install --no-install-recommends chromium, or rerun scripts/install.sh as root")
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "HOME": str(tmp_path)})
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within 60 s: {' '.join(args)}")
    assert proc.returncode == 0, f"chromium exited {proc.returncode}: {err[-2000:]}"
    return out


def test_report_renders_in_headless_chromium(tmp_path):
    path = write_report(make_folder(tmp_path / "eval"))
    url = path.resolve().as_uri()
    dom = _chromium(tmp_path, "--dump-dom", url)
    page = _parse(dom)
    assert page.title == "soft2hard evaluation", f"document.title changed: {page.title!r}"
    assert "pwned" not in page.title
    assert "<h1>soft2hard evaluation</h1>" in dom
    assert not [t for t, _ in page.tags if t == "script"]
    assert all(a.get("src", "").startswith("data:image/png;base64,") for t, a in page.tags if t == "img")
    assert any(t == "table" and a.get("class") == "summary" for t, a in page.tags)
    for task in TASKS:
        assert html.escape(task, quote=False) in dom, task
    assert html.escape(SCRIPT, quote=False) in dom and html.escape(IMG, quote=False) in dom

    shot = tmp_path / "shot.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", url)
    assert shot.exists(), "chromium wrote no screenshot"
    data = shot.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
