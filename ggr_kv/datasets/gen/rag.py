"""``rag``: questions with five retrieved passages each (SQuAD-like retrieval results).

A pool of short encyclopedia passages describes invented rivers, towns, scientists,
bridges and ships; every question asks about a fact in one passage. Its five contexts are
the best-scoring passages under a noisy retriever: the gold passage, other passages about
the same subject and a few about similar subjects. Questions about one subject therefore
share most of their passages, in varying positions. Rows are in random order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ggr_kv.datasets.gen.grammar import FIRST_NAMES, LAST_NAMES, expand
from ggr_kv.datasets.gen.rng import Rng

K = 5
COLUMNS = ("question",) + tuple(f"context{i}" for i in range(1, K + 1))

_ROOTS = (
    "Arven",
    "Belmar",
    "Cressing",
    "Dunholt",
    "Elbury",
    "Farrow",
    "Galen",
    "Holloway",
    "Ilsted",
    "Jarrow",
    "Kelby",
    "Lorne",
    "Marrick",
    "Nessing",
    "Orwell",
    "Pendry",
    "Quarley",
    "Rossel",
    "Selwick",
    "Tamber",
    "Ulting",
    "Varden",
    "Wexley",
    "Yarmon",
)
_REGIONS = (
    "the northern uplands",
    "the eastern lowlands",
    "the central plain",
    "the western coastlands",
    "the southern hills",
    "the lake district",
)
_FIELDS = ("chemistry", "astronomy", "botany", "geology", "mathematics", "physiology")
_FINDS = {
    "chemistry": ("a stable method for purifying chlorine", "the first synthetic dye of blue"),
    "astronomy": ("a periodic comet", "the rotation period of a distant moon"),
    "botany": ("a frost-resistant strain of wheat", "a fern species thought to be extinct"),
    "geology": ("the origin of the valley's salt deposits", "a new method for dating rock layers"),
    "mathematics": ("a proof about prime gaps", "an early algorithm for solving linear systems"),
    "physiology": ("the role of a hormone in sleep", "how muscles store oxygen"),
}
_INDUSTRY = (
    "wool weaving",
    "shipbuilding",
    "paper making",
    "coal mining",
    "clock making",
    "brewing",
    "salt production",
    "glass blowing",
)
_MONTHS = ("January", "March", "April", "May", "June", "August", "September", "October")


def _river(rng: Rng, name: str) -> tuple[dict, list[tuple[str, list[str]]]]:
    f = {
        "name": f"{name} River",
        "len": str(rng.randint(40, 620)),
        "src": f"{rng.choice(_ROOTS)} Hills",
        "region": rng.choice(_REGIONS),
        "mouth": f"{rng.choice(_ROOTS)} Bay",
        "trib": f"{rng.choice(_ROOTS)}water",
        "dam": str(rng.randint(1890, 1975)),
        "town": f"{rng.choice(_ROOTS)}ford",
        "fish": rng.choice(("salmon", "trout", "eel", "pike")),
    }
    aspects = [
        (
            (
                "The {name} is a river in {region}, about {len} kilometres long. It rises in the "
                "{src} and flows through farmland and forest before reaching the sea at {mouth}. "
                "For most of its length the valley is narrow and steep, and the few roads follow the "
                "river closely."
            ),
            [
                "How long is the {name}?",
                "Where does the {name} rise?",
                "Where does the {name} reach the sea?",
            ],
        ),
        (
            (
                "Its largest tributary, the {trib}, joins the {name} just above the market town of "
                "{town}. Spring floods were common in the valley until a dam was completed in {dam}, "
                "creating a reservoir that still supplies drinking water to the region. The reservoir "
                "is also used for sailing."
            ),
            [
                "Which is the largest tributary of the {name}?",
                ("When was the dam on the {name} completed?"),
                "Which town lies near the confluence of the {trib} and the {name}?",
            ],
        ),
        (
            (
                "The {name} is known for its {fish}, which return each autumn to spawn in the upper "
                "reaches. Fishing rights along the river have been managed by a local trust since the "
                "nineteenth century, and numbers have recovered after a decline in the 1970s. Anglers "
                "need a permit from the trust."
            ),
            ["Which fish is the {name} known for?", "Who manages fishing rights on the {name}?"],
        ),
        (
            (
                "Water mills once lined the lower {name}, grinding grain and later powering textile "
                "works around {town}. Most closed during the twentieth century, but two have been "
                "restored and are open to visitors during the summer months. One of them still grinds "
                "flour for a local bakery."
            ),
            [
                "What did the water mills on the lower {name} power?",
                "How many mills on the {name} have been restored?",
            ],
        ),
    ]
    return f, aspects


def _town(rng: Rng, name: str) -> tuple[dict, list[tuple[str, list[str]]]]:
    f = {
        "name": f"{name}",
        "founded": str(rng.randint(900, 1700)),
        "pop": f"{rng.randint(3, 95)},{rng.randint(100, 999)}",
        "region": rng.choice(_REGIONS),
        "industry": rng.choice(_INDUSTRY),
        "month": rng.choice(_MONTHS),
        "landmark": f"St {rng.choice(FIRST_NAMES)}'s Church",
        "mayor": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
    }
    aspects = [
        (
            (
                "{name} is a market town in {region} with a population of about {pop}. It was first "
                "recorded in {founded}, when a charter granted it the right to hold a weekly market "
                "on the square that is still the centre of the town. The market is still held every "
                "Thursday."
            ),
            ["What is the population of {name}?", "When was {name} first recorded?"],
        ),
        (
            (
                "For three centuries the economy of {name} depended on {industry}. The trade brought "
                "wealth to the town's merchants, who built the large stone houses along the high "
                "street, and it declined only after the railway arrived. A small museum now tells its "
                "story."
            ),
            [
                "Which industry did the economy of {name} depend on?",
                "What ended the importance of the traditional trade in {name}?",
            ],
        ),
        (
            (
                "The oldest building in {name} is {landmark}, whose tower can be seen from miles "
                "around. Every {month} the town holds a festival in its grounds, with music, a craft "
                "fair and a procession through the streets. Visitors come from across the region."
            ),
            [
                "What is the oldest building in {name}?",
                ("In which month is the {name} festival held?"),
            ],
        ),
        (
            (
                "{name} has been governed by an elected council since 1888. The current mayor, {mayor}, "
                "has promised to restore the old market hall and to improve bus links to the "
                "surrounding villages. Council meetings are held in the old guildhall."
            ),
            [
                "Who is the current mayor of {name}?",
                ("Since when has {name} had an elected council?"),
            ],
        ),
    ]
    return f, aspects


def _scientist(rng: Rng, name: str) -> tuple[dict, list[tuple[str, list[str]]]]:
    field = rng.choice(_FIELDS)
    f = {
        "name": f"{rng.choice(FIRST_NAMES)} {name}",
        "born": str(rng.randint(1780, 1920)),
        "town": f"{rng.choice(_ROOTS)}ham",
        "field": field,
        "find": rng.choice(_FINDS[field]),
        "uni": f"the University of {rng.choice(_ROOTS)}",
        "award": str(rng.randint(1850, 1975)),
        "book": f"{rng.choice(('Notes on', 'Elements of', 'Letters on', 'A First Course in'))} "
        f"{field.capitalize()}",
    }
    aspects = [
        (
            (
                "{name} was born in {born} in {town}, the child of a schoolteacher. After studying "
                "{field} at {uni}, {name} stayed on as a lecturer and remained there for most of a long "
                "career. Former students described a patient teacher with a dry sense of humour."
            ),
            ["When was {name} born?", "Where did {name} study?", "Where was {name} born?"],
        ),
        (
            (
                "{name} is best remembered for discovering {find}. The result was at first doubted "
                "by colleagues but was confirmed by independent experiments within a decade, and it "
                "earned {name} a national medal in {award}. The original notebooks are kept in the "
                "university library."
            ),
            ["What is {name} best remembered for?", "When did {name} receive a national medal?"],
        ),
        (
            (
                "In later life {name} wrote a popular textbook, {book}, which went through many "
                "editions and was translated into several languages. It was praised for its clear "
                "explanations and simple experiments. A revised edition was still in print fifty years "
                "later."
            ),
            ["What textbook did {name} write?", "What was {name}'s textbook {book} praised for?"],
        ),
    ]
    return f, aspects


def _bridge(rng: Rng, name: str) -> tuple[dict, list[tuple[str, list[str]]]]:
    f = {
        "name": f"{name} Bridge",
        "opened": str(rng.randint(1820, 1990)),
        "len": str(rng.randint(80, 1900)),
        "river": f"{rng.choice(_ROOTS)} River",
        "eng": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
        "kind": rng.choice(("suspension", "stone arch", "cantilever", "cable-stayed")),
        "cars": f"{rng.randint(5, 60)},000",
    }
    aspects = [
        (
            (
                "The {name} is a {kind} bridge over the {river}. Designed by the engineer {eng}, it "
                "was opened in {opened} and replaced a ferry that had operated at the same crossing "
                "for more than two hundred years. Tolls were abolished after the debts were paid off."
            ),
            [
                "Who designed the {name}?",
                "When was the {name} opened?",
                "Which river does the {name} cross?",
            ],
        ),
        (
            (
                "With a total length of {len} metres, the {name} was among the longest of its kind "
                "when it opened. Today about {cars} vehicles cross it each day, and a footpath on the "
                "downstream side is popular with walkers. It was strengthened and repainted in the "
                "1990s."
            ),
            ["How long is the {name}?", "How many vehicles cross the {name} each day?"],
        ),
        (
            (
                "During construction of the {name}, flooding twice washed away the temporary "
                "supports, delaying the work by almost a year. A plaque near the southern end "
                "remembers the workers who died during the building. Their names were added in 1950."
            ),
            [
                "What delayed the construction of the {name}?",
                "What does the plaque near the {name} commemorate?",
            ],
        ),
    ]
    return f, aspects


def _ship(rng: Rng, name: str) -> tuple[dict, list[tuple[str, list[str]]]]:
    f = {
        "name": f"SS {name}",
        "launched": str(rng.randint(1850, 1950)),
        "yard": f"{rng.choice(_ROOTS)} Shipyard",
        "tons": f"{rng.randint(1, 30)},{rng.randint(100, 999)}",
        "captain": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
        "route": f"{rng.choice(_ROOTS)} and {rng.choice(_ROOTS)}",
        "fate": str(rng.randint(1955, 1985)),
    }
    aspects = [
        (
            (
                "The {name} was a passenger steamship built at the {yard} and launched in {launched}. "
                "At {tons} gross tons she was one of the largest ships of her company, and she carried "
                "mail and passengers between {route}. The crossing took about eleven hours."
            ),
            [
                "Where was the {name} built?",
                "When was the {name} launched?",
                "Between which ports did the {name} sail?",
            ],
        ),
        (
            (
                "Under Captain {captain}, the {name} rescued the crew of a sinking fishing boat during "
                "a winter storm, an event that made the captain a local hero and was later retold in "
                "a popular ballad. The company awarded every crew member a silver medal."
            ),
            [
                "Who was the captain of the {name} during the famous rescue?",
                "What event made the captain of the {name} famous?",
            ],
        ),
        (
            (
                "The {name} was withdrawn from service in {fate} and sold for scrap. Her bell and "
                "figurehead survive in the maritime museum, along with a model built by one of her "
                "former engineers. Photographs of her last voyage hang beside them."
            ),
            [
                "When was the {name} withdrawn from service?",
                "Which parts of the {name} survive in the museum?",
            ],
        ),
    ]
    return f, aspects


_KINDS = (_river, _town, _scientist, _bridge, _ship)


@dataclass(frozen=True)
class RagShape:
    """Knobs of the rag generator; the defaults make the shipped ``data/rag.csv``.

    Attributes
    ----------
    background : encyclopedic sentences added to each passage, inclusive range (SQuAD
        paragraphs run to about 150 words; the shipped passages to about 60).
    paraphrases : wordings of each question template (1: the template as written), so a
        passage gets about as many questions as a SQuAD paragraph (about 5).
    compound_names : subject names from two roots, so any number of subjects is unique.
    neighbors : subjects (of the same kind) whose passages compete with a subject's own
        in retrieval; fixed per subject, as an embedding index finds the same nearest
        articles for every question on one article. A passage's score for a question on
        gold passage g is then fixed per (g, passage) (same subject 0.6-0.8, neighbors
        0.25-0.45, gold 1.0) plus the noise, so questions on one passage retrieve nearly
        the same list. ``None``: 4 subjects drawn afresh for each question and flat scores
        (gold 1.0, same subject 0.7, others 0.35; the shipped table).
    noise : standard deviation of the retriever's per-question score noise, which swaps
        passages of close scores from question to question.
    """

    background: tuple[int, int] = (0, 0)
    paraphrases: int = 1
    compound_names: bool = False
    neighbors: int | None = None
    noise: float = 0.2


_PREFIXES = ("North ", "South ", "Upper ", "Lower ", "Great ", "Little ", "Old ", "New ", "")
_SUFFIXES = ("", "ford", "wick", "ton", "mere", "stead", "holm", "bridge", "by", "dale")
_ASK = (
    "{q}",
    "According to the passage, {ql}",
    "Based on the text, {ql}",
    "From the context, {ql}",
    "In the article, {ql}",
)
_BACKGROUND = (
    "The {name} appears in the county records of {region} as early as {y1}.",
    "A survey published in {y2} described the {name} in great detail and is still cited today.",
    "Local historians, among them {person}, have written several books about the {name}.",
    "Visitors can learn more about the {name} at the small museum that opened in {y2}.",
    "During the war of {y1} the area around the {name} was briefly occupied.",
    "The {name} features on a postage stamp issued in {y3}.",
    "Since {y3} the {name} has been protected under the heritage laws of {region}.",
    "A documentary film about the {name}, narrated by {person}, was broadcast in {y3}.",
    "Several paintings of the {name} hang in the regional gallery of {region}.",
    "The name {name} is thought to come from an old word meaning a meeting place.",
    "Maps from {y1} show the {name} under a slightly different spelling.",
    "An annual festival held each {month} celebrates the history of the {name}.",
)


def _root(rng: Rng, roots: list[str], i: int, shape: RagShape, misses: int) -> str:
    if not shape.compound_names or i < len(_KINDS) * len(roots):
        return roots[(i // len(_KINDS)) % len(roots)]
    name = f"{rng.choice(_PREFIXES)}{rng.choice(_ROOTS)}{rng.choice(_SUFFIXES)}"
    return name if misses < 20 else f"{name} {rng.randint(2, 999)}"  # all combinations taken


def _passage(rng: Rng, text: str, facts: dict, shape: RagShape) -> str:
    passage = expand(rng, text, {}, **facts)
    if shape.background[1] == 0:  # no draw at all: the shipped table's stream
        return passage
    k = rng.randint(*shape.background)
    fixed = {
        "name": facts["name"],
        "region": rng.choice(_REGIONS),
        "person": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
        "y1": str(rng.randint(1500, 1800)),
        "y2": str(rng.randint(1801, 1950)),
        "y3": str(rng.randint(1951, 2015)),
        "month": rng.choice(_MONTHS),
    }
    extra = [expand(rng, t, {}, **fixed) for t in rng.sample(_BACKGROUND, k)]
    return " ".join([passage, *extra])


def _subjects(rng: Rng, n_subjects: int, shape: RagShape) -> tuple[list[str], list[tuple]]:
    """Passages, and per subject (kind index, passage ids, [(passage id, templates)], facts)."""
    roots = rng.sample(_ROOTS, len(_ROOTS))
    passages: list[str] = []
    subjects = []
    used: set = set()
    i = misses = 0
    while len(subjects) < n_subjects:
        kind = i % len(_KINDS)
        root = _root(rng, roots, i, shape, misses)
        i += 1
        if (kind, root) in used:
            misses += 1
            continue
        used.add((kind, root))
        misses = 0
        facts, aspects = _KINDS[kind](rng, root)
        pids = []
        qs = []
        for text, questions in aspects:
            pids.append(len(passages))
            passages.append(_passage(rng, text, facts, shape))
            qs.append((pids[-1], questions))
        subjects.append((kind, pids, qs, facts))
    return passages, subjects


def generate(
    seed: int,
    rows: int = 700,
    n_subjects: int = 90,
    shape: RagShape = RagShape(),
    progress: Callable[[int], object] | None = None,
) -> list[tuple[str, ...]]:
    """Rows of the ``rag`` table (see `COLUMNS`), in random order."""
    rng = Rng(seed, "rag")
    passages, subjects = _subjects(rng, n_subjects, shape)
    by_kind: dict[int, list[int]] = {}
    for s, (kind, pids, _, _) in enumerate(subjects):
        by_kind.setdefault(kind, []).append(s)
    cands = [
        (s, gold, template, k)
        for s, (_, _, qs, _) in enumerate(subjects)
        for gold, templates in qs
        for template in templates
        for k in range(shape.paraphrases)
    ]
    if len(cands) < rows:
        raise ValueError(f"rag: only {len(cands)} distinct questions for {rows} rows")
    rng.shuffle(cands)
    near = None
    if shape.neighbors is not None:
        near = [[o for o in rng.sample(by_kind[kind], shape.neighbors + 1) if o != s][
                : shape.neighbors] for s, (kind, *_) in enumerate(subjects)]  # fmt: skip
    sd = shape.noise
    affinity: dict[tuple[int, int], float] = {}

    def aff(gold: int, p: int) -> float:  # fixed per (gold, passage); flat when shipped
        if near is None:
            return 0.0
        if (gold, p) not in affinity:
            affinity[gold, p] = rng.uniform(-0.1, 0.1)
        return affinity[gold, p]

    out = []
    for s, gold, template, k in cands[:rows]:  # every question once
        kind, pids, _, facts = subjects[s]
        question = expand(rng, template, {}, **facts)
        if k:
            question = _ASK[k % len(_ASK)].format(q=question, ql=question[0].lower() + question[1:])
        scored = [(1.0 + rng.gauss(0, sd), gold)]
        scored += [(0.7 + aff(gold, p) + rng.gauss(0, sd), p) for p in pids if p != gold]
        for other in rng.sample(by_kind[kind], 4) if near is None else near[s]:
            if other != s:
                scored += [
                    (0.35 + aff(gold, p) + rng.gauss(0, sd), p) for p in subjects[other][1]
                ]
        scored.sort(key=lambda t: -t[0])
        out.append((question,) + tuple(passages[p] for _, p in scored[:K]))
        if progress is not None:
            progress(1)
    return out
