"""The rule families of the compositional task generator (:mod:`soft2hard.tasks.compositional`).

Each family lists its parameter settings and at least three instruction templates worded differently. Inputs are
short (a word, a number, a list of three to five items, a one-line sentence) so that a ~135M-parameter model can
learn each rule from a soft prompt. Parameters that would make a task restate a ``gen/*`` task exactly are left
out, and families close to one carry ``twin`` (same split group).
"""

from __future__ import annotations

import random
from functools import cache

from soft2hard.tasks.base import Example
from soft2hard.tasks.categories import categories
from soft2hard.tasks.compositional import Family
from soft2hard.tasks.generated import N_EXAMPLES, balanced, sample, word_list

ORDINALS = ("first", "second", "third", "fourth", "fifth")
NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                "sixteen seventeen eighteen nineteen twenty twenty-one twenty-two twenty-three twenty-four "
                "twenty-five twenty-six twenty-seven twenty-eight twenty-nine thirty thirty-one thirty-two thirty-three "
                "thirty-four thirty-five thirty-six thirty-seven thirty-eight thirty-nine forty").split()
LETTERS = "aeiorstnlcdmp"
YES_NO = (("yes", "no"), ("true", "false"))
LIST_SIZES = (3, 4, 5)


@cache
def word_pool() -> list[str]:
    """The words of word-level tasks: the common-word list plus every one-word, letters-only category member."""
    extra = {w for ws in categories().values() for w in ws if w.isalpha() and w.islower()}
    return sorted(set(word_list()) | extra)


def mapped(rng: random.Random, items: list, fn, n: int = N_EXAMPLES) -> list[Example]:
    """Examples ``(x, fn(x))`` over up to ``n`` distinct items; items for which ``fn`` returns None are skipped."""
    out = []
    for x in sample(rng, items, len(items)):
        y = fn(x)
        if y is not None and y != "":
            out.append(Example(str(x), str(y)))
        if len(out) == n:
            break
    return out


def yes_no(rng: random.Random, items: list, test, labels: tuple[str, str]) -> list[Example]:
    yes, no = labels
    return balanced(rng, {yes: [str(x) for x in items if test(x)], no: [str(x) for x in items if not test(x)]})


def _lists(rng: random.Random, pool: list, sizes: tuple[int, ...], n: int = N_EXAMPLES) -> list[list]:
    """``n`` distinct lists of distinct items, each as long as a seeded draw from ``sizes`` (fewer lists if the
    draws keep repeating)."""
    seen: dict[tuple, None] = {}
    for _ in range(4 * n):
        seen.setdefault(tuple(rng.sample(pool, rng.choice(sizes))), None)
        if len(seen) == n:
            break
    return [list(xs) for xs in seen]


SAID = ("{say}", "{say2}", "{say3}")  # the instructions of a family whose every task is worded by hand


def worded(key: str, rows) -> tuple[dict, ...]:
    """Parameter settings from ``(value, instruction, instruction, instruction)`` rows: ``{key: value, "say": ...,
    "say2": ..., "say3": ...}``, for families written with :data:`SAID`."""
    return tuple({key: value, "say": a, "say2": b, "say3": c} for value, a, b, c in rows)


def _join(items) -> str:
    return ", ".join(str(x) for x in items)


# --- words -----------------------------------------------------------------------------------------------


def _nth_letter(rng, p):
    return mapped(rng, word_pool(), lambda w: w[p["k"] - 1] if len(w) > p["k"] else None)


def _letters_end(rng, p):
    k, end = p["k"], p["end"]
    return mapped(rng, word_pool(), lambda w: (w[:k] if end == "first" else w[-k:]) if len(w) > k + 1 else None)


def _drop_letter(rng, p):
    return mapped(rng, word_pool(), lambda w: w.replace(p["x"], "") if p["x"] in w else None)


def _replace_letter(rng, p):
    return mapped(rng, word_pool(), lambda w: w.replace(p["x"], p["y"]) if p["x"] in w else None)


def _affix(rng, p):
    return mapped(rng, word_pool(), lambda w: p["before"] + w + p["after"])


def _repeat(rng, p):
    return mapped(rng, [w for w in word_pool() if len(w) <= 6], lambda w: " ".join([w] * p["k"]))


def _word_rule(rng, p):
    rules = {
        "capitalize": str.capitalize,
        "double_letters": lambda w: "".join(c + c for c in w),
        "sort_letters": lambda w: "".join(sorted(w)) if "".join(sorted(w)) != w else None,
        "vowels": lambda w: "".join(c for c in w if c in "aeiou"),
        "consonants": lambda w: "".join(c for c in w if c not in "aeiou"),
        "spell_out": lambda w: "-".join(w) if len(w) <= 6 else None,
        "first_and_last": lambda w: w[0] + w[-1] if len(w) >= 3 else None,
    }
    return mapped(rng, word_pool(), rules[p["rule"]])


def _count_letter(rng, p):
    pool = word_pool()
    have = [w for w in pool if p["x"] in w]
    lacking = [w for w in pool if p["x"] not in w][: len(have) // 3]  # some zeros, mostly counts >= 1
    return mapped(rng, have + lacking, lambda w: str(w.count(p["x"])))


# --- numbers ---------------------------------------------------------------------------------------------


def _arith(rng, p):
    k, op = p["k"], p["op"]
    fns = {"add": lambda n: n + k, "subtract": lambda n: n - k if n >= k else None, "multiply": lambda n: n * k,
           "divide": lambda n: n // k if n % k == 0 else None, "remainder": lambda n: n % k}
    top = {"multiply": 60, "divide": 1000}.get(op, 100)
    return mapped(rng, list(range(top + 1)), fns[op])


def _digits(rng, p):
    fns = {"digit_sum": lambda n: sum(map(int, str(n))), "last_digit": lambda n: str(n)[-1],
           "first_digit": lambda n: str(n)[0], "reverse_digits": lambda n: str(n)[::-1] if n % 10 else None,
           "square": lambda n: n * n, "number_word": lambda n: NUMBER_WORDS[n], "count_digits": lambda n: len(str(n))}
    small = {"square": 50, "number_word": len(NUMBER_WORDS)}.get(p["rule"])  # what a small model can know
    return mapped(rng, list(range(small)) if small else list(range(10, 1000)), fns[p["rule"]])


def _two_numbers(rng, p):
    fns = {"difference": lambda a, b: a - b if a >= b else None, "product": lambda a, b: a * b,
           "smaller": lambda a, b: min(a, b) if a != b else None, "mean": lambda a, b: (a + b) // 2
           if (a + b) % 2 == 0 else None, "concat": lambda a, b: f"{a}{b}"}
    top = 12 if p["rule"] == "product" else 50
    pairs = [(a, b) for a in range(1, top + 1) for b in range(1, top + 1)]
    out = []
    for a, b in sample(rng, pairs, len(pairs)):
        y = fns[p["rule"]](a, b)
        if y is not None:
            out.append(Example(f"{a}, {b}", str(y)))
        if len(out) == N_EXAMPLES:
            break
    return out


# --- lists -----------------------------------------------------------------------------------------------


def _word_list_op(rng, p):
    op = p["op"]
    fns = {"first": lambda xs: xs[0], "last": lambda xs: xs[-1], "second": lambda xs: xs[1],
           "count": lambda xs: str(len(xs)), "reverse": lambda xs: _join(xs[::-1]), "sort": lambda xs: _join(sorted(xs)),
           "longest": lambda xs: max(xs, key=len) if sorted(map(len, xs))[-1] > sorted(map(len, xs))[-2] else None,
           "shortest": lambda xs: min(xs, key=len) if sorted(map(len, xs))[0] < sorted(map(len, xs))[1] else None,
           "upper": lambda xs: _join(x.upper() for x in xs), "initials": lambda xs: "".join(x[0] for x in xs)}
    pool = [w for w in word_pool() if len(w) <= 7]
    return [Example(_join(xs), y) for xs in _lists(rng, pool, LIST_SIZES, 2 * N_EXAMPLES) if (y := fns[op](xs))][:N_EXAMPLES]


def _number_list_op(rng, p):
    op = p["op"]
    fns = {"sum": sum, "max": max, "min": min, "ascending": lambda xs: _join(sorted(xs)),
           "descending": lambda xs: _join(sorted(xs, reverse=True)), "last": lambda xs: xs[-1],
           "range": lambda xs: max(xs) - min(xs)}
    top = 20 if op == "sum" else 99
    return [Example(_join(xs), str(fns[op](xs))) for xs in _lists(rng, list(range(1, top + 1)), LIST_SIZES)]


def _filter_words(rng, p):
    tests = {"longer": lambda w: len(w) > p["k"], "starts": lambda w: w[0] == p["x"], "contains": lambda w: p["x"] in w,
             "lacks": lambda w: p["x"] not in w}
    test = tests[p["test"]]
    pool = [w for w in word_pool() if len(w) <= 7]
    out = []
    for xs in _lists(rng, pool, LIST_SIZES, 4 * N_EXAMPLES):
        kept = [x for x in xs if test(x)]
        if 0 < len(kept) < len(xs):  # both kinds of item present, never an empty answer
            out.append(Example(_join(xs), _join(kept)))
    return out[:N_EXAMPLES]


def _filter_numbers(rng, p):
    tests = {"above": lambda n: n > p["k"], "below": lambda n: n < p["k"], "even": lambda n: n % 2 == 0,
             "odd": lambda n: n % 2 == 1, "multiple": lambda n: n % p["k"] == 0}
    test = tests[p["test"]]
    out = []
    for xs in _lists(rng, list(range(1, 100)), LIST_SIZES, 6 * N_EXAMPLES):
        kept = [x for x in xs if test(x)]
        if 0 < len(kept) < len(xs):
            out.append(Example(_join(xs), _join(kept)))
    return out[:N_EXAMPLES]


# --- classification ----------------------------------------------------------------------------------------


def _word_test(rng, p):
    tests = {"longer": lambda w: len(w) > p["k"], "starts": lambda w: w[0] == p["x"], "ends": lambda w: w[-1] == p["x"],
             "contains": lambda w: p["x"] in w, "double": lambda w: any(a == b for a, b in zip(w, w[1:]))}
    return yes_no(rng, word_pool(), tests[p["test"]], (p["yes"], p["no"]))


def _number_test(rng, p):
    tests = {"above": lambda n: n > p["k"], "below": lambda n: n < p["k"], "multiple": lambda n: n % p["k"] == 0}
    top = 300 if p["test"] == "multiple" else 100  # enough multiples of 9 for a test split
    return yes_no(rng, list(range(top)), tests[p["test"]], (p["yes"], p["no"]))


def labels_of(p) -> tuple[str, ...]:
    if "labels" in p:
        return tuple(p["labels"])
    for a, b in (("yes", "no"), ("a", "b"), ("pos", "neg")):
        if a in p:
            return (p[a], p[b])
    if "cat" in p:
        return (p["yes"], p["no"])
    raise KeyError(p)


def or_list(labels) -> str:
    *head, last = labels
    return f"{', '.join(head)} or {last}"


YN = [{"yes": y, "no": n} for y, n in YES_NO]

FAMILIES: tuple[Family, ...] = (
    Family("nth_letter", ("Output the {nth} letter of the given word.", "Write the letter in position {k} of the word.",
                          "Which letter comes {nth} in this word? Answer with that letter only."),
           tuple({"k": k, "nth": ORDINALS[k - 1]} for k in (2, 3, 4, 5)), _nth_letter, twin="first_letter", keys=("k",)),
    Family("letters_end", ("Output the {end} {k} letters of the given word.", "Copy only the {end} {k} letters of the word.",
                           "Keep the {end} {k} characters of the word and drop the rest."),
           tuple({"k": k, "end": e} for e in ("first", "last") for k in (2, 3, 4)), _letters_end, keys=("end", "k")),
    Family("drop_letter", ("Remove every letter {x} from the given word.", "Write the word again without any '{x}'.",
                           "Delete all occurrences of the letter {x} in the word and output what is left."),
           tuple({"x": x} for x in LETTERS), _drop_letter),
    Family("replace_letter", ("Replace every letter {x} in the given word with {y}.",
                              "Rewrite the word, changing each '{x}' into '{y}'.",
                              "Swap all occurrences of the letter {x} for the letter {y} and output the word."),
           tuple({"x": x, "y": y} for x in "aeiostnrl" for y in "aeiouxz" if x != y), _replace_letter),
    Family("affix", ("Add {what} to the given word.", "Write the word with {what}.",
                     "Output the word, changed by adding {what}."),
           tuple({"before": b, "after": a, "what": w, "slug": s} for b, a, w, s in (
               ("", "ing", "the ending 'ing'", "ing"), ("", "s", "an 's' at the end", "s"),
               ("", "ly", "'ly' at the end", "ly"), ("", "er", "'er' at the end", "er"),
               ("", "!", "an exclamation mark at the end", "bang"), ("", "?", "a question mark at the end", "q"),
               ("un", "", "the prefix 'un' in front", "un"), ("re", "", "'re' in front", "re"),
               ("super", "", "'super' in front", "super"), ("the ", "", "the word 'the' in front", "the"),
               ("(", ")", "round brackets around it", "parens"), ("[", "]", "square brackets around it", "brackets"),
               ('"', '"', "double quotes around it", "quotes"), ("*", "*", "a star on each side", "stars"),
               ("#", "", "a hash sign in front", "hash"), ("my ", "", "the word 'my' in front", "my"))),
           _affix),
    Family("repeat", ("Repeat the given word {k} times, separated by spaces.", "Write the word {times} in a row.",
                      "Output the word {k} times with a space between the copies."),
           tuple({"k": k, "times": t} for k, t in ((2, "twice"), (3, "three times"), (4, "four times"))), _repeat, keys=("k",)),
    Family("word_rule", SAID, worded("rule", (
        ("capitalize", "Capitalize the given word: make its first letter upper case.",
         "Write the word with a capital first letter.", "Start the word with a capital letter."),
        ("double_letters", "Write every letter of the given word twice.",
         "Double each letter of the word.", "Repeat each character of the word once more."),
        ("sort_letters", "Sort the letters of the given word in alphabetical order.",
         "Rearrange the word's letters from a to z.", "Output the letters of the word sorted alphabetically."),
        ("vowels", "Output only the vowels of the given word.",
         "Keep the vowels (a, e, i, o, u) of the word and drop the other letters.",
         "Write just the vowels that appear in the word, in order."),
        ("consonants", "Output only the consonants of the given word.",
         "Remove the vowels from the word.", "Delete every a, e, i, o and u from the word."),
        ("spell_out", "Spell the given word with hyphens between its letters.",
         "Write the letters of the word separated by dashes.",
         "Put a hyphen between each pair of neighbouring letters."),
        ("first_and_last", "Output the first and the last letter of the given word.",
         "Write the word's first letter followed by its last letter.",
         "Join the first and final letters of the word."))), _word_rule, keys=("rule",)),
    Family("count_letter", ("Count how many times the letter {x} appears in the given word.",
                            "How many '{x}' letters does the word have? Answer with a number.",
                            "Output the number of occurrences of {x} in the word."),
           tuple({"x": x} for x in LETTERS), _count_letter),
    Family("arith", ("{Verb} the given number {how} and output the result.", "Output the number {what}.",
                     "Compute {what2} and write it."), tuple(
        [{"op": "add", "k": k, "Verb": "Increase", "how": f"by {k}", "what": f"plus {k}", "what2": f"the number + {k}"}
         for k in range(2, 31)]
        + [{"op": "subtract", "k": k, "Verb": "Decrease", "how": f"by {k}", "what": f"minus {k}",
            "what2": f"the number - {k}"} for k in range(1, 21)]
        + [{"op": "multiply", "k": k, "Verb": "Multiply", "how": f"by {k}", "what": f"times {k}",
            "what2": f"the number * {k}"} for k in range(2, 11)]
        + [{"op": "divide", "k": k, "Verb": "Divide", "how": f"by {k}", "what": f"divided by {k}",
            "what2": f"the number / {k}"} for k in range(2, 6)]
        + [{"op": "remainder", "k": k, "Verb": "Divide", "how": f"by {k}, keep the remainder,",
            "what": f"modulo {k} (the remainder after dividing by {k})", "what2": f"the number mod {k}"}
           for k in range(2, 8)]), _arith, keys=("op", "k"), level="number"),
    Family("digits", SAID, worded("rule", (
        ("digit_sum", "Add up the digits of the given number.", "Output the sum of the number's digits.",
         "What do the digits of the number add up to?"),
        ("last_digit", "Output the last digit of the given number.", "Write the number's final digit.",
         "Which digit does the number end with?"),
        ("first_digit", "Output the first digit of the given number.",
         "Write the leading digit of the number.", "Which digit does the number start with?"),
        ("reverse_digits", "Write the digits of the given number in reverse order.",
         "Reverse the number digit by digit.", "Output the number read backwards."),
        ("square", "Output the square of the given number.", "Multiply the number by itself.",
         "Compute the number squared."),
        ("number_word", "Write the given number as an English word.",
         "Spell the number out in letters.", "Output the English name of the number."),
        ("count_digits", "Output how many digits the given number has.",
         "Count the digits of the number.", "How many digits long is the number?"))),
           _digits, keys=("rule",), level="number"),
    Family("two_numbers", SAID, worded("rule", (
        ("difference", "Subtract the second number from the first.",
         "Output the first number minus the second.", "Compute the difference a - b of the two numbers."),
        ("product", "Multiply the two given numbers.", "Output the product of the two numbers.",
         "What is the first number times the second?"),
        ("smaller", "Output the smaller of the two given numbers.", "Which of the two numbers is lower?",
         "Write the minimum of the two numbers."),
        ("mean", "Output the average of the two given numbers.", "Compute the mean of the two numbers.",
         "What number lies exactly halfway between the two?"),
        ("concat", "Write the two given numbers next to each other as one number.",
         "Join the two numbers without a space.", "Glue the second number onto the end of the first."))),
           _two_numbers, twin="sum_two_numbers", keys=("rule",), level="number"),
    Family("word_list_op", SAID, worded("op", (
            ("first", "Output the first word of the list.", "Which item comes first in the list?", "Copy the list's first entry."),
            ("last", "Output the last word of the list.", "Which item comes last in the list?", "Copy the final entry of the list."),
            ("second", "Output the second word of the list.", "Which item is in position two?", "Copy the list's second entry."),
            ("count", "Count the words in the list.", "How many items does the list have?", "Output the number of entries."),
            ("reverse", "Write the list in reverse order.", "Reverse the order of the items.", "Output the items from last to first."),
            ("sort", "Sort the words of the list alphabetically.", "Put the items in alphabetical order.",
             "Output the list sorted from a to z."),
            ("longest", "Output the longest word in the list.", "Which item has the most letters?", "Pick the longest entry."),
            ("shortest", "Output the shortest word in the list.", "Which item has the fewest letters?", "Pick the shortest entry."),
            ("upper", "Write every word of the list in capital letters.", "Upper-case all the items.",
             "Output the list in upper case."),
            ("initials", "Output the first letters of the words in the list, joined.", "Write the initials of the items.",
             "Join the first letter of each entry into one string."))), _word_list_op, keys=("op",), level="list"),
    Family("number_list_op", SAID, worded("op", (
            ("sum", "Add up the numbers in the list.", "Output the total of all the numbers.", "What do the numbers sum to?"),
            ("max", "Output the largest number in the list.", "Which number in the list is the biggest?",
             "Write the maximum of the numbers."),
            ("min", "Output the smallest number in the list.", "Which number in the list is the lowest?",
             "Write the minimum of the numbers."),
            ("ascending", "Sort the numbers from smallest to largest.", "Put the numbers in increasing order.",
             "Output the list in ascending order."),
            ("descending", "Sort the numbers from largest to smallest.", "Put the numbers in decreasing order.",
             "Output the list in descending order."),
            ("last", "Output the last number of the list.", "Which number comes last?", "Copy the final number."),
            ("range", "Output the largest number minus the smallest.", "Compute the range of the list (max - min).",
             "How far apart are the biggest and the smallest number?"))), _number_list_op, keys=("op",), level="list"),
    Family("filter_words", ("{say}", "{say2}", "{say3}"), tuple(
        [{"test": "longer", "k": k, "say": f"Keep only the words with more than {k} letters.",
          "say2": f"Remove every word of {k} letters or fewer from the list.",
          "say3": f"Output the items that are longer than {k} characters."} for k in (3, 4, 5, 6)]
        + [{"test": t, "x": x, "say": s.format(x=x), "say2": s2.format(x=x), "say3": s3.format(x=x)}
           for x in "abcmst" for t, s, s2, s3 in (
               ("starts", "Keep only the words that start with {x}.", "Remove the words that do not begin with '{x}'.",
                "Output the items whose first letter is {x}."),
               ("contains", "Keep only the words that contain the letter {x}.", "Remove the words without any '{x}'.",
                "Output the items in which {x} appears."),
               ("lacks", "Remove every word that contains the letter {x}.", "Keep the words that have no '{x}' in them.",
                "Output the items in which {x} does not appear."))]), _filter_words, keys=("test", "k", "x"), level="list"),
    Family("filter_numbers", ("{say}", "{say2}", "{say3}"), tuple(
        [{"test": "above", "k": k, "say": f"Keep only the numbers greater than {k}.",
          "say2": f"Remove every number that is {k} or less.", "say3": f"Output the numbers above {k}."}
         for k in (10, 25, 40, 60, 75, 90)]
        + [{"test": "below", "k": k, "say": f"Keep only the numbers smaller than {k}.",
            "say2": f"Remove every number that is {k} or more.", "say3": f"Output the numbers below {k}."}
           for k in (20, 35, 50, 80)]
        + [{"test": "multiple", "k": k, "say": f"Keep only the numbers divisible by {k}.",
            "say2": f"Remove the numbers that are not multiples of {k}.",
            "say3": f"Output the numbers that {k} divides evenly."} for k in (3, 4, 5, 10)]
        + [{"test": t, "say": f"Keep only the {t} numbers.", "say2": f"Remove every number that is not {t}.",
            "say3": f"Output the {t} numbers of the list."} for t in ("even", "odd")]), _filter_numbers, keys=("test", "k"), level="list"),
    Family("word_test", ("Reply {yes} when the word {cond}, and {no} otherwise.",
                         "Does the word {cond2}? Reply {yes} or {no}.",
                         "Say {yes} when the word {cond} and {no} when it does not."), tuple(
        [{"test": "longer", "k": k, "cond": f"has more than {k} letters", "cond2": f"have more than {k} letters", **yn}
         for k in (3, 4, 5, 6, 7) for yn in YN]
        + [{"test": t, "x": x, "cond": c.format(x=x), "cond2": c2.format(x=x), **yn}
           for t, c, c2, letters in (("starts", "starts with the letter {x}", "start with '{x}'", "abcefhoprst"),
                                     ("ends", "ends with the letter {x}", "end with '{x}'", "degklnrty"),
                                     ("contains", "contains the letter {x}", "contain the letter '{x}'", "abcdeilmnoprstu"))
           for x in letters for yn in YN]
        + [{"test": "double", "cond": "has the same letter twice in a row", "cond2": "contain a doubled letter", **yn}
           for yn in YN]), _word_test, labels_of, keys=("test", "k", "x", "yes")),
    Family("number_test", ("Reply {yes} when the number {cond}, and {no} otherwise.",
                           "Is the number {cond2}? Reply {yes} or {no}.",
                           "Say {yes} when the number {cond} and {no} when it does not."), tuple(
        [{"test": "above", "k": k, "cond": f"is greater than {k}", "cond2": f"bigger than {k}", **yn}
         for k in (30, 40, 60, 70) for yn in YN]
        + [{"test": "multiple", "k": k, "cond": f"is divisible by {k}", "cond2": f"a multiple of {k}", **yn}
           for k in range(3, 10) for yn in YN]
        + [{"test": "below", "k": k, "cond": f"is smaller than {k}", "cond2": f"less than {k}", **yn}
           for k in (35, 45, 55, 65) for yn in YN]), _number_test, labels_of, twin="greater_than_50", keys=("test", "k", "yes"),
           level="number"),
)
