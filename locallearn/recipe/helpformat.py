"""How every `locallearn ... --help` reads: each option shows its default (as it would
be typed), so `locallearn train --help` says what a bare `locallearn train` does; a
description's paragraphs are reflowed to the terminal and its indented lines (lists)
kept as written.
"""
from __future__ import annotations

import argparse
import inspect
import textwrap


class HelpFormatter(argparse.HelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str:
        """The help, plus "(default: X)" unless it already speaks of its default or there
        is none to show (None, an off switch, an empty value, a positional)."""
        text = action.help or ""
        d = action.default
        nothing = (d is None or d is False or d is argparse.SUPPRESS
                   or (isinstance(d, (str, list, tuple)) and not d))
        if "default" in text or nothing or not action.option_strings:
            return text
        shown = " ".join(map(str, d)) if isinstance(d, (list, tuple)) else str(d)
        return f"{text} (default: {shown.replace('%', '%%')})"

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        """Runs of unindented lines are paragraphs, reflowed to the width; indented lines
        (lists, examples) and blank lines are kept as written."""
        out, para = [], []

        def flush() -> None:
            # a line ending in "-" broke a hyphenated word ("multiply-" / "adds"): no space
            joined = "".join(w if i == 0 or para[i - 1].endswith("-") else " " + w for i, w in enumerate(para))
            out.extend(textwrap.wrap(joined, width, initial_indent=indent, subsequent_indent=indent))
            para.clear()

        for line in inspect.cleandoc(text).splitlines():
            if line.strip() and not line[0].isspace():
                para.append(line.strip())
                continue
            flush()
            out.append(indent + line if line.strip() else "")
        flush()
        return "\n".join(out)
