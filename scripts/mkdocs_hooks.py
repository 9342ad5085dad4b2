"""mkdocs hooks: the reference pages that are generated from the code at build time, so they cannot drift from it.

``mkdocs.yml`` lists this file under ``hooks:``. A page holds a marker on a line of its own; the hook replaces it
with Markdown built from live objects:

- ``<!-- sfc:cli -->``: every ``sfc`` command and option, walked from the parser ``sfc_plugin.cli.build_parser()``
  returns (nothing but the ``argparse`` object is read, so it follows the CLI wherever its code lives);
- ``<!-- sfc:presets -->``: ``sfc_plugin.presets.PRESETS``, each with its model and the submodule each SAE becomes;
- ``<!-- sfc:builtins -->``: the names the built-in plugins register in each registry (entry points not loaded,
  so plugins installed where the site is built do not appear);
- ``<!-- sfc:changelog -->``: ``CHANGELOG.md`` without its title, its links into ``docs/`` pointed at the site's
  pages (one changelog, shown on GitHub and on the site).

None of them imports torch. ``python scripts/mkdocs_hooks.py cli|presets|builtins|changelog`` prints a section.
"""

from __future__ import annotations

import argparse
import html
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # document the checkout being built, not another installed copy
    sys.path.insert(0, str(ROOT))

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|])")


def text(value) -> str:
    """Plain text for a Markdown table cell or paragraph: HTML and Markdown syntax escaped, one line."""
    value = " ".join(str(value).split())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(value, quote=False))


def code(value) -> str:
    """An inline code span that holds any text (backticks inside it included), safe in a table cell."""
    value = str(value).replace("|", "&#124;")
    fence = "``" if "`" in value else "`"
    return f"{fence}{value}{fence}" if fence == "`" else f"{fence} {value} {fence}"


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """``(name, help, parser)`` of a parser's subcommands, in the order they were added."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                out.append((name, helps.get(name) or "", sub))
    return out


def _value(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.choices is not None and action.metavar is None:
        one = "{" + ",".join(map(str, action.choices)) + "}"
    elif isinstance(action.metavar, tuple):
        return " ".join(action.metavar)
    else:
        one = action.metavar or (action.dest if not action.option_strings else action.dest.upper())
    if action.nargs in (None, 1):
        return one
    if action.nargs == "?":
        return f"[{one}]"
    if action.nargs == "*":
        return f"[{one} ...]"
    if action.nargs == "+":
        return f"{one} [{one} ...]"
    if isinstance(action.nargs, int):
        return " ".join([one] * action.nargs)
    return one


def _default(action: argparse.Action) -> str:
    default = action.default
    if isinstance(action, argparse.BooleanOptionalAction) and isinstance(default, bool):
        positive = [o for o in action.option_strings if not o.startswith("--no-")]
        negative = [o for o in action.option_strings if o.startswith("--no-")]
        return code((positive if default else negative or positive)[0])
    if action.nargs == 0 or default is None or default is argparse.SUPPRESS or default is False or default == []:
        return ""
    return code(default)


def _help(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    """The help string as ``--help`` prints it: ``%(default)s``, ``%(choices)s``, ``%(prog)s`` expanded."""
    if not action.help:
        return ""
    params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    params["prog"] = parser.prog
    if params.get("choices") is not None:
        params["choices"] = ", ".join(map(str, params["choices"]))
    try:
        return action.help % params
    except (KeyError, TypeError, ValueError):
        return action.help


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=88, max_help_position=40)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, prefix="")
    return formatter.format_help().strip()


def _command_section(prog: str, help_line: str, parser: argparse.ArgumentParser, level: int) -> list[str]:
    lines = [f"{'#' * level} `{prog}`", ""]
    if help_line:
        lines += [text(help_line[0].upper() + help_line[1:]) + ("" if help_line.endswith(".") else "."), ""]
    if parser.description:
        lines += [text(parser.description), ""]
    lines += ["```text", _usage(parser), "```", ""]
    rows = [
        a
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and a.help is not argparse.SUPPRESS
    ]
    if rows:
        defaults = any(_default(a) for a in rows)  # this CLI states most defaults in the help text
        lines += [f"| argument | value |{' default |' if defaults else ''} description |"]
        lines += ["|---|---|" + ("---|" if defaults else "") + "---|"]
        for action in rows:
            names = ", ".join(code(s) for s in action.option_strings) or code(action.dest)
            value = _value(action) if action.option_strings else ""
            default = f" {_default(action)} |" if defaults else ""
            lines.append(f"| {names} | {code(value) if value else ''} |{default} {text(_help(action, parser))} |")
        lines.append("")
    if parser.epilog:
        lines += [text(parser.epilog), ""]
    for name, sub_help, sub in _subcommands(parser):
        lines += _command_section(f"{prog} {name}", sub_help, sub, level + 1)
    return lines


def cli_markdown(parser: argparse.ArgumentParser, prog: str = "sfc") -> str:
    """Markdown reference of an argparse parser: a table of its commands, then one section per command."""
    commands = _subcommands(parser)
    lines = ["| command | what it does |", "|---|---|"]
    for name, help_line, sub in commands:
        anchor = re.sub(r"[^a-z0-9]+", "-", f"{prog} {name}".lower()).strip("-")
        nested = ", ".join(f"`{n}`" for n, _, _ in _subcommands(sub))
        lines.append(f"| [`{prog} {name}`](#{anchor}) | {text(help_line)}{f' ({nested})' if nested else ''} |")
    lines.append("")
    for name, help_line, sub in commands:
        lines += _command_section(f"{prog} {name}", help_line, sub, level=2)
    return "\n".join(lines)


def presets_markdown() -> str:
    from sfc_plugin.presets import PRESETS

    lines = []
    for preset in PRESETS.values():
        lines += [f"### `{preset.name}`", "", text(preset.description[0].upper() + preset.description[1:]) + ".", ""]
        lines += [f"- {text(line)}" for line in preset.summary()] + [""]
        lines += ["| submodule | hook | SAE spec (`release:sae_id`) |", "|---|---|---|"]
        for (spec, hook), name in zip(preset.saes, preset.submodules()):
            lines.append(f"| `{name}` | `{hook}` | {code(spec)} |")
        lines.append("")
    return "\n".join(lines)


def builtins_markdown() -> str:
    import warnings

    from sfc_plugin.plugins import REGISTRIES, new_plugin_manager, registry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = new_plugin_manager(entry_points=False)
        lines = ["| registry | hook | built-in names |", "|---|---|---|"]
        for kind, hook in REGISTRIES.items():
            names = ", ".join(f"`{name}`" for name in sorted(registry(kind, pm)))
            lines.append(f"| {kind} | [`{hook}`](#sfc_plugin.hookspecs.{hook}) | {names} |")
    return "\n".join(lines) + "\n"


def changelog_markdown() -> str:
    text_ = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    body = text_.split("\n", 1)[1] if text_.startswith("# ") else text_
    return re.sub(r"\]\(docs/", "](", body)


def _cli() -> str:
    from sfc_plugin.cli import build_parser

    return cli_markdown(build_parser())


MARKERS = {
    "<!-- sfc:cli -->": _cli,
    "<!-- sfc:presets -->": presets_markdown,
    "<!-- sfc:builtins -->": builtins_markdown,
    "<!-- sfc:changelog -->": changelog_markdown,
}


def on_page_markdown(markdown: str, page=None, config=None, files=None, **kwargs) -> str:
    for marker, build in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, build())
    return markdown


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "cli"
    print(
        {"cli": _cli, "presets": presets_markdown, "builtins": builtins_markdown, "changelog": changelog_markdown}[
            which
        ]()
    )
