"""Families of published models: how each release is built from the zoo's components and how its
file's keys map onto them (one module per group of families)."""
