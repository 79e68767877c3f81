"""Command-line parsing shared by the tools: usage errors as one line, integer flags with a floor."""
from __future__ import annotations

import argparse
from typing import Callable, Union

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """Prints a usage error as one line (argparse prints the whole usage block) and exits EXIT_USAGE."""

    def error(self, message: str) -> None:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def int_at_least(minimum: int, *words: str) -> Callable[[str], Union[int, str]]:
    """An argparse type: an integer >= minimum (or one of `words`, e.g. "auto"), with a clear message otherwise."""

    def parse(text: str) -> Union[int, str]:
        if text in words:
            return text
        try:
            value = int(text)
        except ValueError:
            alternatives = "".join(f" or {w!r}" for w in words)
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer{alternatives}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        return value

    return parse
