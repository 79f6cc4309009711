"""Curation: raw kiss clips → a scored, trimmed, captioned training set, every rejection explained.

Per-clip logic only (no Ray): the Ray Data driver is workflows/curate.py. `manifest` is the dataset
contract that training reads.
"""
