"""``products``: Amazon-style reviews of handmade products.

``product_title`` and ``parent_asin`` determine each other; ``parent_asin`` determines
``description`` one way (a seller reuses one description for several listings, as in the
paper's data). ``description`` is the Python ``repr`` of a list of paragraphs, like the
real table. Reviews appear in the order they were written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ggr_kv.datasets.gen.grammar import expand, sentence_case, words
from ggr_kv.datasets.gen.rng import Rng, cumulative, zipf_weights

COLUMNS = (
    "text",
    "description",
    "parent_asin",
    "review_title",
    "verified_purchase",
    "rating",
    "product_title",
    "id",
)

_CATEGORIES = {
    "print": {
        "item": ("Wall Art Print", "Art Print", "Poster Set", "Wall Decor Print"),
        "theme": (
            "Vintage Dictionary",
            "Inspirational Quote",
            "Botanical",
            "Dancing Astronaut",
            "Cat Lover",
            "Lighthouse",
            "Farmhouse Kitchen",
            "Motivational Gym",
            "Nursery Animal",
            "Positive Affirmations",
            "Mountain Landscape",
            "Jazz Music",
        ),
        "spec": (
            "8x10 Unframed",
            "11x14 Unframed",
            "Set of 4 (8x10) Unframed",
            "Set of 6 Prints 8x10 inches",
            "Printed in USA",
        ),
        "copy": (
            "Each print is made on heavy matte archival paper that will not fade for decades",
            "The prints come unframed and fit any standard frame of the same size",
            (
                "Our designs are printed in our small studio and shipped flat in a rigid mailer "
                "so they arrive in perfect condition"
            ),
            (
                "These prints make a thoughtful gift for birthdays, housewarmings, graduations "
                "and holidays"
            ),
        ),
        "part": ("print", "paper", "colors", "frame size"),
    },
    "ornament": {
        "item": ("Christmas Ornament", "Keepsake Ornament", "Holiday Ornament"),
        "theme": (
            "First Christmas Married",
            "Baby's First Christmas",
            "40th Anniversary",
            "New Home",
            "Pet Memorial",
            "Engagement",
            "Grandparents",
        ),
        "spec": (
            "Porcelain 3 inch Flat with Gold Ribbon",
            "Ceramic Keepsake with Free Gift Box",
            "Personalized with Name and Year",
        ),
        "copy": (
            "Our ornaments are made of fine white porcelain with a glossy glaze finish",
            "The artwork is permanently fused into the glaze, so it will never peel or fade",
            (
                "Every ornament arrives in a white gift box with a hanging ribbon, ready for "
                "gift giving"
            ),
            (
                "Celebrate the important moments of the year with a keepsake that becomes a "
                "family tradition"
            ),
        ),
        "part": ("ornament", "ribbon", "glaze", "gift box"),
    },
    "ring": {
        "item": ("Name Ring", "Stackable Ring", "Stacking Band", "Initial Ring"),
        "theme": ("Personalized", "Minimalist", "Mother's", "Couples", "Tiny Letter"),
        "spec": (
            "Sterling Silver 3mm Width",
            "Stainless Steel Matte or Shiny",
            "Rose Gold Plated",
            "Sizes 4 to 12",
        ),
        "copy": (
            "Each ring is hand stamped with your choice of names, dates or words",
            "The stainless steel will not tarnish, fade or stain your skin",
            ("Please double check the size and spelling of your personalization before ordering"),
            "Rings are sold individually; add more to your cart to build a stack",
        ),
        "part": ("ring", "lettering", "band", "size"),
    },
    "necklace": {
        "item": ("Pendant Necklace", "Birthstone Necklace", "Long Chain Necklace"),
        "theme": (
            "Handmade Halo",
            "Hammered Copper",
            "Moon and Sea",
            "Dainty Initial",
            "Family Tree",
        ),
        "spec": ("Sterling Silver 30 inch Chain", "Gold Filled 18 inch Chain", "Adjustable Length"),
        "copy": (
            "Each pendant is cut and hammered by hand in our seaside studio",
            "The chain is sturdy but lightweight and works with any outfit",
            "Metals are hand burnished for a soft satin finish",
            "Arrives in a cotton-lined box with a polishing cloth",
        ),
        "part": ("necklace", "chain", "pendant", "clasp"),
    },
    "decal": {
        "item": ("Wall Decal", "Vinyl Decal", "Lightbar Decal"),
        "theme": (
            "Custom Name",
            "Gamer Tag",
            "Minecraft Sword",
            "Floral Monogram",
            "Nursery Quote",
        ),
        "spec": ("Matte Finish 36 inch Wide", "Set of 2 Precision Cut", "Removable Vinyl"),
        "copy": (
            "The decal is precision cut from high quality indoor and outdoor vinyl",
            "Full written and video instructions are included with every order",
            "Clear application tape is used for easy and accurate placement",
            "The matte finish looks like it was painted right on the wall",
        ),
        "part": ("decal", "vinyl", "transfer tape", "letters"),
    },
    "mug": {
        "item": ("Coffee Mug", "Travel Tumbler", "Camp Mug"),
        "theme": ("Funny Teacher", "Best Dad Ever", "Book Lover", "Nurse Life", "Dog Mom"),
        "spec": ("11 oz Ceramic", "15 oz Ceramic Dishwasher Safe", "20 oz Stainless Steel"),
        "copy": (
            "Printed on both sides with vivid, long lasting inks",
            "Microwave and dishwasher safe for everyday use",
            "Each mug is packed in a sturdy foam box to prevent breakage",
            "A perfect gift for coworkers, friends and family",
        ),
        "part": ("mug", "handle", "print", "lid"),
    },
    "sign": {
        "item": ("Wood Sign", "Family Name Sign", "Porch Sign"),
        "theme": (
            "Established Family",
            "Welcome Home",
            "Rustic Farmhouse",
            "Lake House",
            "Bless This Home",
        ),
        "spec": ("Hand Painted 24 inch", "Engraved Pine 12x18", "Ready to Hang"),
        "copy": (
            "Every sign is cut, sanded and painted by hand in our workshop",
            "The wood grain makes each piece one of a kind",
            "Sealed with a clear coat for indoor or covered outdoor display",
            "Sawtooth hangers are attached so it is ready to hang",
        ),
        "part": ("sign", "paint", "wood", "hanger"),
    },
    "towel": {
        "item": ("Crochet Towel Holder", "Hanging Towel Topper"),
        "theme": ("Farmhouse", "Holiday Red", "Heather Grey", "Sunflower", "Ocean Blue"),
        "spec": ("Acrylic Yarn with Wood Button", "Set of 2", "Fits Oven and Dishwasher Handles"),
        "copy": (
            "Simply unbutton the holder, wrap it around a handle and button it back",
            "The ring fits a wide variety of kitchen and hand towels",
            "Made from soft acrylic yarn that can be washed in cold water",
            "Handmade with love in a smoke free home",
        ),
        "part": ("holder", "button", "ring", "yarn"),
    },
}
_CAT_NAMES = tuple(_CATEGORIES)
_CAT_POP = cumulative([30, 14, 12, 8, 9, 10, 9, 8])

_BRAND_A = (
    "Lone Star",
    "Ritzy Rose",
    "Digi",
    "Vint",
    "Cape Cod",
    "Maple",
    "Blue Heron",
    "Little Acorn",
    "Gretel",
    "Oak and Ivy",
    "Silver Fern",
    "Prairie",
    "Copper Moon",
    "Harbor Light",
    "Willow",
    "North Pine",
    "Sunny Day",
    "Tidewater",
)
_BRAND_B = ("Art Co", "Studio", "Designs", "Crafts", "Gifts", "Workshop", "Makers", "Goods")
_BOILER = (
    "HANDMADE IN THE USA",
    "MAKES A GREAT GIFT",
    "LOVE IT OR SEND IT BACK",
    "READY TO GIFT",
    "SMALL FAMILY BUSINESS",
    "SATISFACTION GUARANTEED",
)
_BOILER_TEXT = (
    "{brand} is a small family business and every order is made to order by our team",
    "If you are not completely happy with your purchase, contact us and we will make it right",
    "Check out the {brand} store for hundreds of other designs and matching pieces",
    "Orders usually ship within three business days; custom pieces may take a little longer",
)
_GENERIC = (
    "Please allow one to two business days for production before your order ships",
    "Colors may vary slightly from the photos because every screen displays color differently",
    "We use only high quality materials sourced from trusted suppliers",
    "For personalized items, please enter the name exactly as you would like it to appear",
    "Each item is inspected by hand before it leaves our studio",
    "Questions? Send us a message and we usually reply within a few hours",
    "Gift notes can be added at checkout free of charge",
    "Because each piece is handmade, small variations make every item unique",
    "All orders are carefully packaged to protect them during shipping",
    "Accessories shown in the photos are for display only and are not included",
)
_GIFT = (
    "Gift for Women",
    "Gift for Mom",
    "Gift for Him",
    "Birthday Gift",
    "Christmas Gift",
    "Anniversary Gift",
    "Housewarming Gift",
    "Gift for Teachers",
)

_REV = {
    "love": (
        "I love it",
        "Love it",
        "Absolutely love this",
        "So happy with this",
        "Exactly what I wanted",
        "Beautiful work",
    ),
    "praise": (
        "the quality is amazing",
        "it looks even better in person",
        "the colors are vibrant",
        "it arrived quickly and well packaged",
        "the personalization was perfect",
        "it was a big hit as a gift",
        "you can tell it was made with care",
        "it fits perfectly",
    ),
    "who": (
        "my mom",
        "my husband",
        "my best friend",
        "my daughter",
        "my sister",
        "a coworker",
        "my grandson",
        "our teacher",
    ),
    "occasion": (
        "a birthday",
        "Christmas",
        "our anniversary",
        "a retirement party",
        "Mother's Day",
        "a baby shower",
        "a housewarming",
    ),
    "complain": (
        "the {part} broke after a week",
        "it is much smaller than it looks in the photos",
        "the {part} was not what was pictured",
        "it arrived late and damaged",
        "the quality feels cheap",
        "the spelling of the name was wrong",
        "the seller never answered my messages",
        "the {part} started to fade quickly",
    ),
    "meh": (
        "it is okay for the price",
        "it looks fine but not great",
        "the {part} is a little thinner than expected",
        "it took a while to arrive",
        "it is nice but not exactly like the picture",
    ),
}
_POS = (
    "{love}! {praise_c}.",
    "Bought this for {who} for {occasion} and {praise}.",
    "{love}, {praise}. Will definitely order again.",
    "{praise_c} and {praise}. Highly recommend this seller.",
    "Got this as a gift for {who} and {praise}.",
)
_MEH = (
    "{meh_c}. {praise_c}, but I expected more.",
    "Not bad, {meh}. Probably would not buy again.",
    "{meh_c}. Still, {praise}.",
)
_NEG = (
    "Very disappointed, {complain}.",
    "{complain_c}. Waste of money.",
    "Do not buy, {complain}. I asked for a refund.",
    "{complain_c}, and {complain}.",
)
_TITLES = {
    5: (
        "Five Stars",
        "Beautiful",
        "Perfect!",
        "Love it!",
        "Great gift",
        "Exactly as pictured",
        "So cute",
        "Gorgeous",
    ),
    4: ("Four Stars", "Very nice", "Pretty good", "Nice gift", "Cute"),
    3: ("Three Stars", "Ok", "It's fine", "Not bad", "As expected"),
    2: ("Two Stars", "Disappointed", "Not as pictured", "Meh"),
    1: ("One Star", "Waste of money", "Poor quality", "Do not buy", "Terrible"),
}
_RATING_POP = cumulative([10, 5, 5, 10, 70])  # 1..5 stars
_ASIN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _asin(rng: Rng) -> str:
    return "B0" + "".join(rng.choice(_ASIN_CHARS) for _ in range(8))


def _description(rng: Rng, cat: dict, brand: str, shape: ProductShape) -> str:
    paras = rng.sample(cat["copy"], rng.randint(*shape.copy_paras))
    paras += rng.sample(_GENERIC, rng.randint(*shape.generic_paras))
    rng.shuffle(paras)
    if shape.boilerplate is None:
        if rng.chance(0.6):  # seller boilerplate: a caps header and its text
            i = rng.below(len(_BOILER))
            paras += [_BOILER[i], expand(rng, rng.choice(_BOILER_TEXT), {}, brand=brand)]
    else:
        for i in rng.sample(range(len(_BOILER)), rng.randint(*shape.boilerplate)):
            paras += [_BOILER[i], expand(rng, rng.choice(_BOILER_TEXT), {}, brand=brand)]
    paras = [p if p.isupper() else p + "." for p in paras]
    if rng.chance(0.35):
        return repr([" ".join(paras)])  # one long paragraph
    return repr(paras)


_PHRASES = tuple(p for k in ("praise", "meh", "complain") for p in _REV[k])
#: `_REV` plus sentence-case variants (``praise_c`` ...), built once
_REV_RULES = {
    **_REV,
    **{k + "_c": tuple(sentence_case(x) for x in _REV[k]) for k in ("praise", "meh", "complain")},
}


def _sentences(s: str) -> set[str]:
    return {x.strip(" .!").lower() for x in s.replace("!", ".").split(".") if x.strip()}


def _review(rng: Rng, rating: int, part: str, span: tuple[int, int] = (10, 40)) -> str:
    pool = _POS if rating >= 4 else _MEH if rating == 3 else _NEG
    rules = _REV_RULES
    target = rng.randint(*span)
    out: list[str] = []
    seen: set[str] = set()
    n = 0
    for _ in range(10):
        if n >= target:
            break
        s = expand(rng, rng.choice(pool), rules, part=part)
        text = " ".join(out)
        if (
            seen.intersection(_sentences(s))
            or any(p in s and p in text for p in _PHRASES)  # no phrase twice
            or (out and n + words(s) > span[1])
        ):
            continue
        seen.update(_sentences(s))
        out.append(s)
        n += words(s)
    return " ".join(out)


@dataclass(frozen=True)
class ProductShape:
    """Knobs of the products generator; the defaults make the shipped ``data/products.csv``.

    Attributes
    ----------
    skew : Zipf exponent of product popularity.
    sellers : number of sellers (each owns a brand and one or more descriptions).
    descriptions : descriptions per seller, inclusive range.
    copy_paras, generic_paras : category and generic paragraphs of a description.
    boilerplate : seller boilerplate sections (caps header + text) of a description,
        inclusive range; ``None`` keeps the shipped rule (one section, 60% of the time).
    title_bits : extra " - " parts of a product title, inclusive range.
    title_keywords : search keywords appended to a title (Amazon-style), inclusive range.
    review_words : words of a review, inclusive range.
    """

    skew: float = 0.7
    sellers: int = 45
    descriptions: tuple[int, int] = (1, 2)
    copy_paras: tuple[int, int] = (2, 4)
    generic_paras: tuple[int, int] = (1, 4)
    boilerplate: tuple[int, int] | None = None
    title_bits: tuple[int, int] = (1, 3)
    title_keywords: tuple[int, int] = (0, 0)
    review_words: tuple[int, int] = (10, 40)


_KEYWORDS = (
    "Wall Art Home Decor",
    "Boho Style",
    "Living Room Bedroom Office",
    "Ready To Frame",
    "Unique Handmade Gift Idea",
    "Farmhouse Decoration",
    "Perfect for Birthday, Anniversary, Christmas",
    "Made in USA",
    "Personalized Gift for Her",
    "Custom Name Keepsake",
    "Modern Minimalist Design",
    "Gift Box Included",
)


def _brand(rng: Rng, taken: set[str]) -> str:
    """A seller brand not in ``taken``: two words, then a third, then a number."""
    for k in range(60):
        brand = f"{rng.choice(_BRAND_A)} {rng.choice(_BRAND_B)}"
        if k >= 20:
            brand += f" {rng.choice(_BRAND_A)}" if k < 40 else f" {rng.randint(2, 9999)}"
        if brand not in taken:
            return brand
    raise RuntimeError("products: no free brand name")


def _sellers(rng: Rng, shape: ProductShape) -> list[dict]:
    sellers = []
    brands: set[str] = set()
    shipped = shape == ProductShape()
    while len(sellers) < shape.sellers:
        if shipped:  # the shipped table's draws, exactly
            brand = f"{rng.choice(_BRAND_A)} {rng.choice(_BRAND_B)}"
            if brand in brands:
                continue
        else:
            brand = _brand(rng, brands)
        brands.add(brand)
        cat = _CATEGORIES[rng.weighted(_CAT_NAMES, _CAT_POP)]
        descs = [
            _description(rng, cat, brand, shape) for _ in range(rng.randint(*shape.descriptions))
        ]
        sellers.append({"brand": brand, "cat": cat, "descs": descs})
    return sellers


def _product_title(rng: Rng, cat: dict, brand: str, shape: ProductShape) -> str:
    theme, item = rng.choice(cat["theme"]), rng.choice(cat["item"])
    bits = [f"{'Personalized ' if rng.chance(0.4) else ''}{theme} {item}"]
    bits += rng.sample(
        (rng.choice(cat["spec"]), rng.choice(_GIFT), f"by {brand}", "Handmade"),
        rng.randint(*shape.title_bits),
    )
    title = " - ".join(bits)
    if shape.title_keywords[1] > 0:
        title += ", " + ", ".join(rng.sample(_KEYWORDS, rng.randint(*shape.title_keywords)))
    return title


def _products(rng: Rng, n_products: int, sellers: list[dict], shape: ProductShape) -> list[dict]:
    seller_pop = zipf_weights(len(sellers), 0.9)
    products = []
    titles: set[str] = set()
    asins: set[str] = set()
    while len(products) < n_products:
        s = rng.weighted(sellers, seller_pop)
        cat = s["cat"]
        title = _product_title(rng, cat, s["brand"], shape)
        asin = _asin(rng)
        if title in titles or asin in asins:
            continue
        titles.add(title)
        asins.add(asin)
        products.append(
            {
                "title": title,
                "asin": asin,
                "desc": rng.choice(s["descs"]),
                "part": cat["part"],
                "launch": rng.uniform(0.0, 2000.0),
            }
        )
    return products


def generate(
    seed: int,
    rows: int = 1500,
    n_products: int = 170,
    shape: ProductShape = ProductShape(),
    progress: Callable[[int], object] | None = None,
) -> list[tuple[str, ...]]:
    """Rows of the ``products`` table in review-time order (see `COLUMNS`)."""
    rng = Rng(seed, "products")
    sellers = _sellers(rng, shape)
    products = _products(rng, n_products, sellers, shape)
    pop = zipf_weights(n_products, shape.skew)
    ids = rng.sample(range(1, max(100000, 10 * rows)), rows)
    out: list[tuple[float, tuple[str, ...]]] = []
    texts: set[str] = set()
    for i in range(rows):
        p = rng.weighted(products, pop)
        rating = rng.weighted((1, 2, 3, 4, 5), _RATING_POP)
        text = _review(rng, rating, rng.choice(p["part"]), shape.review_words)
        for _ in range(50):  # review texts are unique
            if text not in texts:
                break
            text = _review(rng, rating, rng.choice(p["part"]), shape.review_words)
        texts.add(text)
        if rng.chance(0.2):  # title = the review's first words, as Amazon fills it in
            first = text.split()
            title = " ".join(first[: rng.randint(3, 6)]).rstrip(".,!") + " ..."
        else:
            title = rng.choice(_TITLES[rating])
        day = p["launch"] + rng.expovariate(300.0)
        row = (
            text,
            p["desc"],
            p["asin"],
            title,
            "True" if rng.chance(0.95) else "False",
            f"{rating}.0",
            p["title"],
            str(ids[i]),
        )
        out.append((day, row))
        if progress is not None:
            progress(1)
    out.sort(key=lambda t: t[0])
    return [r for _, r in out]
