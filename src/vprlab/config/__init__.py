"""Checks of composed configs that run before anything heavy is built (:mod:`~vprlab.config.checks`)."""
