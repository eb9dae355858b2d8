"""Trainers. Importing this package registers every trainer (and its TRAINER.<NAME> config node)."""

from trainers import coop, zeroshot  # noqa: F401

__all__ = ["coop", "zeroshot"]
