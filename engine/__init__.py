"""A small Dassl-compatible core: config, registries, data, optimisation, evaluation, trainer base."""
