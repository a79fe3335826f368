"""``posts``: questions of a statistics Q&A forum joined with their comments (BIRD-like).

One row per comment (``Text``); the question's ``PostId``, ``PostDate`` and long HTML
``Body`` repeat on each of its comments, so ``PostId`` and ``Body`` determine each other
(``PostDate`` is the question's date, determined by ``PostId`` too). Rows appear in the
order the comments were written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from ggr_kv.datasets.gen.grammar import FIRST_NAMES, LAST_NAMES, expand, sentence_case, words
from ggr_kv.datasets.gen.rng import Rng, zipf_weights

COLUMNS = ("Text", "PostId", "PostDate", "Body")

_T0 = datetime(2010, 7, 19, 19, 0, 0)  # the forum's first day
_SPAN_S = 4 * 365 * 86400

# Each topic: "fit" alternatives pair a method with a statistic it would print.
_TOPICS = (
    {
        "data": (
            "survey responses from about {n} households",
            "sales figures for {n} stores",
            "test scores of {n} students in three schools",
        ),
        "fit": (
            ("I fitted a linear regression of income on education and age and got $R^2 = 0.{d}$."),
            (
                "An OLS model with an interaction between treatment and gender gives "
                "$\\hat{{\\beta}}_3 = 0.{d}$ with $p = 0.0{d1}$."
            ),
            "A multiple regression with five predictors shows a VIF above 10 for two of them.",
        ),
        "problem": (
            "the residuals fan out as the fitted values grow",
            "two coefficients change sign when I add a control variable",
            "the intercept makes no sense for my data",
        ),
        "ask": (
            "Is it valid to log-transform the dependent variable here",
            "Should I report robust standard errors instead",
            "How should I interpret the interaction term",
            "Is centering the predictors enough to deal with the collinearity",
        ),
        "code": "model <- lm(y ~ x1 * x2 + age, data = df)\nsummary(model)",
    },
    {
        "data": (
            "reaction times from {n} participants in two conditions",
            "blood pressure measured before and after treatment in {n} patients",
            "counts of defects from {n} production batches",
        ),
        "fit": (
            "A two-sample t-test gives $t = 2.{d}$ and $p = 0.0{d1}$.",
            "A Mann-Whitney U test gives $W = 1{d}{d1}$ with $p = 0.{d}$.",
            (
                "A chi-squared test of independence gives $\\chi^2 = {d}.{d1}$ on 3 degrees "
                "of freedom."
            ),
        ),
        "problem": (
            "the data are clearly skewed and there are a few outliers",
            "the two groups have very different variances",
            "my reviewer says I should have corrected for multiple comparisons",
        ),
        "ask": (
            "Which test is more appropriate for this design",
            "Does a non-significant result mean the groups are the same",
            "How do I choose between a parametric and a non-parametric test",
            "Should I use a Bonferroni or a Holm correction",
        ),
        "code": "t.test(rt ~ condition, data = d, var.equal = FALSE)",
    },
    {
        "data": (
            "monthly electricity demand for the last {m} months",
            "daily website visits over {m}0 days",
            "weekly flu cases in {d}{d1} regions",
        ),
        "fit": (
            "An ARIMA(1,1,1) model has an AIC of {d}{d1}{d}.{d1}.",
            (
                "After a seasonal decomposition, the remainder has an autocorrelation of "
                "0.{d} at lag 12."
            ),
            "Exponential smoothing leaves residuals with a Ljung-Box $p = 0.0{d1}$.",
        ),
        "problem": (
            "the forecasts drift far away from the recent observations",
            "the residuals still show a clear seasonal pattern",
            "the series has a structural break in the middle",
        ),
        "ask": (
            "How do I choose the order of differencing",
            "Is it wrong to compare models by AIC after differencing",
            "How can I account for the structural break",
            "Should I model the seasonality explicitly",
        ),
        "code": "fit <- auto.arima(y)\nforecast(fit, h = 12)",
    },
    {
        "data": (
            "click-through data from {n} users",
            "{n} labelled images of plant leaves",
            "customer records with {n} rows and 40 features",
        ),
        "fit": (
            "A random forest reaches an AUC of 0.{d}{d1} in cross-validation.",
            "Logistic regression with an L1 penalty gets {d}{d1}% accuracy on the test set.",
            "Gradient boosted trees reach a cross-validated log loss of 0.{d}{d1}.",
        ),
        "problem": (
            "the validation score is much better than the test score",
            "only 3% of the observations belong to the positive class",
            "the feature importances change a lot between runs",
        ),
        "ask": (
            "Am I leaking information from the test set somewhere",
            "How should I deal with the class imbalance",
            "Is it valid to tune hyperparameters on the same folds I report",
            "Which metric should I optimize for this problem",
        ),
        "code": "from sklearn.model_selection import cross_val_score\n"
        "scores = cross_val_score(model, X, y, cv=10)",
    },
    {
        "data": (
            "the number of successes in {n} independent trials",
            "ratings from {n} reviewers on a five point scale",
        ),
        "fit": (
            "With a Beta(2, 2) prior and a binomial likelihood the posterior mean is 0.{d}{d1}.",
            (
                "A hierarchical model fitted in Stan reports $\\hat{{R}} = 1.0{d1}$ for every "
                "parameter."
            ),
        ),
        "problem": (
            "the posterior depends strongly on the prior I choose",
            "the chains do not seem to mix well",
            "the credible interval is much wider than the frequentist one",
        ),
        "ask": (
            "How do I choose a weakly informative prior",
            "How many iterations are enough for the sampler to converge",
            "What is the right way to report a credible interval",
        ),
        "code": "fit <- stan(file = 'model.stan', data = stan_data, iter = 4000)",
    },
    {
        "data": (
            "survival times of {n} patients, a third of them censored",
            "time to failure of {n} machine parts",
        ),
        "fit": (
            "A Cox proportional hazards model gives a hazard ratio of 1.{d}{d1}.",
            "The Kaplan-Meier curves of the two groups cross at about {d}{d1} months.",
        ),
        "problem": (
            "the proportional hazards assumption looks violated",
            "many observations are censored before the first event",
        ),
        "ask": (
            "How should I check the proportional hazards assumption",
            "Can I still compare the groups with a log-rank test",
            "Is a parametric survival model a better choice here",
        ),
        "code": "fit <- coxph(Surv(time, status) ~ group + age, data = d)\ncox.zph(fit)",
    },
)
_OFF_TOPIC = (
    {
        "data": ("a spreadsheet with {n} rows", "a folder of {n} CSV files"),
        "fit": (
            "I made a chart with Excel pivot tables.",
            "I wrote a short Python script to combine them.",
            "I tried a shell loop that concatenates the files.",
        ),
        "problem": (
            "the chart labels overlap and I cannot change the font",
            "the script crashes with an encoding error",
            "the import silently drops some of the columns",
        ),
        "ask": (
            "How do I change the font size of the axis labels",
            "How can I read all the files into one table",
            "Is there a keyboard shortcut for this",
        ),
        "code": 'for f in *.csv; do cat "$f" >> all.csv; done',
    },
)
_BODY_PARTS = {
    "intro": (
        "I am working with {data}.",
        "For my thesis I collected {data}.",
        "At work I was given {data}.",
        "I am helping a colleague analyse {data}.",
    ),
    "why": (
        "The goal is to tell whether a new procedure makes any difference.",
        "My manager wants a single number that summarises the results.",
        "The results will go into a report, so I want to get the method right.",
        "I am fairly new to statistics, so please bear with me.",
    ),
    "trouble": (
        "However, {problem}.",
        "The trouble is that {problem}.",
        "What worries me is that {problem}.",
    ),
    "tried": (
        "I tried removing the outliers, but the result barely changed.",
        "I searched this site and found related questions, but none with this setup.",
        "My supervisor suggested a different approach, but I do not understand why.",
        "I have read the documentation several times without finding an answer.",
        "I also ran the analysis on a random half of the data and got a similar result.",
    ),
    "vars": (
        "an outcome measured on a continuous scale",
        "a binary treatment indicator",
        "age in years",
        "a site identifier with {d} levels",
        "a baseline score",
        "the date of each measurement",
        "a free-text comment field I have ignored",
        "a weight for each observation from the sampling design",
    ),
    "edit": (
        (
            "<strong>Edit:</strong> as requested in the comments, the sample sizes are "
            "roughly equal in the groups."
        ),
        "<strong>Update:</strong> I have added the code I used above.",
        "<strong>Edit:</strong> the data are not paired, sorry for the confusion.",
    ),
}
_COMMENTS = (
    (
        "Could you clarify what you mean by {term}? It would help to see how the data were "
        "collected."
    ),
    "Have you considered {alt}? It handles this kind of problem much better.",
    "+1 Nice question. {remark}",
    "{remark} See also the related questions in the sidebar.",
    "How many observations do you have in each group? With so few, {remark_l}",
    (
        "This reads more like a question about software than about statistics; it may be "
        "better suited to a programming site."
    ),
    "Please post the output of your model, otherwise it is hard to say what is going on.",
    "I agree with the answer below: {remark_l}",
    "Thanks, that clears it up. I will try {alt} and report back.",
    "What is the research question here? The right method depends on it.",
    "I think {alt} would answer your second question directly.",
    "Can you share a small reproducible example?",
    "Are the observations independent? If the same people appear twice, {remark_l}",
    "Your edit helps a lot. {remark}",
    "Not sure I follow the last paragraph. Do you want a test or an estimate?",
    "This has been asked before, but the answers there do not cover {term} observations.",
)
_COMMENT_RULES = {
    "term": (
        "significant",
        "normalised",
        "the effect",
        "independent",
        "a good fit",
        "outliers",
        "censored",
        "paired",
    ),
    "alt": (
        "a mixed model",
        "a permutation test",
        "bootstrapping the estimate",
        "a generalized linear model",
        "robust regression",
        "a log transformation",
        "plotting the residuals first",
        "a Bayesian model",
    ),
    "remark": (
        "The p-value alone does not tell you how large the effect is.",
        "Correlation is not causation, especially with observational data.",
        "Plot the data before you run any test.",
        "Your sample is probably too small to detect that difference.",
        "Cross-validation should be done before any feature selection.",
        "The answer depends on whether the missing values are random.",
        "A confidence interval would be more informative than the test.",
        "The standard errors will be wrong if you ignore the clustering.",
    ),
}


def _fmt(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") + ".0"


def _body(rng: Rng, topic: dict) -> str:
    rules = dict(topic)
    fixed = {
        "n": str(rng.randint(30, 5000)),
        "d": str(rng.randint(1, 9)),
        "d1": str(rng.randint(1, 9)),
        "m": str(rng.randint(24, 240)),
    }
    rules.update(_BODY_PARTS)
    blocks = [
        "<p>" + expand(rng, "{intro} {fit} {why}", rules, **fixed) + "</p>",
        "<p>" + expand(rng, "{trouble} {tried}", rules, **fixed) + "</p>",
    ]
    if rng.chance(0.6):
        vs = rng.sample(_BODY_PARTS["vars"], rng.randint(3, 5))
        items = "".join("<li>" + expand(rng, v, rules, **fixed) + "</li>\n" for v in vs)
        blocks.insert(1, f"<p>The data set has these columns:</p>\n\n<ul>\n{items}</ul>")
    if rng.chance(0.4):
        blocks.append("<p>" + expand(rng, "{tried}", rules, **fixed) + "</p>")
    if rng.chance(0.5):
        code = topic["code"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        blocks.insert(1, f"<pre><code>{code}\n</code></pre>")
    asks = rng.sample(topic["ask"], rng.randint(1, 3))
    if len(asks) == 1:
        blocks.append(f"<p>{asks[0]}?</p>")
    else:
        items = "".join(f"<li>{a}?</li>\n" for a in asks)
        blocks.append(f"<p>My questions are:</p>\n\n<ol>\n{items}</ol>")
    if rng.chance(0.25):
        blocks.append("<p>" + expand(rng, "{edit}", rules, **fixed) + "</p>")
    html = "\n\n".join(blocks) + "\n"
    return html


def _comment(rng: Rng, span: tuple[int, int] = (10, 55)) -> str:
    rules = dict(_COMMENT_RULES)
    rules["remark_l"] = tuple(r[0].lower() + r[1:] for r in _COMMENT_RULES["remark"])
    out: list[str] = []
    target = rng.randint(*span)
    n = 0
    for template in rng.sample(_COMMENTS, 6):  # each template at most once per comment
        if n >= target:
            break
        s = sentence_case(expand(rng, template, rules))
        if out and n + words(s) > span[1] + 5:
            continue
        out.append(s)
        n += words(s)
    text = " ".join(out)
    if rng.chance(0.3):
        text = f"@{rng.choice(FIRST_NAMES)}{rng.choice(LAST_NAMES)[:1]} {text}"
    return text


@dataclass(frozen=True)
class PostShape:
    """Knobs of the posts generator; the defaults make the shipped ``data/posts.csv``.

    Attributes
    ----------
    skew : Zipf exponent of how many comments a question draws.
    output_blocks : mean number of console-output blocks (``<pre>`` tables of numbers, as
        stats.stackexchange questions paste them) added to a body; the count is geometric,
        so a few bodies are very long. 0 adds none.
    comment_words : words of a comment, inclusive range.
    """

    skew: float = 0.6
    output_blocks: float = 0.0
    comment_words: tuple[int, int] = (10, 55)


_OUTPUT_NAMES = (
    "(Intercept)", "x1", "x2", "age", "income", "treatment", "group2", "group3", "time",
    "dose", "sexM", "log(weight)", "x1:x2", "season2", "baseline", "region4",
)


def _output_block(rng: Rng) -> str:
    """A console dump: a coefficient table or a data excerpt, 4-30 rows of numbers."""
    k = min(4 + int(rng.expovariate(6.0)), 30)
    if rng.chance(0.5):
        head = "            Estimate Std. Error t value Pr(&gt;|t|)"
        lines = [
            f"{rng.choice(_OUTPUT_NAMES):<11s} {rng.gauss(0, 3):9.5f} {rng.uniform(0.01, 2):9.5f}"
            f" {rng.gauss(0, 4):7.3f} {rng.uniform(0, 1):.2e}"
            for _ in range(k)
        ]
    else:
        cols = rng.sample(_OUTPUT_NAMES[1:], 4)
        head = "    id " + " ".join(f"{c:>10s}" for c in cols)
        lines = [
            f"{j + 1:>6d} " + " ".join(f"{rng.gauss(50, 20):10.3f}" for _ in cols)
            for j in range(k)
        ]
    return "<pre><code>" + "\n".join([head, *lines]) + "\n</code></pre>"


def _long_body(rng: Rng, topic: dict, shape: PostShape) -> str:
    """`_body` plus console-output blocks, each followed by a sentence about it."""
    html = _body(rng, topic)
    extra = []
    while rng.chance(shape.output_blocks / (1.0 + shape.output_blocks)):
        rules = dict(topic)
        rules.update(_BODY_PARTS)
        fixed = {"n": str(rng.randint(30, 5000)), "d": str(rng.randint(1, 9))}
        fixed.update(d1=str(rng.randint(1, 9)), m=str(rng.randint(24, 240)))
        text = expand(rng, rng.choice(("{trouble}", "{tried}", "{why}")), rules, **fixed)
        extra += [_output_block(rng), f"<p>{sentence_case(text)}</p>"]
    if not extra:
        return html
    blocks = html.rstrip("\n").split("\n\n")
    return "\n\n".join(blocks[:-1] + extra + blocks[-1:]) + "\n"


def generate(
    seed: int,
    rows: int = 1000,
    n_posts: int = 220,
    shape: PostShape = PostShape(),
    progress: Callable[[int], object] | None = None,
) -> list[tuple[str, ...]]:
    """Rows of the ``posts`` table in comment-time order (see `COLUMNS`)."""
    rng = Rng(seed, "posts")
    starts = sorted(rng.uniform(0, _SPAN_S) for _ in range(n_posts))
    ids = sorted(rng.sample(range(1, max(40000, 20 * n_posts)), n_posts))  # ids grow with time
    posts = []
    bodies: set[str] = set()
    make = _body if shape.output_blocks <= 0 else lambda r, t: _long_body(r, t, shape)
    for i in range(n_posts):
        topic = rng.choice(_OFF_TOPIC) if rng.chance(0.12) else rng.choice(_TOPICS)
        body = make(rng, topic)
        while body in bodies:
            body = make(rng, topic)
        bodies.add(body)
        posts.append({"id": str(ids[i]), "t": starts[i], "body": body})
    order = list(range(n_posts))
    rng.shuffle(order)
    pop = zipf_weights(n_posts, shape.skew)
    out: list[tuple[float, tuple[str, ...]]] = []
    texts: set[str] = set()
    for _ in range(rows):
        p = posts[order[rng.weighted(range(n_posts), pop)]]
        t = p["t"] + rng.expovariate(40 * 86400.0)
        date = _fmt(_T0 + timedelta(seconds=int(p["t"])))
        text = _comment(rng, shape.comment_words)
        for _ in range(50):  # comments are unique, as on the real site
            if text not in texts:
                break
            text = _comment(rng, shape.comment_words)
        texts.add(text)
        out.append((t, (text, p["id"], date, p["body"])))
        if progress is not None:
            progress(1)
    out.sort(key=lambda r: r[0])
    return [r for _, r in out]
