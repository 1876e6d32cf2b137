"""Reference texts for the dataset of datasets: what a perfect translation of a task's soft prompt says.

BIG-bench descriptions vary in quality ("A class for English plurals", "Multilingual, Multilevel,
Multidomain."). The reference is built from the best available field, and its provenance is recorded:
  rewrite          a short hand-checked rewrite (``REWRITES``), used where the fields say little
  definition       a Natural-Instructions definition, without its "Definition:" label
  description...   the task's own fields as the loader combined them (description, task_prefix, parent's)
  labels           the label set (classification DoD)
Long texts are cut to their first sentences (at most ``MAX_WORDS`` words): a 135M translator learns to emit a
short instruction far better than a paragraph, and ROUGE-L against a paragraph mostly measures length.
"""

from __future__ import annotations

import re

from soft2hard.tasks.base import Task

MAX_WORDS = 40
MIN_INFORMATIVE_WORDS = 5

# Hand-checked against the task's examples; the key is the registry name.
REWRITES = {
    "bigbench/linguistic_mappings/plural_json": "Give the plural form of the English noun.",
    "bigbench/linguistic_mappings/past_tense_regular_json": "Give the past tense of the English verb.",
    "bigbench/linguistic_mappings/past_tense_irregular_json": "Give the past tense of the irregular English verb.",
    "bigbench/linguistic_mappings/question_formation_json": "Turn the statement into a yes/no question.",
    "bigbench/linguistic_mappings/sentence_negation_json": "Negate the sentence.",
    "bigbench/linguistic_mappings/pronoun_replacement_json": "Replace the pronoun in the sentence.",
    "bigbench/linguistic_mappings/lexical_antonyms_json": "Give the antonym of the word.",
    "bigbench/multiemo/all_sentence_en": "Determine whether the opinion is positive, negative, neutral or "
                                         "ambivalent.",
    "bigbench/multiemo/all_text_en": "Determine whether the opinion is positive, negative, neutral or ambivalent.",
    "bigbench/word_sorting": "Sort the list of words alphabetically.",
    "bigbench/word_unscrambling": "Unscramble the letters to form an English word.",
    "bigbench/object_counting": "Count the objects mentioned in the question.",
    "bigbench/kanji_ascii/kanji_ascii_meaning": "Guess the meaning of the kanji drawn in ASCII art.",
    "bigbench/kanji_ascii/kanji_ascii_pronunciation": "Give the pronunciation of the kanji drawn in ASCII art.",
}


def _sentences(text: str) -> list[str]:
    text = " ".join(text.split())
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'(])", text) if s]


def shorten(text: str, max_words: int = MAX_WORDS) -> str:
    """Whole leading sentences up to ``max_words`` words (the first sentence is cut at a word if longer).
    A leading fragment of fewer than ``MIN_INFORMATIVE_WORDS`` words ("Multilingual, Multilevel,
    Multidomain.") is dropped when more follows."""
    sentences = _sentences(text)
    while len(sentences) > 1 and len(sentences[0].split()) < MIN_INFORMATIVE_WORDS:
        sentences = sentences[1:]
    out: list[str] = []
    for sentence in sentences:
        if out and len(" ".join(out + [sentence]).split()) > max_words:
            break
        out.append(sentence)
    words = " ".join(out).split()
    return " ".join(words[:max_words]) if words else ""


def reference_for(task: Task) -> tuple[str, str]:
    """(reference text, provenance) for a task of the general DoD."""
    if task.name in REWRITES:
        return REWRITES[task.name], "rewrite"
    text = task.description.strip()
    if text.startswith("Definition:"):
        return shorten(text[len("Definition:"):]), "definition"
    return shorten(text), task.description_source


def label_reference(labels: tuple[str, ...] | list[str]) -> str:
    """The reference of a classification-DoD task: its label set."""
    return ", ".join(labels)
