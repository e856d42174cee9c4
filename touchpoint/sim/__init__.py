"""Simulated traffic and labelled scenarios with known truth, and scoring against that truth.

``simulate`` makes endless live traffic for all five channels; ``scenarios`` (complaint
journeys) and ``campaign_scenario`` (campaign answers) write finite event sets with the
truth they must lead to; ``signal_quality`` scores complaint signals against that truth.
Pure Python: no Kafka, no warehouse.
"""
