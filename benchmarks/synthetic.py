"""Synthetic microdialogues for load tests: written here from a small vocabulary, no corpus text.

Lengths follow the real labelled items roughly (therapist turns of 6-90 words, client replies of
1-40 words, 0-3 context turns), seeded, so every run scores the same corpus.
"""
from __future__ import annotations

import random
from collections.abc import Iterator

from homework_monitor.contract import Example

THERAPIST_WORDS = (
    "so this week maybe you could try the breathing exercise when you notice the worry coming up "
    "and write down what happened and how strong the feeling was okay how did that go for you "
    "I wonder if we could look at what made it hard to get started and what helped a little "
    "next time let us plan one small step like calling your sister or taking a walk after dinner "
    "it sounds like the evenings are the hardest part of the day for you right now").split()
CLIENT_WORDS = (
    "yeah I can do that I guess it was a hard week honestly I did not really get to it "
    "maybe on the weekend I felt a bit better after the walk but then work got busy again").split()


def _words(rng: random.Random, vocab: tuple[str, ...] | list[str], n: int) -> str:
    start = rng.randrange(len(vocab))
    return " ".join(vocab[(start + k) % len(vocab)] for k in range(n))


def example(rng: random.Random) -> Example:
    therapist = _words(rng, THERAPIST_WORDS, rng.choice((6, 10, 14, 20, 28, 40, 60, 90)))
    client = _words(rng, CLIENT_WORDS, rng.choice((1, 3, 6, 10, 20, 40))) if rng.random() < 0.9 else None
    context = tuple((rng.choice(("therapist", "client")), _words(rng, CLIENT_WORDS, rng.randint(3, 20)))
                    for _ in range(rng.randint(0, 3)))
    return Example(therapist=therapist, client=client, context=context)


def examples(n: int, seed: int = 13) -> Iterator[Example]:
    rng = random.Random(seed)
    for _ in range(n):
        yield example(rng)
