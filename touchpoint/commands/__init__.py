"""The ``touchpoint`` subcommands, one module each (:mod:`touchpoint.cli` gathers them).

``common`` holds what they share: one-line errors, settings, plain-text tables, progress.
"""
