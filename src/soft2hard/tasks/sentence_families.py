"""Rule families about word categories and sentences (:mod:`soft2hard.tasks.compositional`).

Inputs are category member words (``data/categories.json``) or one-line sentences built from them by templates;
labels are category names or a stated pair of words. The DoD splits these tasks by category
(:func:`soft2hard.tasks.compositional.group_of`), so the held-out ones name categories that no training task names.
"""

from __future__ import annotations

import random
from itertools import combinations

from soft2hard.tasks.categories import categories
from soft2hard.tasks.compositional import Family
from soft2hard.tasks.families import (
    N_EXAMPLES,
    SAID,
    YN,
    balanced,
    labels_of,
    mapped,
    or_list,
    sample,
    worded,
    yes_no,
)


def _membership(rng, p):
    cats = categories()
    members = set(cats[p["cat"]])
    others = [w for name, ws in cats.items() if name != p["cat"] for w in ws if w not in members]
    return balanced(rng, {p["yes"]: sorted(members), p["no"]: others})


def _category_pair(rng, p):
    cats = categories()
    a, b = p["a"], p["b"]
    shared = set(cats[a]) & set(cats[b])
    return balanced(rng, {a: [w for w in cats[a] if w not in shared], b: [w for w in cats[b] if w not in shared]})


SENTENCES = ("I saw a {w} this morning.", "My friend keeps talking about the {w}.", "There was a {w} in the story.",
             "We read an article about a {w}.", "She asked me where the {w} was.", "He drew a picture of a {w}.",
             "The teacher mentioned a {w} today.", "Our neighbour told us about the {w}.",
             "Nobody expected to find a {w} there.", "They wrote a short poem about the {w}.")
FEELINGS = ("The {w} was {a}.", "I found the {w} really {a}.", "Honestly, that {w} felt {a}.",
            "Everyone said the {w} was {a}.", "What a {a} {w} that was.")
FEELING_WORDS = {"positive": ("great", "lovely", "wonderful", "excellent", "delightful", "pleasant", "fantastic",
                              "charming", "brilliant", "superb"),
                 "negative": ("awful", "terrible", "boring", "horrible", "dreadful", "disappointing", "ugly", "nasty",
                              "annoying", "miserable")}
FEELING_NOUNS = ("movie", "meal", "trip", "book", "concert", "hotel", "party", "game", "class", "show", "song", "day")


def _sentence_topic(rng, p):
    cats = categories()
    labels = p["labels"]
    seen = {w for label in labels for w in cats[label] if sum(w in cats[x] for x in labels) == 1}
    groups = {label: [t.format(w=w) for w in cats[label] if w in seen for t in SENTENCES] for label in labels}
    return balanced(rng, groups)


def _sentence_feeling(rng, p):
    pos, neg = p["pos"], p["neg"]
    groups = {label: [t.format(w=n, a=a) for a in FEELING_WORDS[kind] for n in FEELING_NOUNS for t in FEELINGS]
              for label, kind in ((pos, "positive"), (neg, "negative"))}
    return balanced(rng, groups)


QUESTIONS = ("Did you see the {w}?", "Where is the {w}?", "Have you ever had a {w}?", "Why is the {w} here?",
             "Can you show me the {w}?", "Who found the {w}?", "Is the {w} still there?", "What happened to the {w}?")


def _sentences(rng: random.Random, templates=SENTENCES) -> list[str]:
    words = sorted({w for ws in categories().values() for w in ws if " " not in w})
    return sample(rng, [t.format(w=w) for w in words for t in templates], 4 * N_EXAMPLES)


def _sentence_op(rng, p):
    def strip(s: str) -> list[str]:
        return s.rstrip(".?!").split()

    fns = {"first_word": lambda s: strip(s)[0], "last_word": lambda s: strip(s)[-1],
           "count_words": lambda s: str(len(strip(s))), "third_word": lambda s: strip(s)[2],
           "upper": str.upper, "longest_word": lambda s: max(strip(s), key=len)
           if sorted(map(len, strip(s)))[-1] > sorted(map(len, strip(s)))[-2] else None}
    return mapped(rng, _sentences(rng), fns[p["op"]])


def _sentence_test(rng, p):
    if p["test"] == "question":
        groups = {p["yes"]: _sentences(rng, QUESTIONS), p["no"]: _sentences(rng)}
        return balanced(rng, groups)
    cats = categories()
    if p["test"] == "mentions":
        members = {w for w in cats[p["cat"]] if " " not in w}
        others = sorted({w for c, ws in cats.items() if c != p["cat"] for w in ws if " " not in w} - members)
        fill = lambda ws: [t.format(w=w) for w in ws for t in SENTENCES]  # noqa: E731
        return balanced(rng, {p["yes"]: fill(sorted(members)), p["no"]: fill(others)})
    pool = _sentences(rng) + _sentences(rng, QUESTIONS)  # 4 to 8 words
    return yes_no(rng, pool, lambda s: len(s.split()) > p["k"], (p["yes"], p["no"]))


def _category_set(rng, p):
    cats = categories()
    labels = p["labels"]
    return balanced(rng, {a: [w for w in cats[a] if sum(w in cats[b] for b in labels) == 1] for a in labels})


def _label_sets(seed: str, count: int, sizes: tuple[int, ...]) -> tuple[dict, ...]:
    names = list(categories())
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < count:
        labels = tuple(rng.sample(names, rng.choice(sizes)))
        if frozenset(labels) not in seen:
            seen.add(frozenset(labels))
            out.append({"labels": labels, "choices": or_list(labels), "slug": "-".join(labels)})
    return tuple(out)




def _category_pairs() -> tuple[dict, ...]:
    pairs = [p for p in combinations(categories(), 2) if set(p) != {"fruit", "animal"}]  # that is gen/fruit_or_animal
    chosen = random.Random("comp-category-pair").sample(pairs, 400)
    return tuple({"a": a, "b": b} for a, b in chosen)


FAMILIES: tuple[Family, ...] = (
    Family("membership", ("Reply {yes} when the word is a kind of {cat}, and {no} otherwise.",
                          "Is this word a {cat}? Reply {yes} or {no}.",
                          "Say {yes} for words that belong to the category {cat} and {no} for all others."),
           tuple({"cat": c, **yn} for c in categories() for yn in YN[:1]), _membership, labels_of, keys=("cat",)),
    Family("category_pair", ("Say whether the given word names a {a} or a {b}.", "Classify the word as {a} or {b}.",
                             "Is the word a {a} or a {b}? Answer with one of the two."),
           _category_pairs(), _category_pair, labels_of, keys=("a", "b")),
    Family("sentence_topic", ("Say what the sentence is about: {choices}.",
                              "Classify each sentence by its topic ({choices}).",
                              "Which of these does the sentence talk about: {choices}? Answer with the category."),
           _label_sets("comp-sentence-topic", 600, (2, 2, 3, 4)), _sentence_topic, labels_of, level="sentence"),
    Family("sentence_feeling", ("Label the feeling of the sentence as {pos} or {neg}.",
                                "Is the speaker's opinion {pos} or {neg}? Answer with one word.",
                                "Classify the sentiment of the sentence: {pos} for a good opinion, {neg} for a bad one."),
           tuple({"pos": a, "neg": b} for a, b in (("positive", "negative"), ("good", "bad"), ("happy", "sad"),
                                                    ("like", "dislike"), ("pos", "neg"), ("yes", "no"))),
           _sentence_feeling, labels_of, twin="word_sentiment", level="sentence"),
    Family("category_set", ("Which of these categories does the given word belong to: {choices}?",
                            "Put the word into one of the groups {choices}.",
                            "Answer with the category of the word ({choices})."),
           _label_sets("comp-category-set", 250, (3, 4)), _category_set, labels_of),
    Family("sentence_op", SAID, worded("op", (
        ("first_word", "Output the first word of the sentence.", "Which word does the sentence start with?",
         "Copy only the opening word of the sentence."),
        ("last_word", "Output the last word of the sentence, without punctuation.",
         "Which word does the sentence end with?", "Copy only the final word of the sentence."),
        ("third_word", "Output the third word of the sentence.", "Which word is in position three?",
         "Copy the sentence's third word."),
        ("count_words", "Count the words in the sentence.", "How many words does the sentence have?",
         "Output the number of words in the sentence."),
        ("upper", "Rewrite the sentence in capital letters.", "Upper-case the whole sentence.",
         "Output the sentence with every letter capitalised."),
        ("longest_word", "Output the longest word of the sentence.",
         "Which word in the sentence has the most letters?", "Pick the longest word in the sentence."))),
           _sentence_op, keys=("op",), level="sentence"),
    Family("sentence_test", ("Reply {yes} if the sentence {cond}; reply {no} if it does not.",
                             "Does this sentence {cond2}? Answer {yes} or {no}.",
                             "Label the sentence {yes} when it {cond} and {no} otherwise."), tuple(
        [{"test": "question", "cond": "is a question", "cond2": "ask a question", "yes": y, "no": n}
         for y, n in (("yes", "no"), ("question", "statement"), ("true", "false"))]
        + [{"test": "longer", "k": k, "cond": f"has more than {k} words", "cond2": f"have more than {k} words", **yn}
           for k in (5, 6, 7) for yn in YN]
        + [{"test": "mentions", "cat": c, "cond": f"mentions a {c}", "cond2": f"mention a {c}", **YN[0]}
           for c in categories()]), _sentence_test, labels_of, keys=("test", "k", "cat", "yes"), level="sentence"),
)
