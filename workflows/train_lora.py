"""Placeholder: filled in by the issue that builds `kissgen train-lora`."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Nothing yet."""
