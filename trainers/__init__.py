"""Trainers. Importing this package registers every trainer (and its TRAINER.<NAME> config node)."""

from trainers import (  # noqa: F401
    biomedcoop,
    clip_adapter,
    cocoop,
    coop,
    kgcoop,
    linear_probe,
    lpplusplus,
    maple,
    ogkd,
    prograd,
    tip_adapter,
    zeroshot,
)
