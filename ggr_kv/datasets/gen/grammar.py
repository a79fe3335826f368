"""A tiny template grammar: ``{slot}`` names expand from word lists, recursively.

Each rule maps a slot name to a list of alternatives; alternatives may contain further
``{slot}`` references. Values passed as keyword arguments win over rules, so a sentence can
mention the same title or actor everywhere it appears.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from ggr_kv.datasets.gen.rng import Rng

_SLOT = re.compile(r"\{([a-z_0-9]+)\}")
_ARTICLE = re.compile(r"\b([Aa]) (?=[aeio]|un[a-z])")

FEMALE_NAMES = (
    "Anna",
    "Clara",
    "Elena",
    "Grace",
    "Iris",
    "Karen",
    "Maya",
    "Olivia",
    "Quinn",
    "Rosa",
    "Tessa",
    "Wendy",
    "Yara",
    "Zoe",
    "Beatrice",
    "Diana",
    "Fiona",
    "Hannah",
    "Julia",
    "Lucy",
    "Nora",
    "Paula",
    "Ruth",
    "Una",
    "Vera",
    "Alice",
    "Eva",
    "Ingrid",
    "Lena",
    "Nina",
    "Sofia",
)
MALE_NAMES = (
    "Ben",
    "Daniel",
    "Frank",
    "Henry",
    "Jack",
    "Leo",
    "Nathan",
    "Peter",
    "Samuel",
    "Victor",
    "Xavier",
    "Adrian",
    "Caleb",
    "Ethan",
    "Gabriel",
    "Isaac",
    "Kevin",
    "Marcus",
    "Oscar",
    "Simon",
    "Thomas",
    "Walter",
    "Martin",
    "Hugo",
    "Jonah",
    "Miles",
    "Owen",
    "Felix",
    "Elliot",
)
FIRST_NAMES = FEMALE_NAMES + MALE_NAMES
LAST_NAMES = (
    "Adams",
    "Baker",
    "Carter",
    "Dawson",
    "Ellis",
    "Fisher",
    "Garner",
    "Hayes",
    "Irving",
    "Jensen",
    "Keller",
    "Lawson",
    "Morgan",
    "Nolan",
    "Owens",
    "Parker",
    "Quincy",
    "Reyes",
    "Sutton",
    "Turner",
    "Vance",
    "Walsh",
    "Young",
    "Zimmer",
    "Bishop",
    "Cole",
    "Doyle",
    "Foster",
    "Grant",
    "Hale",
    "Klein",
    "Lambert",
    "Marsh",
    "Novak",
    "Pratt",
    "Rhodes",
    "Shaw",
    "Thornton",
    "Underwood",
    "Webb",
    "Whitman",
    "Blake",
    "Chen",
    "Duarte",
    "Engel",
    "Ford",
    "Hoffman",
    "Ibarra",
    "Kaplan",
    "Lindqvist",
    "Moreau",
    "Okafor",
    "Petrov",
    "Rossi",
    "Sato",
    "Tanaka",
    "Vargas",
    "Weiss",
)


def person(rng: Rng) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def expand(
    rng: Rng, text: str, rules: Mapping[str, Sequence[str]], depth: int = 0, **fixed: str
) -> str:
    """Replace every ``{slot}`` in ``text`` from ``fixed`` or a random alternative of ``rules``."""
    if depth > 12:
        raise RecursionError(f"template grammar recursion too deep at {text!r}")

    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name in fixed:
            return fixed[name]
        if name not in rules:
            raise KeyError(f"no rule for slot {{{name}}} in {text!r}")
        return expand(rng, rng.choice(rules[name]), rules, depth + 1, **fixed)

    out = _SLOT.sub(sub, text)
    return _ARTICLE.sub(r"\1n ", out) if depth == 0 else out


def sentence_case(s: str) -> str:
    """Capitalize the first letter, leave the rest as written."""
    return s[:1].upper() + s[1:] if s else s


def words(s: str) -> int:
    return len(s.split())


def slug(s: str) -> str:
    """Lowercase ``a_b_c`` slug of letters and digits (for links and handles)."""
    return "_".join(re.findall(r"[a-z0-9]+", s.lower()))

