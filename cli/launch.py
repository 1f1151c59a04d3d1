"""The `carechain` command's entry point: Ctrl-C at any moment, even while the command's
modules still load, ends it with one line and exit code 130, never a traceback."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from carechain.cli.main import main as run_command  # noqa: PLC0415 - guarded import

        run_command()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None
