"""The Faust agents, one module per stage in flow order.

ingest, identity, profiles (with complaint signals and attribution), minutes, store.
"""
