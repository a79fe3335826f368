"""``beer``: RateBeer-style beer reviews, in the full record layout.

``beer/beerId`` and ``beer/name`` determine each other; ``beer/beerId`` also determines
``beer/brewerId``, ``beer/ABV`` and ``beer/style`` (one way: a brewer makes many beers).
Scores use RateBeer's scales (appearance /5, aroma /10, palate /5, taste /10,
overall /20); ``review/time`` is a Unix time (day resolution). Rows are in review-time
order, like the original dump.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ggr_kv.datasets.gen.grammar import expand, sentence_case, words
from ggr_kv.datasets.gen.rng import Rng, clamp, zipf_weights

COLUMNS = (
    "beer/name",
    "beer/beerId",
    "beer/brewerId",
    "beer/ABV",
    "beer/style",
    "review/appearance",
    "review/aroma",
    "review/palate",
    "review/taste",
    "review/overall",
    "review/time",
    "review/profileName",
    "review/text",
)

# style -> (name suffixes, ABV range, colors, aromas, flavors)
_STYLES = {
    "India Pale Ale (IPA)": (
        ("IPA", "India Pale Ale"),
        (5.8, 7.5),
        ("hazy golden", "clear amber"),
        ("grapefruit", "pine", "citrus peel", "resin", "mango"),
    ),
    "Imperial/Double IPA": (
        ("Double IPA", "Imperial IPA"),
        (7.5, 10.5),
        ("deep amber", "orange copper"),
        ("resinous pine", "candied orange", "caramel", "tropical fruit"),
    ),
    "American Pale Ale": (
        ("Pale Ale", "APA"),
        (4.8, 6.2),
        ("golden", "light amber"),
        ("citrus", "floral hops", "biscuit", "lemon"),
    ),
    "Stout": (
        ("Stout", "Dry Stout"),
        (4.2, 6.5),
        ("pitch black", "very dark brown"),
        ("roasted coffee", "dark chocolate", "burnt toast", "cocoa"),
    ),
    "Imperial Stout": (
        ("Imperial Stout", "Russian Imperial Stout"),
        (8.5, 12.5),
        ("opaque black", "inky black"),
        ("espresso", "molasses", "dark fruit", "bourbon", "vanilla"),
    ),
    "Porter": (
        ("Porter", "Robust Porter"),
        (5.0, 6.8),
        ("dark brown", "ruby-tinged brown"),
        ("milk chocolate", "toffee", "roasted malt", "nutty malt"),
    ),
    "Belgian Ale": (
        ("Belgian Ale", "Blonde"),
        (6.0, 8.0),
        ("hazy gold", "pale orange"),
        ("banana", "clove", "pear", "spicy yeast"),
    ),
    "Abbey Tripel": (
        ("Tripel",),
        (8.0, 9.5),
        ("bright gold", "hazy straw"),
        ("honey", "white pepper", "apricot", "spicy yeast"),
    ),
    "Belgian White (Witbier)": (
        ("Wit", "White Ale"),
        (4.5, 5.5),
        ("cloudy straw", "pale yellow"),
        ("coriander", "orange peel", "wheat", "lemon"),
    ),
    "Pale Lager": (
        ("Lager", "Premium Lager"),
        (4.2, 5.2),
        ("pale straw", "clear gold"),
        ("grainy malt", "light grass", "cracker", "corn"),
    ),
    "Pilsener": (
        ("Pilsner", "Pils"),
        (4.5, 5.5),
        ("brilliant gold", "pale gold"),
        ("spicy hops", "bread", "herbal hops", "honey"),
    ),
    "Sour Ale/Wild Ale": (
        ("Sour Ale", "Wild Ale"),
        (5.0, 8.0),
        ("hazy orange", "murky amber"),
        ("tart cherry", "funk", "oak", "vinegar", "green apple"),
    ),
    "Saison": (
        ("Saison", "Farmhouse Ale"),
        (5.5, 7.5),
        ("hazy gold", "pale orange"),
        ("black pepper", "lemon zest", "hay", "earthy yeast"),
    ),
    "Barley Wine": (
        ("Barleywine", "Old Ale"),
        (9.0, 12.0),
        ("deep copper", "murky mahogany"),
        ("toffee", "dried fig", "sherry", "brown sugar"),
    ),
    "Mild Ale": (
        ("Mild", "Dark Mild"),
        (3.2, 4.2),
        ("chestnut brown", "dark amber"),
        ("caramel", "toasted bread", "light roast", "nuts"),
    ),
    "Hefeweizen": (
        ("Hefeweizen", "Weissbier"),
        (4.8, 5.6),
        ("cloudy orange", "hazy yellow"),
        ("banana", "clove", "bubblegum", "wheat bread"),
    ),
}
_STYLE_NAMES = tuple(_STYLES)
_STYLE_POP = zipf_weights(len(_STYLE_NAMES), 0.6)

_BREWER_A = (
    "Barley",
    "Copper",
    "Old",
    "Iron",
    "Black",
    "North",
    "Stone",
    "Red",
    "Harbor",
    "Green",
    "Twin",
    "Golden",
    "Grey",
    "Mill",
    "River",
    "High",
    "Salt",
    "Wild",
)
_BREWER_B = (
    "Island",
    "Creek",
    "Harbor",
    "Horse",
    "Oak",
    "Valley",
    "Bridge",
    "Hill",
    "Lake",
    "Anchor",
    "Rock",
    "Fox",
    "Peak",
    "Point",
    "Mountain",
    "Barn",
)
_BEER_ADJ = (
    "Sinister",
    "Dirty",
    "Goldilocks",
    "Barfly",
    "Midnight",
    "Hoppy",
    "Lazy",
    "Old",
    "Red Eye",
    "Lucky",
    "Rusty",
    "Foggy",
    "Ghost",
    "Bulldog",
    "Velvet",
    "Summer",
    "Winter",
    "Harvest",
    "Devil's",
    "Angel's",
    "Smoky",
    "Cosmic",
    "Jolly",
    "Drifter",
)
_HANDLE_A = (
    "hop",
    "malt",
    "beer",
    "ale",
    "stout",
    "yeast",
    "brew",
    "cask",
    "pint",
    "barrel",
    "craft",
    "foam",
    "tap",
    "grain",
    "kettle",
)
_HANDLE_B = (
    "dog",
    "head",
    "guy",
    "fan",
    "hunter",
    "master",
    "lover",
    "man",
    "geek",
    "nut",
    "king",
    "monk",
    "pilot",
    "rider",
    "doc",
)

_TEXT = {
    "head": (
        "thin white",
        "thick tan",
        "creamy off-white",
        "fizzy white",
        "rocky beige",
        "small, quickly fading",
    ),
    "body": ("Light", "Medium", "Full", "Thin", "Medium to full", "Oily, full"),
    "carb": ("soft", "lively", "moderate", "low", "prickly"),
    "finish": ("dry", "bitter", "sweet", "lingering", "short", "clean", "warming"),
    "good": (
        "Very drinkable, would gladly have another.",
        "One of the best in the style.",
        "Excellent, would buy again.",
        "A really well made beer.",
        "Great balance, highly recommended.",
    ),
    "ok": (
        "Decent, but nothing special.",
        "Solid enough for the price.",
        "Fine, though I would not seek it out.",
        "Average example of the style.",
    ),
    "bad": (
        "Not for me.",
        "Drain pour, unfortunately.",
        "Disappointing overall.",
        "Something seems off with this bottle.",
        "Would not buy again.",
    ),
    "serve": (
        "Bottle from a trade.",
        "On tap at the brewpub.",
        ("12 oz bottle, poured into a tulip."),
        "Cask at a beer festival.",
        "Can shared with friends.",
        "Growler fill, tasted fresh.",
    ),
}
_TEXT_PARTS = (
    "{serve} Pours {color} with a {head} head.",
    "Aroma of {a1}, {a2} and some {a3}.",
    "Taste follows the nose: {a1} up front, then {a2}, with a {finish} finish.",
    "{body} body, {carb} carbonation.",
)


def _handle(rng: Rng) -> str:
    kind = rng.below(3)
    a, b = rng.choice(_HANDLE_A), rng.choice(_HANDLE_B)
    if kind == 0:
        return a + b
    if kind == 1:
        return a.capitalize() + b.capitalize()
    return f"{a}{b}{rng.randint(1, 99)}"


def _text(rng: Rng, style: str, score: float) -> str:
    _, _, colors, aromas = _STYLES[style]
    a = rng.sample(aromas, 3)
    fixed = {"color": rng.choice(colors), "a1": a[0], "a2": a[1], "a3": a[2]}
    parts = list(_TEXT_PARTS)
    k = rng.randint(2, 4)
    chosen = sorted(rng.sample(range(len(parts)), k))
    out = [sentence_case(expand(rng, parts[i], _TEXT, **fixed)) for i in chosen]
    verdict = "{good}" if score >= 0.7 else "{ok}" if score >= 0.5 else "{bad}"
    out.append(expand(rng, verdict, _TEXT, **fixed))
    text = " ".join(out)
    while words(text) < 20:  # keep at least 20 words
        i = rng.below(len(parts))
        extra = sentence_case(expand(rng, parts[i], _TEXT, **fixed))
        if extra not in text:
            text = extra + " " + text
    return text


def _score(x: float, top: int) -> str:
    return f"{round(clamp(x, 0.05, 1.0) * top) or 1}/{top}"


#: the nine fields of the paper's beer.csv (RateBeer without the review text), its order
PAPER_COLUMNS = (
    "review/profileName",
    "review/time",
    "review/overall",
    "review/taste",
    "review/palate",
    "review/appearance",
    "beer/name",
    "beer/style",
    "beer/beerId",
)


@dataclass(frozen=True)
class BeerShape:
    """Knobs of the beer generator; the defaults make the shipped ``data/beer.csv``.

    Attributes
    ----------
    skew : Zipf exponent of beer popularity.
    brewers : number of breweries.
    users : number of reviewers.
    user_skew : Zipf exponent of reviewer activity (a few raters write most reviews).
    paper_layout : rows in the paper's nine fields (`PAPER_COLUMNS`, no review text).
    """

    skew: float = 0.8
    brewers: int = 40
    users: int = 350
    user_skew: float = 0.9
    paper_layout: bool = False


def _unique(rng: Rng, draw: Callable[[], str], taken: set[str], exact: bool) -> str | None:
    """A drawn name not in ``taken``; ``exact`` keeps the shipped rule (``None`` if taken),
    else later tries add a batch number so any number of names fits."""
    for k in range(1 if exact else 40):
        name = draw()
        if k >= 20:
            name += f" Batch {rng.randint(2, 999)}"
        if name not in taken:
            return name
    return None


def _brewers(rng: Rng, shape: BeerShape) -> list[tuple[str, str]]:
    exact = shape == BeerShape()
    brewers: list[tuple[str, str]] = []
    seen: set[str] = set()
    brewer_ids = rng.sample(range(100, max(12000, 50 * shape.brewers)), shape.brewers)
    while len(brewers) < shape.brewers:
        draw = lambda: f"{rng.choice(_BREWER_A)} {rng.choice(_BREWER_B)}"
        name = _unique(rng, draw, seen, exact)
        if name is not None:
            seen.add(name)
            brewers.append((name, str(brewer_ids[len(brewers)])))
    return brewers


def _beers(rng: Rng, n_beers: int, brewers: list, exact: bool) -> list[dict]:
    brewer_pop = zipf_weights(len(brewers), 0.7)
    beers: list[dict] = []
    names: set[str] = set()
    ids = rng.sample(range(1000, max(150000, 20 * n_beers)), n_beers)
    while len(beers) < n_beers:
        brewer, brewer_id = rng.weighted(brewers, brewer_pop)
        style = rng.weighted(_STYLE_NAMES, _STYLE_POP)
        suffixes, (lo, hi) = _STYLES[style][0], _STYLES[style][1]
        def draw(brewer: str = brewer, suffixes: tuple = suffixes) -> str:
            return f"{brewer} {rng.choice(_BEER_ADJ)} {rng.choice(suffixes)}"

        name = _unique(rng, draw, names, exact)
        if name is None:
            continue
        names.add(name)
        beers.append(
            {
                "name": name,
                "id": str(ids[len(beers)]),
                "brewer": brewer_id,
                "abv": f"{rng.uniform(lo, hi):.1f}",
                "style": style,
                "q": clamp(rng.gauss(0.66, 0.1), 0.2, 0.95),
            }
        )
    return beers


def _users(rng: Rng, shape: BeerShape) -> list[tuple[str, float]]:
    exact = shape == BeerShape()
    users: list[tuple[str, float]] = []
    handles: set[str] = set()
    while len(users) < shape.users:
        h = _unique(rng, lambda: _handle(rng), handles, exact)
        if h is not None:
            handles.add(h)
            users.append((h, rng.gauss(0.0, 0.05)))
    return users


def generate(
    seed: int,
    rows: int = 2000,
    n_beers: int = 150,
    shape: BeerShape = BeerShape(),
    progress: Callable[[int], object] | None = None,
) -> list[tuple[str, ...]]:
    """Rows of the ``beer`` table in review-time order (`COLUMNS`, or `PAPER_COLUMNS`)."""
    rng = Rng(seed, "beer")
    exact = shape == BeerShape()
    beers = _beers(rng, n_beers, _brewers(rng, shape), exact)
    users = _users(rng, shape)
    user_pop = zipf_weights(len(users), shape.user_skew)
    beer_pop = zipf_weights(n_beers, shape.skew)
    t0, span = 946684800, 12 * 365  # 2000-01-01, in days
    out: list[tuple[int, tuple[str, ...]]] = []
    for _ in range(rows):
        b = rng.weighted(beers, beer_pop)
        user, bias = rng.weighted(users, user_pop)
        base = b["q"] + bias
        overall = clamp(base + rng.gauss(0.0, 0.08), 0.05, 1.0)
        t = t0 + 86400 * rng.below(span)
        scores = [
            _score(base + rng.gauss(0.0, 0.12), 5),
            _score(base + rng.gauss(0.0, 0.1), 10),
            _score(base + rng.gauss(0.0, 0.12), 5),
            _score(base + rng.gauss(0.0, 0.1), 10),
            _score(overall, 20),
        ]
        if shape.paper_layout:
            row = (user, str(t), scores[4], scores[3], scores[2], scores[0], b["name"],
                   b["style"], b["id"])  # fmt: skip
        else:
            row = (b["name"], b["id"], b["brewer"], b["abv"], b["style"], *scores, str(t), user,
                   _text(rng, b["style"], overall))  # fmt: skip
        out.append((t, row))
        if progress is not None:
            progress(1)
    out.sort(key=lambda r: r[0])  # stable: same-day reviews keep their draw order
    return [r for _, r in out]
