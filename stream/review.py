"""Does a therapist turn review the homework of the client's previous session? Pure and deterministic.

The served model has no review output yet (issue 6 adds one), so the decision is a documented rule
(``source="rule"``, docs/NUDGES.md): a turn reviews earlier homework when it

1. **asks about follow-through**: how something went or whether it was done ("How did it go?",
   "Were you able to keep the journal?", "Did you get a chance to...", "How's that going?"), and
2. **points at that homework**: it refers back to an earlier session ("last time", "since we talked",
   "this past week", "homework") or shares a content word with the previous session's assignments
   (the therapist's quotes: "journal", "breathing", "mom"...).

When the model gains a review score, ``review_of`` takes it (``model_score``) and the same call sites
get ``source="model"``: the rule is only the fallback. Only the therapist's words are read, as a clinician
would hear the question; the client's answer does not decide it.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from .schemas import Assignment, Review
from .windowing import Microdialogue, SessionState, evolve

QUOTE_CHARS = 400
# A model's review probability at or above this is a review (used once the model has the output).
MODEL_REVIEW_THRESHOLD = 0.5
# At most this many reviews are kept per session: the summary lists them, the nudge needs only one.
MAX_REVIEWS = 20

# 1. Asks about follow-through. Word windows are bounded ({0,60} characters) so a question mark far away
# in a long turn does not tie two unrelated clauses together.
_FOLLOW_THROUGH = [re.compile(p, re.IGNORECASE) for p in (
    r"\bhow(?:'d|’d| did| does| do| has| have| was| were| is|'s|’s| are|'re|’re)\b[^.?!]{0,60}?"
    r"\b(?:go|goes|going|gone|went|working|work(?:ed)? out|turn(?:ed)? out|com(?:e|ing) along"
    r"|doing with|getting on with)\b",
    # "did you" + a verb of carrying a task out (not "did you start / make / notice": any past question)
    r"\bdid you (?:get a chance|have a chance|get (?:a|the) (?:chance|time|opportunity)|get (?:to|around to)"
    r"|manage|end up|try|do|use|practi[cs]e|keep|fill|write|complete|finish|call|read|track|record|bring"
    r"|go ahead|follow through|stick)\b",
    r"\b(?:were|was) you able to\b",
    r"\b(?:have|had) you (?:been able|managed|tried|done|kept|used|had (?:a|the) chance|had an"
    r" opportunity|gotten around|got around|been (?:doing|keeping|using|practi[cs]ing|trying|tracking|writing"
    r"|filling))\b",
    r"\bany luck with\b",
    r"\bwhat(?: has|'s|’s) been different since\b",
    r"\bwhat (?:happened|came up) when you (?:tried|did|used|practi[cs]ed|called|went)\b",
    r"\b(?:want(?:ed)? to|like to|let me|let's|just) (?:check in|follow up) (?:on|about|with you)\b",
    r"\b(?:tell|walk) me (?:about|through) (?:how|what happened|the|your)\b[^.?!]{0,40}?"
    r"\b(?:went|go|log|diary|journal|record|sheet|worksheet|plan|practice|exercise)\b",
)]

# 2a. Refers back to an earlier session or to homework as such.
_REFERS_BACK = re.compile(
    r"\b(?:last (?:time|week|session|visit|appointment)|since (?:we|I) (?:last )?(?:met|talked|spoke|saw)"
    r"|since (?:our |the )?last|(?:our|the) last (?:conversation|meeting|appointment)|where we left|(?:this|the) past (?:week|few days|couple of weeks)"
    r"|over the (?:past )?(?:week|weekend)|homework|assignment|you (?:were going|agreed|said you would"
    r"|said you'd|planned|decided) to|we (?:talked about|discussed|agreed|planned|decided)"
    r"|you (?:were|have been|'ve been) (?:keeping|doing|tracking|practi[cs]ing|working on))\b",
    re.IGNORECASE)

_WORD = re.compile(r"[a-z]+(?:['’][a-z]+)?")
# Function words and therapy small talk that two turns share without talking about the same thing.
_STOPWORDS = frozenset("""
about above after again against also although always another anything around because been before
being below between both cannot could couldn does doing done down during each either else even ever
every everything from further going gonna have having here hers herself himself into itself just
kind know like little make maybe might more most much myself need never next night nights only other
ought ourselves over really right same should since some something sort still such sure than that
thats their theirs them themselves then there these they thing things think this those though through
time times today together tonight very want wanna week weeks well were what whatever when where
whether which while will with would your yours yourself yourselves yeah okay alright going something
said says tell told talk talked talking feel feeling felt good great last first coming come came
give take took making want wanted next thank thanks mean means back could day days
start started starting stop stopped help helped helps work works worked tried trying decide decided
decision notice noticed change changed people person life lot lots better worse okay
""".split())


def content_words(text: str) -> frozenset[str]:
    """Lower-cased words of four letters or more, minus function words, crudely stemmed ("journals",
    "journaling" -> "journal") so a quote and a later question meet on the same word."""
    out = set()
    for w in _WORD.findall(text.lower()):
        w = w.replace("’", "'").split("'")[0]
        if len(w) < 4 or w in _STOPWORDS:
            continue
        for suffix in ("ing", "ed", "es", "s"):
            if w.endswith(suffix) and len(w) - len(suffix) >= 4:
                w = w[: -len(suffix)]
                break
        out.add(w)
    return frozenset(out)


def asks_about_follow_through(text: str) -> bool:
    return any(p.search(text) for p in _FOLLOW_THROUGH)


def refers_back(text: str) -> bool:
    """Refers back to an earlier session or to homework as such ("last time", "this past week")."""
    return _REFERS_BACK.search(text) is not None


def refers_to_homework(text: str, previous: Sequence[Assignment]) -> bool:
    """Refers back to an earlier session, or shares a content word with a previous assignment."""
    if refers_back(text):
        return True
    assigned: set[str] = set()
    for a in previous:
        assigned |= content_words(a.quote)
    return bool(content_words(text) & assigned)


def rule_reviews(therapist_text: str, previous: Sequence[Assignment]) -> bool:
    """The documented rule: asks about follow-through and points at the previous homework."""
    return bool(previous) and asks_about_follow_through(therapist_text) and \
        refers_to_homework(therapist_text, previous)


def _quote(text: str) -> str:
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 1] + "…"


def review_of(md: Microdialogue, previous: Sequence[Assignment], model_score: float | None = None,
              threshold: float = MODEL_REVIEW_THRESHOLD) -> Review | None:
    """A Review when this microdialogue's therapist turn reviews the previous homework, else None.

    ``model_score``: the model's review probability for this microdialogue when the served model has
    that output; then it decides (source "model"), else the rule does (source "rule")."""
    if not previous:
        return None
    if model_score is not None:
        hit, source = model_score >= threshold, "model"
    else:
        hit, source = rule_reviews(md.therapist.text, previous), "rule"
    if not hit:
        return None
    return Review(turn=md.turn, start_s=md.therapist.start_s, quote=_quote(md.therapist.text), source=source)


def record_reviews(state: SessionState, mds: Iterable[Microdialogue],
                   model_scores: Sequence[float | None] | None = None) -> SessionState:
    """Add the reviews among ``mds`` (this session's microdialogues) to the state; idempotent by turn."""
    if not state.previous_homework:
        return state
    scores = list(model_scores) if model_scores is not None else None
    reviews = {r.turn: r for r in state.reviews}
    for i, md in enumerate(mds):
        r = review_of(md, state.previous_homework, scores[i] if scores is not None else None)
        if r is not None and r.turn not in reviews and len(reviews) < MAX_REVIEWS:
            reviews[r.turn] = r
    if len(reviews) == len(state.reviews):
        return state
    return evolve(state, reviews=tuple(sorted(reviews.values(), key=lambda r: r.turn)))
