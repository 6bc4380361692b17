"""The first word of a command line (`locallearn COMMAND`, `locallearn report STEP`,
`locallearn tracking ACTION`): an argparse parser with a subcommand per word, which
its --help lists with their help; a word it does not know is one error line that
names the known ones."""
from __future__ import annotations

import argparse
import difflib

from ..errors import ConfigError
from ..recipe.config import HelpFormatter


class _WordParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message} (see {self.prog} --help)")


def word_parser(prog: str, description: str, words: dict[str, str], noun: str,
                epilog: str | None = None) -> argparse.ArgumentParser:
    """A parser of the first word only, one of `words` (word -> its help); the rest of
    the line is the chosen word's own parser's."""
    p = _WordParser(prog=prog, description=description, epilog=epilog, formatter_class=HelpFormatter,
                    usage=f"%(prog)s {noun.upper()} [flag ...]")
    sub = p.add_subparsers(dest="word", title=f"{noun}s", metavar=noun.upper())
    for name, text in words.items():
        sub.add_parser(name, help=text, add_help=False)
    p.noun = noun
    return p


def words_of(p: argparse.ArgumentParser) -> list[str]:
    return [a for action in p._actions if isinstance(action, argparse._SubParsersAction) for a in action.choices]


def pick(p: argparse.ArgumentParser, argv: list[str]) -> str:
    """The word `argv` starts with. --help (and the parser's other flags) act as argparse's
    do, exiting; a missing or unknown word raises ConfigError, one line naming the known
    ones (and the nearest, for a typo)."""
    words, noun = words_of(p), p.noun
    where = f"{p.prog}: " if " " in p.prog else ""        # `locallearn: error: ` says the rest
    known = f"{noun}s: {', '.join(words)}"
    if not argv:
        raise ConfigError(f"{where}no {noun} given ({known}; see {p.prog} --help)")
    if argv[0].startswith("-") and argv[0] not in p._option_string_actions:
        raise ConfigError(f"{where}{argv[0]} before the {noun}: the {noun} comes first ({known})")
    if argv[0] not in words and argv[0] not in p._option_string_actions:
        near = difflib.get_close_matches(argv[0], words, n=1)
        raise ConfigError(f"{where}unknown {noun} {argv[0]!r}" + (f" (did you mean {near[0]}?)" if near else "")
                          + f"; {known}")
    return p.parse_args(argv[:1]).word
