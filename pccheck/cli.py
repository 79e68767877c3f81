"""Command-line parsing shared by the tools: usage errors as one line, integer flags with a floor."""
from __future__ import annotations

import argparse
from typing import Callable

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """Prints a usage error as one line (argparse prints the whole usage block) and exits EXIT_USAGE."""

    def error(self, message: str) -> None:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum, with a clear message otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        return value

    return parse
