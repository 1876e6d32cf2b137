"""Context distillation: the KL objective on hand-checkable cases, training, resume, CLI errors."""

import pytest
import torch

import soft2hard.tuning as tuning
from soft2hard.cli import main
from soft2hard.distill import distill_loss, teacher_context, teacher_faithfulness
from soft2hard.errors import Soft2HardError
from soft2hard.tasks.base import Example, Task
from soft2hard.tuning import TuningConfig, tune
from tests.conftest import interrupt_on_call

WORDS = "apple banana cherry dog eagle frog grape house igloo jelly kite lemon mango nest olive piano".split()
TEACHER = "Repeat the first letter of the word."


@pytest.fixture
def task():
    return Task("t/first", "test", TEACHER, tuple(Example(w, w[0]) for w in WORDS))


def test_identical_teacher_and_student_give_zero_loss(tiny_llama, task, monkeypatch):
    # make the teacher's context equal to the student's: then the two distributions are the same
    monkeypatch.setattr("soft2hard.distill.teacher_context", lambda t, c: c)
    loss = distill_loss(tiny_llama, None, TEACHER, task, task.examples[:4])
    assert abs(float(loss)) < 1e-6


def test_kl_matches_a_hand_computation(tiny_llama, task):
    batch = task.examples[:2]
    prompt = torch.randn(3, tiny_llama.d_model)
    loss = distill_loss(tiny_llama, prompt, TEACHER, task, batch)
    ctx = [task.format_input(ex.input) for ex in batch]
    tgt = [task.format_target(ex.target) for ex in batch]
    t, _, _ = tiny_llama.target_logits(None, [teacher_context(TEACHER, c) for c in ctx], tgt)
    s, _, _ = tiny_llama.target_logits(prompt, ctx, tgt)
    p, q = t.softmax(-1), s.softmax(-1)
    expected = (p * (p.log() - q.log())).sum(-1).mean()
    assert torch.allclose(loss, expected, atol=1e-5) and float(loss) > 0


@pytest.mark.parametrize("targets", ["task", "teacher"])
def test_distillation_resumes_exactly(tiny_llama, task, tmp_path, monkeypatch, targets):
    cfg = TuningConfig(n_tokens=4, steps=6, batch_size=4, lr=0.1, eval_every=2, max_eval_examples=4,
                       max_test_examples=4, objective="distill", teacher_prompt=TEACHER, distill_targets=targets,
                       distill_max_new_tokens=5)
    full = tune(tiny_llama, task, cfg, tmp_path / "full", progress=False)
    m = full.metrics
    assert m["objective"] == "distill" and {"agreement", "mean_kl"} <= set(m["faithfulness"])
    assert full.prompt.metadata["teacher_prompt"] == TEACHER
    interrupt_on_call(monkeypatch, tuning, "distill_loss", 4)
    with pytest.raises(KeyboardInterrupt):
        tune(tiny_llama, task, cfg, tmp_path / "crash", progress=False)
    monkeypatch.undo()
    resumed = tune(tiny_llama, task, cfg, tmp_path / "crash", resume=True, progress=False)
    assert torch.equal(full.prompt.tensor, resumed.prompt.tensor)


def test_training_reduces_kl(tiny_llama, task, tmp_path):
    cfg = TuningConfig(n_tokens=4, steps=25, batch_size=8, lr=0.3, eval_every=25, max_eval_examples=4,
                       max_test_examples=6, objective="distill", teacher_prompt=TEACHER)
    m = tune(tiny_llama, task, cfg, tmp_path / "run", progress=False).metrics
    assert sum(m["losses"][-5:]) < sum(m["losses"][:5])
    assert teacher_faithfulness(tiny_llama, None, TEACHER, task, task.examples[:4])["mean_kl"] >= 0


def test_distill_needs_teacher_prompt():
    with pytest.raises(Soft2HardError, match="teacher prompt"):
        TuningConfig(objective="distill")
    with pytest.raises(Soft2HardError, match="objective"):
        TuningConfig(objective="nope")


def test_cli_teacher_prompt_file(tmp_path, tiny_llama_dir, capsys):
    (tmp_path / "teacher.txt").write_text("Give the first letter.\n")
    code = main(["tune", "--model", str(tiny_llama_dir), "--task", "gen/first_letter", "--objective", "distill",
                 "--teacher-prompt", f"@{tmp_path / 'teacher.txt'}", "--tokens", "3", "--steps", "2",
                 "--eval-every", "2", "--out", str(tmp_path / "run"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "distillation faithfulness" in out
    code = main(["tune", "--task", "gen/first_letter", "--objective", "distill", "--teacher-prompt",
                 f"@{tmp_path / 'missing.txt'}", "--out", str(tmp_path / "r2")])
    err = capsys.readouterr().err
    assert code == 2 and "missing.txt" in err and not (tmp_path / "r2").exists()


def test_teacher_continuations_are_the_teachers_greedy_output(tiny_llama, task):
    from soft2hard.distill import teacher_continuations

    examples = list(task.examples[:5])
    cont = teacher_continuations(tiny_llama, TEACHER, task, examples, max_new_tokens=6, batch_size=2)
    assert set(cont) == {ex.input for ex in examples}
    direct = tiny_llama.generate(None, [teacher_context(TEACHER, task.format_input(ex.input)) for ex in examples], 6)
    assert [cont[ex.input] for ex in examples] == [t + "\n" for t in direct]


def test_distillation_on_teacher_continuations_ignores_labels(tiny_llama, task, tmp_path):
    cfg = TuningConfig(n_tokens=4, steps=4, batch_size=4, lr=0.1, eval_every=2, max_eval_examples=4,
                       max_test_examples=4, objective="distill", teacher_prompt=TEACHER, distill_targets="teacher",
                       distill_max_new_tokens=5)
    full = tune(tiny_llama, task, cfg, tmp_path / "full", progress=False)
    # the task's targets play no part: scrambled labels give the very same prompt
    scrambled = Task(task.name, "test", TEACHER, tuple(Example(ex.input, "zz") for ex in task.examples))
    same = tune(tiny_llama, scrambled, cfg, tmp_path / "scrambled", progress=False)
    assert torch.equal(full.prompt.tensor, same.prompt.tensor)
    by_task = tune(tiny_llama, task, TuningConfig(**{**cfg.__dict__, "distill_targets": "task"}), tmp_path / "task",
                   progress=False)
    assert not torch.equal(full.prompt.tensor, by_task.prompt.tensor)


def test_cli_inputs_alias_and_teacher_targets(tmp_path, tiny_llama_dir, capsys):
    code = main(["tune", "--model", str(tiny_llama_dir), "--inputs", "gen/first_letter", "--objective", "distill",
                 "--teacher-prompt", "Give the first letter.", "--distill-targets", "teacher", "--tokens", "3",
                 "--steps", "2", "--eval-every", "2", "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 0 and "distillation faithfulness" in capsys.readouterr().out
    code = main(["tune", "--model", str(tiny_llama_dir), "--objective", "distill", "--teacher-prompt", "x",
                 "--out", str(tmp_path / "r2")])
    assert code == 2 and "--inputs" in capsys.readouterr().err


def test_teacher_continuations_cover_only_the_inputs_the_run_uses(tiny_llama, tmp_path, monkeypatch):
    words = [f"{a}{b}" for a in "abcdefghij" for b in "klmnopqrst"]  # 100 inputs: far more than 2 steps use
    big = Task("t/big", "test", TEACHER, tuple(Example(w, w[0]) for w in words))
    seen = []
    real = tuning.teacher_continuations

    def recording(lm, teacher_prompt, task, examples, *args):
        seen.append([ex.input for ex in examples])
        return real(lm, teacher_prompt, task, examples, *args)

    monkeypatch.setattr(tuning, "teacher_continuations", recording)
    cfg = TuningConfig(n_tokens=4, steps=2, batch_size=3, lr=0.1, eval_every=2, max_eval_examples=4,
                       max_test_examples=4, objective="distill", teacher_prompt=TEACHER, distill_targets="teacher",
                       distill_max_new_tokens=3)
    tune(tiny_llama, big, cfg, tmp_path / "run", progress=False)
    splits = big.splits(seed=cfg.seed)
    expected = [ex.input for ex in splits.validation[:4]] + [
        ex.input for s in range(2) for ex in tuning.batch_for_step(splits.train, s, cfg)]
    assert seen == [expected] and len(set(expected)) <= 4 + 2 * 3 < len(splits.train)
