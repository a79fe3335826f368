"""``movies``: critic reviews of movies, Rotten Tomatoes style.

Each movie has a long synopsis (``movieinfo``, 60-120 words) repeated on every one of its
reviews; ``movietitle``, ``movieinfo`` and ``rottentomatoeslink`` determine each other.
Reviews (10-40 words) appear in the order they were written: each movie's reviews cluster
around its release, so different movies interleave.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ggr_kv.datasets.gen.grammar import (
    FEMALE_NAMES,
    LAST_NAMES,
    MALE_NAMES,
    expand,
    sentence_case,
    slug,
    words,
)
from ggr_kv.datasets.gen.rng import Rng, clamp, cumulative, zipf_weights

COLUMNS = (
    "reviewcontent",
    "reviewtype",
    "topcritic",
    "rottentomatoeslink",
    "movietitle",
    "movieinfo",
    "genres",
    "productioncompany",
)

# main genre -> Rotten Tomatoes genre labels it always carries
GENRE_LABELS = {
    "drama": ("Drama",),
    "comedy": ("Comedy",),
    "action": ("Action & Adventure",),
    "horror": ("Horror",),
    "scifi": ("Science Fiction & Fantasy",),
    "family": ("Animation", "Kids & Family"),
    "mystery": ("Mystery & Suspense",),
    "romance": ("Romance",),
    "documentary": ("Documentary",),
}
GENRE_POP = cumulative([30, 18, 12, 6, 8, 8, 9, 6, 3])
EXTRA_LABELS = (
    "Drama",
    "Comedy",
    "Classics",
    "Art House & International",
    "Musical & Performing Arts",
    "Mystery & Suspense",
    "Action & Adventure",
    "Science Fiction & Fantasy",
    "Romance",
)
STUDIOS = (
    "Warner Bros. Pictures",
    "Universal Pictures",
    "20th Century Fox",
    "Columbia Pictures",
    "Paramount Pictures",
    "Walt Disney Studios",
    "Lions Gate Films",
    "Sony Pictures Classics",
    "Fox Searchlight",
    "Focus Features",
    "A24",
    "IFC Films",
    "Magnolia Pictures",
    "Roadside Attractions",
    "Film Chest",
    "Bleecker Street",
    "Neon",
    "STX Entertainment",
    "Open Road Films",
    "Summit Entertainment",
    "MGM",
    "Annapurna Pictures",
)
STUDIO_POP = zipf_weights(len(STUDIOS), 1.1)

TITLE_ADJ = (
    "Silent",
    "Last",
    "Broken",
    "Golden",
    "Hidden",
    "Distant",
    "Burning",
    "Frozen",
    "Quiet",
    "Crimson",
    "Endless",
    "Secret",
    "Lonely",
    "Wild",
    "Bright",
    "Midnight",
    "Lost",
    "Iron",
    "Paper",
    "Hollow",
    "Restless",
    "Little",
    "Savage",
    "Gentle",
    "Northern",
    "Second",
)
TITLE_NOUN = (
    "Harbor",
    "Garden",
    "Kingdom",
    "River",
    "Summer",
    "Road",
    "Empire",
    "Frontier",
    "Island",
    "Letters",
    "Orchard",
    "Signal",
    "Horizon",
    "Stranger",
    "Season",
    "Crossing",
    "Tide",
    "Valley",
    "Promise",
    "Machine",
    "Winter",
    "Lighthouse",
    "Circus",
    "Station",
    "Witness",
    "Shadows",
    "Mountain",
    "Echo",
    "Hours",
    "Journey",
    "Storm",
    "House",
    "Dream",
    "Heist",
)
PLACES = (
    "Boston",
    "a small town in Ohio",
    "Chicago",
    "rural Montana",
    "London",
    "Paris",
    "a fishing village in Maine",
    "New Orleans",
    "the Scottish Highlands",
    "Los Angeles",
    "a mining town in Nevada",
    "Brooklyn",
    "Berlin",
    "a coastal town in Oregon",
    "Dublin",
    "the outskirts of Rome",
    "Texas",
    "a suburb of Atlanta",
    "Seattle",
    "Lisbon",
)
TITLE_PATTERNS = (
    "The {adj} {noun}",
    "{adj} {noun}",
    "The {noun}",
    "{noun} of the {noun2}",
    "A {noun} in {city}",
    "{first}'s {noun}",
    "The {noun} Affair",
    "Beyond the {noun}",
    "Return to {city}",
    "{adj} Hearts",
    "The Last {noun}",
    "{noun} and {noun2}",
)
CITIES = (
    "Avalon",
    "Brighton",
    "Carver",
    "Dunmore",
    "Eastwick",
    "Fairhaven",
    "Glenwood",
    "Harlow",
    "Kingsport",
    "Lakemont",
    "Marlow",
    "Northfield",
    "Oakridge",
    "Redwater",
    "Stonebridge",
    "Tarrow",
    "Westmere",
    "Windham",
)

_SYN = {
    "adj": (
        "restless",
        "ambitious",
        "reclusive",
        "widowed",
        "stubborn",
        "gifted",
        "young",
        "disgraced",
        "retired",
        "idealistic",
        "struggling",
        "cautious",
        "fearless",
    ),
    "time": (
        "one winter",
        "after a sudden loss",
        "on the eve of a big promotion",
        "years after leaving home",
        "during a long, hot summer",
        "late one night",
        "on the first day of a new job",
        "shortly after a bitter divorce",
    ),
    "ally": (
        "an unlikely friend",
        "a sharp-tongued neighbor",
        "an old partner",
        "a street-smart teenager",
        "a former rival",
        "an eccentric mentor",
        "a loyal younger brother",
        "a mysterious stranger",
    ),
    "secret": (
        "a long-buried family secret",
        "the truth about an old accident",
        "a conspiracy reaching the highest levels",
        "a debt that was never repaid",
        "what really happened that night",
        "a promise made decades ago",
    ),
    "ending": (
        "Together they must decide what they are willing to lose to set things right.",
        "Before long, every choice carries a price that someone will have to pay.",
        "What begins as a simple plan soon becomes the fight of a lifetime.",
        "As time runs out, old loyalties are tested and new ones are forged.",
        "Along the way, both of them learn that home is not always a place.",
        "The journey forces everyone involved to face the past they tried to escape.",
    ),
}
_SYN_BY_GENRE = {
    "drama": {
        "job": ("schoolteacher", "nurse", "factory worker", "lawyer", "musician", "farmer"),
        "event": (
            "must care for an ailing parent while holding a fragile family together",
            "returns home to settle the estate of an estranged father",
            "takes on a case that divides the whole town",
            "struggles to rebuild a life after a devastating fire",
        ),
        "turn": (
            "old wounds reopen when a sibling arrives with unexpected news",
            "a chance encounter with {ally} offers a glimpse of a different future",
            "the community begins to take sides and friendships start to fray",
        ),
    },
    "comedy": {
        "job": (
            "wedding planner",
            "failed stand-up comic",
            "substitute teacher",
            "real estate agent",
            "chef",
            "dog walker",
        ),
        "event": (
            "accidentally agrees to host a family reunion in a house that is not {pos} own",
            "pretends to be engaged to impress a demanding boss",
            "inherits a run-down bowling alley and a team of hopeless regulars",
            "is mistaken for a famous self-help guru at a weekend retreat",
        ),
        "turn": (
            "every attempt to fix the situation only makes things more ridiculous",
            "{ally} insists on helping, with disastrous and hilarious results",
            "the lies pile up faster than anyone can keep track of them",
        ),
    },
    "action": {
        "job": (
            "former special forces officer",
            "getaway driver",
            "bodyguard",
            "bounty hunter",
            "border patrol agent",
            "pilot",
        ),
        "event": (
            "is pulled back into service when a routine job goes terribly wrong",
            "must escort a key witness across the country with assassins in pursuit",
            "discovers a plot to seize control of a city's power grid",
            "is framed for a crime and has forty-eight hours to clear {pos} name",
        ),
        "turn": (
            "a ruthless arms dealer puts a price on {pos} head",
            "{ally} turns out to know far more than expected",
            "a daring chase through crowded streets leaves no room for mistakes",
        ),
    },
    "horror": {
        "job": (
            "graduate student",
            "night nurse",
            "paranormal investigator",
            "caretaker",
            "photographer",
            "young mother",
        ),
        "event": (
            "moves into an old farmhouse where the previous owners vanished",
            "begins to hear voices in the walls of a remote boarding school",
            "finds a strange recording that seems to predict the future",
            "returns to a summer camp that closed after a tragic night",
        ),
        "turn": (
            "the nightmares grow more vivid and the line between dream and reality blurs",
            "{ally} warns that something in the woods is waiting for them",
            "an ancient ritual must be completed before the next full moon",
        ),
    },
    "scifi": {
        "job": (
            "astronaut",
            "engineer",
            "linguist",
            "botanist",
            "robotics researcher",
            "cargo pilot",
        ),
        "event": (
            "wakes from cryosleep to find the ship drifting far off course",
            "is chosen to make first contact with a signal from deep space",
            "discovers a way to send messages to the past",
            "survives a crash on a planet that should not be able to support life",
        ),
        "turn": (
            "the ship's computer begins to make decisions of its own",
            "{ally} reveals that the mission was never what it seemed",
            "time is running out as the colony's oxygen supply fails",
        ),
    },
    "family": {
        "job": (
            "curious young fox",
            "brave little robot",
            "shy dragon",
            "clumsy penguin",
            "adventurous girl",
            "young inventor",
        ),
        "event": (
            "sets out to find a missing friend in an enchanted forest",
            "dreams of joining the grand parade in the great city",
            "discovers a magical map hidden in the attic",
            "must save the valley when the river suddenly dries up",
        ),
        "turn": (
            "a band of funny new friends joins the quest",
            "{ally} teaches a lesson about courage and kindness",
            "the greatest challenge turns out to be believing in oneself",
        ),
    },
    "mystery": {
        "job": (
            "private detective",
            "journalist",
            "forensic accountant",
            "police inspector",
            "insurance investigator",
            "crime novelist",
        ),
        "event": (
            "is hired to find a wealthy heiress who vanished without a trace",
            "investigates a string of thefts at a famous museum",
            "receives an anonymous letter about a murder that has not happened yet",
            "reopens a cold case that ended the career of a mentor",
        ),
        "turn": (
            "every suspect has something to hide and nobody can be trusted",
            "{ally} provides a clue that changes everything",
            "the trail leads back to {secret}",
        ),
    },
    "romance": {
        "job": (
            "florist",
            "bookshop owner",
            "architect",
            "violinist",
            "travel writer",
            "pastry chef",
        ),
        "event": (
            "falls for a charming stranger during a week-long trip to Italy",
            "meets a former sweetheart at a friend's wedding",
            "agrees to a fake relationship to save a struggling business",
            "trades apartments with a stranger for the holidays",
        ),
        "turn": (
            "a long-kept secret threatens to end the romance before it begins",
            "{ally} becomes a rival for the same affection",
            "the distance between their two worlds proves hard to bridge",
        ),
    },
    "documentary": {
        "job": (
            "filmmaker",
            "marine biologist",
            "jazz pianist",
            "mountain climber",
            "community organizer",
            "chef",
        ),
        "event": (
            "follows a year in the life of a remarkable team",
            "revisits the events that changed a small community forever",
            "traces the rise of an unlikely movement",
            "examines the legacy of a forgotten pioneer",
        ),
        "turn": (
            "rare archival footage and candid interviews reveal a surprising story",
            "{ally} shares memories that have never been told on camera",
            "the film asks hard questions about who gets to tell history",
        ),
    },
}
_SYN_INTRO = (
    "{hero} ({actor}), a {adj} {job} in {place}, {event}.",
    "In {place}, {hero} ({actor}) is a {adj} {job} who {event}.",
    "{time_c}, {hero} ({actor}), a {adj} {job}, {event}.",
)
_SYN_PARTS = (
    "When {turn}, {first} must rely on {ally} ({ally_actor}) to find a way forward.",
    "Soon {turn}, and {first} begins to question everything {pro} believed.",
    "But as {turn}, {first} is drawn into a situation far more complicated than expected.",
    "Meanwhile, {first} uncovers {secret}, and nothing can stay the same.",
    "With help from {ally}, {first} sets out to make things right.",
    "{ending}",
)
_SYN_EXTRA = (
    "Along the way {first} meets {ally} ({ally_actor}), who has reasons of {pos} own to help.",
    "The stakes rise when {turn}.",
    "{ending}",
    "What follows is a journey that tests {first}'s courage, friendships and sense of self.",
    "Every decision brings {first} closer to {secret}.",
)

_REV = {
    "pos_adj": (
        "gripping",
        "charming",
        "beautifully made",
        "moving",
        "confident",
        "funny",
        "clever",
        "thrilling",
        "heartfelt",
        "stylish",
        "absorbing",
        "delightful",
        "well-crafted",
        "tender",
        "sharp",
        "entertaining",
    ),
    "neg_adj": (
        "tedious",
        "muddled",
        "forgettable",
        "overlong",
        "clumsy",
        "lifeless",
        "predictable",
        "shallow",
        "uneven",
        "tiresome",
        "heavy-handed",
        "flat",
    ),
    "noun": (
        "film",
        "movie",
        "picture",
        "drama",
        "story",
        "ride",
        "debut",
        "effort",
        "outing",
        "adaptation",
    ),
    "pos_vp": (
        "earns every one of its emotional beats",
        "never loses its sense of fun",
        "keeps you on the edge of your seat",
        "finds real warmth in small moments",
        "rewards patient viewers",
        "is more thoughtful than it has any right to be",
        "delivers exactly what it promises and then some",
        "makes the familiar feel fresh again",
    ),
    "neg_vp": (
        "never finds a reason to exist",
        "mistakes noise for excitement",
        "runs out of ideas long before the end",
        "squanders a talented cast",
        "feels like a rough draft of a better movie",
        "drags badly in its second half",
        "is too busy explaining itself to be any fun",
        "collapses under its own weight",
    ),
    "pos_perf": (
        "gives a career-best performance",
        "is a revelation in the lead",
        "carries the film with ease",
        "brings real depth to the role",
    ),
    "neg_perf": (
        "does what little the thin script allows",
        "seems lost in the lead role",
        "is given almost nothing to do",
        "cannot rescue the flat dialogue",
    ),
    "pos_close": (
        "Highly recommended.",
        "One of the year's best.",
        "Don't miss it.",
        "A genuine crowd-pleaser.",
        "See it on the biggest screen you can find.",
    ),
    "neg_close": (
        "Skip it.",
        "A missed opportunity.",
        "Wait for streaming.",
        "Hard to recommend.",
        "A disappointment.",
    ),
    "mix": (
        "has its moments, but",
        "starts strongly, yet",
        "looks terrific, though",
        "is never boring, but",
    ),
}
_POS = (
    "{title} is a {pos_adj} {noun} that {pos_vp}.",
    "A {pos_adj}, {pos_adj} {noun} that {pos_vp}.",
    "{actor_last} {pos_perf}, and the {noun} {pos_vp}.",
    "{pos_close}",
    "It's {pos_adj} and {pos_adj}, and it {pos_vp}.",
    "The direction is {pos_adj} and the script {pos_vp}.",
)
_NEG = (
    "{title} is a {neg_adj} {noun} that {neg_vp}.",
    "A {neg_adj}, {neg_adj} {noun} that {neg_vp}.",
    "{actor_last} {neg_perf}, and the {noun} {neg_vp}.",
    "{neg_close}",
    "It's {neg_adj} and {neg_adj}, and it {neg_vp}.",
    "For all its ambition, the {noun} {neg_vp}.",
)
_MIX = (
    "{title} {mix} the {noun} {neg_vp}.",
    "{title} has a {pos_adj} first act, but the {noun} {neg_vp}.",
    "There is a {pos_adj} {noun} buried in here somewhere, but it {neg_vp}.",
    "{actor_last} {pos_perf}, even if the {noun} {neg_vp}.",
)


_REPEAT = re.compile(r"\b([\w-]+)(?:,| and) \1\b")  # "tedious and tedious"


def _title(rng: Rng) -> str:
    fixed = {
        "adj": rng.choice(TITLE_ADJ),
        "noun": rng.choice(TITLE_NOUN),
        "noun2": rng.choice(TITLE_NOUN),
        "city": rng.choice(CITIES),
        "first": rng.choice(FEMALE_NAMES + MALE_NAMES),
    }
    return expand(rng, rng.choice(TITLE_PATTERNS), {}, **fixed)


def _synopsis(rng: Rng, genre: str, span: tuple[int, int] = (60, 120)) -> tuple[str, str]:
    female = rng.chance(0.5)
    first = rng.choice(FEMALE_NAMES if female else MALE_NAMES)
    actor = f"{rng.choice(FEMALE_NAMES if female else MALE_NAMES)} {rng.choice(LAST_NAMES)}"
    ally_actor = f"{rng.choice(FEMALE_NAMES + MALE_NAMES)} {rng.choice(LAST_NAMES)}"
    rules = dict(_SYN)
    rules.update(_SYN_BY_GENRE[genre])
    rules["time_c"] = tuple(sentence_case(t) for t in _SYN["time"])
    fixed = {
        "hero": first,
        "first": first,
        "actor": actor,
        "ally_actor": ally_actor,
        "place": rng.choice(PLACES),
        "ally": rng.choice(_SYN["ally"]),  # one sidekick per movie
        "pos": "her" if female else "his",
        "pro": "she" if female else "he",
    }
    # intro, two plot turns, optional extras up to 60-120 words
    parts = [rng.choice(_SYN_INTRO)]
    parts += rng.sample(_SYN_PARTS, 2)
    out, n = [], 0
    for p in parts:
        s = sentence_case(expand(rng, p, rules, **fixed))
        out.append(s)
        n += words(s)
    target = rng.randint(*span)
    for _ in range(30):
        if n >= target:
            break
        s = sentence_case(expand(rng, rng.choice(_SYN_EXTRA), rules, **fixed))
        if s in out or n + words(s) > span[1]:
            continue
        out.append(s)
        n += words(s)
    return " ".join(out), actor.split()[-1]


def _review(
    rng: Rng,
    title: str,
    actor_last: str,
    positive: bool,
    mixed: bool,
    span: tuple[int, int] = (10, 40),
) -> str:
    fixed = {"title": title, "actor_last": actor_last}
    if mixed:
        pool, close = _MIX, ()
    else:
        pool = _POS if positive else _NEG
        close = ("{pos_close}",) if positive else ("{neg_close}",)
    lo, hi = span
    target = rng.randint(lo, hi)
    out: list[str] = []
    n = 0
    for _ in range(12):
        if n >= target:
            break
        if mixed and out:
            pool = _POS[:3] if positive else _NEG[:3]
        t = rng.choice(pool if out or not close else pool[:3])
        s = sentence_case(expand(rng, t, _REV, **fixed))
        if s in out or (out and n + words(s) > hi) or _REPEAT.search(s):
            continue
        out.append(s)
        n += words(s)
        if "{title}" in t:  # name the movie once, then "it"
            fixed["title"] = rng.choice(("It", "The film", "This one"))
    if n < lo:  # a closing verdict keeps even short reviews at ``lo``+ words
        out.append(expand(rng, "{pos_close}" if positive else "{neg_close}", _REV, **fixed))
    text = " ".join(out)
    if rng.chance(0.03) and words(text) <= hi - 4:
        text += " [Full review in Spanish]"
    return text


_ROLES = (
    "the Detective", "the Mayor", "the Teacher", "the Doctor", "the Neighbor", "the Captain",
    "the Stranger", "the Bartender", "the Lawyer", "the Reporter", "the Pilot", "the Sheriff",
    "the Landlady", "the Coach", "the Priest", "the Nurse", "the Professor", "the Driver",
)
_RATINGS = (
    ("PG", "thematic elements and brief mild language"),
    ("PG-13", "some violence, language and thematic material"),
    ("PG-13", "intense sequences of action and brief strong language"),
    ("R", "language throughout, some sexual content and brief drug use"),
    ("R", "strong violence and language"),
    ("NR", "not rated"),
)
_MONTHS = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)
_CONSENSUS = (
    "{title} is a {pos_adj} {noun} that {pos_vp}, anchored by a {pos_adj} central performance.",
    "Though it {neg_vp} at times, {title} is {pos_adj} enough to reward a patient audience.",
    "{title} {mix} the {noun} {neg_vp}, despite a {pos_adj} cast doing its best.",
    "A {pos_adj} and {pos_adj} {noun}, {title} {pos_vp}.",
)


def _names(rng: Rng, k: int) -> list[str]:
    return [f"{rng.choice(FEMALE_NAMES + MALE_NAMES)} {rng.choice(LAST_NAMES)}" for _ in range(k)]


def movie_page(rng: Rng, synopsis: str, title: str, genre: str, year: int, studio: str) -> str:
    """A whole movie page for ``movieinfo``: synopsis, cast, crew, release details, consensus.

    About 300-500 Llama-3 tokens (the synopsis is 60-120 words of it).
    """
    cast = ", ".join(f"{n} as {rng.choice(FEMALE_NAMES + MALE_NAMES)}" for n in _names(rng, 6))
    cast += ", " + ", ".join(f"{n} as {r}" for n, r in zip(_names(rng, 6), rng.sample(_ROLES, 6)))
    writers, producers = _names(rng, rng.randint(1, 3)), _names(rng, rng.randint(2, 4))
    rating, reason = rng.choice(_RATINGS)
    month, day, mins = rng.choice(_MONTHS), rng.randint(1, 28), rng.randint(84, 168)
    gross = f"${rng.randint(1, 240)}.{rng.below(10)}M"
    crew = (
        f"Director: {_names(rng, 1)[0]}. Screenwriter: {', '.join(writers)}. "
        f"Producer: {', '.join(producers)}. Original music: {_names(rng, 1)[0]}. "
        f"Cinematography: {_names(rng, 1)[0]}. Film editing: {_names(rng, 1)[0]}."
    )
    release = (
        f"Rating: {rating}" + ("" if rating == "NR" else f" ({reason.capitalize()})") + ". "
        f"Genre: {genre.capitalize()}. Original language: English. "
        f"Release date (theaters): {month} {day}, {year}, wide. "
        f"Release date (streaming): {rng.choice(_MONTHS)} {rng.randint(1, 28)}, {year + 1}. "
        f"Box office (gross USA): {gross}. Runtime: {mins // 60}h {mins % 60}m. "
        f"Distributor: {studio}. Production co: {rng.choice(STUDIOS)}, {rng.choice(CITIES)} "
        f"Films. Sound mix: {rng.choice(('Dolby Digital', 'Dolby Atmos', 'DTS', 'SDDS'))}."
    )
    consensus = sentence_case(expand(rng, rng.choice(_CONSENSUS), _REV, title=title))
    return f"{synopsis} Cast: {cast}. {crew} {release} Critics consensus: {consensus}"


@dataclass(frozen=True)
class MovieShape:
    """Knobs of the movies generator; the defaults make the shipped ``data/movies.csv``.

    Attributes
    ----------
    skew : Zipf exponent of movie popularity (0: every movie equally reviewed).
    info_words : words of a synopsis, inclusive range.
    review_words : words of a review, inclusive range.
    subtitles : when a drawn title is taken, add a subtitle instead of drawing again, so
        any number of movies gets a unique title.
    long_info : ``movieinfo`` is a whole movie page (synopsis, cast, crew, release
        details, critics consensus; 300-500 tokens) instead of the synopsis alone.
    """

    skew: float = 0.75
    info_words: tuple[int, int] = (60, 120)
    review_words: tuple[int, int] = (10, 40)
    subtitles: bool = False
    long_info: bool = False


def _unique_title(rng: Rng, titles: set[str], shape: MovieShape) -> str | None:
    title = _title(rng)
    while shape.subtitles and title in titles:
        title = f"{title}: {_title(rng)}"
    return None if title in titles else title


def _movies(rng: Rng, n_movies: int, shape: MovieShape) -> list[dict]:
    """``n_movies`` movies with unique titles, links and infos, in creation order."""
    genres_all = tuple(GENRE_LABELS)
    movies: list[dict] = []
    titles: set[str] = set()
    links: set[str] = set()
    while len(movies) < n_movies:
        title = _unique_title(rng, titles, shape)
        if title is None:
            continue
        titles.add(title)
        genre = rng.weighted(genres_all, GENRE_POP)
        labels = set(GENRE_LABELS[genre])
        for _ in range(rng.weighted((0, 1, 2), cumulative((5, 4, 1)))):
            labels.add(rng.choice(EXTRA_LABELS))
        info, actor_last = _synopsis(rng, genre, shape.info_words)
        year = rng.randint(1995, 2019)
        link = "m/" + slug(title)
        if link in links or rng.chance(0.25):
            link = f"{link}_{year}"
        if link in links:
            link = f"m/{rng.randint(10000000, 10999999)}-{slug(title)}"
        links.add(link)
        studio = rng.weighted(STUDIOS, STUDIO_POP)
        if shape.long_info:
            info = movie_page(rng, info, title, genre, year, studio)
        movies.append(
            {
                "title": title,
                "info": info,
                "link": link,
                "genres": ", ".join(sorted(labels)),
                "studio": studio,
                "actor_last": actor_last,
                "quality": clamp(rng.gauss(0.62, 0.22), 0.05, 0.97),
                "release": rng.uniform(0.0, 1800.0),  # days
            }
        )
    return movies


def _review_row(rng: Rng, m: dict, shape: MovieShape) -> tuple[float, tuple[str, ...]]:
    """One review of movie ``m``: (day written, row)."""
    mixed = rng.chance(0.12)
    positive = rng.chance(m["quality"])
    text = _review(rng, m["title"], m["actor_last"], positive, mixed, shape.review_words)
    fresh = positive if not mixed else rng.chance(0.5)
    top = rng.chance(0.2)
    if rng.chance(0.85):
        day = m["release"] + rng.expovariate(60.0)
    else:  # a retrospective review, long after release
        day = m["release"] + rng.uniform(60.0, 2400.0)
    row = (
        text,
        "Fresh" if fresh else "Rotten",
        "True" if top else "False",
        m["link"],
        m["title"],
        m["info"],
        m["genres"],
        m["studio"],
    )
    return day, row


def _time_order(out: list[tuple[float, tuple[str, ...]]]) -> list[tuple[str, ...]]:
    out.sort(key=lambda t: t[0])
    return [r for _, r in out]


def generate(
    seed: int,
    rows: int = 1500,
    n_movies: int = 90,
    shape: MovieShape = MovieShape(),
    progress: Callable[[int], object] | None = None,
) -> list[tuple[str, ...]]:
    """Rows of the ``movies`` table in review-time order (see `COLUMNS`).

    Each review picks its movie by Zipf popularity (``shape.skew``); ``progress(k)`` is
    called as rows are made.
    """
    rng = Rng(seed, "movies")
    movies = _movies(rng, n_movies, shape)
    pop = zipf_weights(n_movies, shape.skew)
    order = list(range(n_movies))
    rng.shuffle(order)  # popularity independent of creation order
    out: list[tuple[float, tuple[str, ...]]] = []
    for _ in range(rows):
        m = movies[order[rng.weighted(range(n_movies), pop)]]
        out.append(_review_row(rng, m, shape))
        if progress is not None:
            progress(1)
    return _time_order(out)


def generate_short_groups(
    seed: int,
    rows: int,
    group: tuple[int, int] = (2, 4),
    shape: MovieShape = MovieShape(long_info=True, subtitles=True),
    progress: Callable[[int], object] | None = None,
) -> list[tuple[str, ...]]:
    """Movies with only ``group`` (inclusive range) reviews each, in review-time order.

    Every movie gets a uniform draw from ``group`` reviews (the last one what is left), so
    groups are short while ``movieinfo`` (with ``shape.long_info``) is long.
    """
    rng = Rng(seed, "movies-short-groups")
    sizes: list[int] = []
    total = 0
    while total < rows:
        sizes.append(min(rng.randint(*group), rows - total))
        total += sizes[-1]
    movies = _movies(rng, len(sizes), shape)
    out: list[tuple[float, tuple[str, ...]]] = []
    for m, k in zip(movies, sizes):
        out += [_review_row(rng, m, shape) for _ in range(k)]
        if progress is not None:
            progress(k)
    return _time_order(out)
