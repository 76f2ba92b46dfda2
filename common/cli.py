"""What the command-line tools share: help that states each flag's default once, and only when it says something."""

from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to a flag's help, unless the help already speaks of its default, the
    default is empty (None, False, "", []) or the flag is required: never "(default: None)", never
    two defaults for one flag."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (action.default is argparse.SUPPRESS or action.required or "default" in text.lower()
                or _silent(action.default) or not action.option_strings):
            return action.help
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class RawDescriptionDefaultsHelpFormatter(DefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """DefaultsHelpFormatter that keeps the description's own line breaks (a usage block in a docstring)."""


def _silent(default: object) -> bool:
    """A default that tells a reader nothing: None, False, or an empty string or list."""
    return default is None or default is False or (isinstance(default, str | list | tuple) and not default)
