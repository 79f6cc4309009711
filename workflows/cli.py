"""The installed `kissgen` command: the service client of kiss_core.cli plus the offline jobs.

kissgen curate SOURCE DEST [--config curate.yaml] [--address ray://...]
kissgen train-lora DATASET OUT --base wan-i2v|wan-vace [--config train.yaml] [--address ...]

It lives outside kiss_core because those two drive Ray; kiss_core.cli stays importable without it.
"""

from __future__ import annotations

import sys

from kiss_core import cli


def main(argv: list[str] | None = None) -> int:
    parser, sub = cli.build_parser()
    # Each driver module registers its own subcommand; Ray is imported only when one runs.
    from workflows import curate, train_lora

    curate.add_parser(sub)
    train_lora.add_parser(sub)
    return cli.run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
