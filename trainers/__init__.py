"""Trainers. Importing this package registers every trainer (and its TRAINER.<NAME> config node)."""

from trainers import biomedcoop, coop, ogkd, zeroshot  # noqa: F401

__all__ = ["biomedcoop", "coop", "ogkd", "zeroshot"]
