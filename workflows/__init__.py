"""Offline jobs on the same Ray cluster as the service: thin Ray Data / Ray Train drivers over kiss_core.

curate.py     `kissgen curate`: raw clips → scored, trimmed, captioned training set (Ray Data)
train_lora.py `kissgen train-lora`: curated set → a LoRA the VideoGenerator loads (Ray Train)
cli.py        the installed `kissgen`: kiss_core.cli's commands plus these two
"""
