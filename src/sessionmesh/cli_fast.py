"""What keeps a one-shot ``mesh`` command's parsing cheap: the usual lines of the
commands agents run most, read by hand (`quick_args`), and argparse parsers made only
for the command a line names (`Commands`, `Unbuilt`)."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any


class Unbuilt:
    """The parser of a command this run does not need: whatever is asked of it
    (``add_argument``, ``set_defaults``, ``add_subparsers``…) does nothing and returns
    it. Building all ~40 commands' parsers cost a one-shot command ~8 ms of its ~45."""

    def __getattr__(self, _name: str) -> Callable[..., Unbuilt]:
        return self._nothing

    def _nothing(self, *_args: Any, **_kwargs: Any) -> Unbuilt:
        return self


class Commands:
    """``mesh``'s subcommand parsers, each made only if it is ``only`` (all when None)."""

    def __init__(self, action: Any, only: str | None) -> None:
        self.action = action
        self.only = only

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if self.only is not None and name != self.only:
            return Unbuilt()
        return self.action.add_parser(name, **kwargs)


# The usual lines of the commands agents run most, read by hand: argparse's import and
# parser cost a one-shot command ~12 ms of ~40 (benchmarks/bench_cli.py). A line with
# anything else (another flag, --help, '-', --as=NAME, a word starting with '-') goes
# to argparse, which knows every form and explains what is wrong. A test holds both
# parsers to the same arguments for every line this one takes.
_QUICK_VALUES = {"--as": "as_name", "--home": "home", "--url": "url"}
_QUICK: dict[str, tuple[str, bool, tuple[str, ...], dict[str, Any]]] = {
    # command: (its function in cli, takes TO and BODY..., its switches, its other options' defaults)
    "send": (
        "cmd_send",
        True,
        ("--json", "--urgent"),
        {
            "ttl": None,
            "id": None,
            "json_body": False,
            "path": None,
            "ack_required": False,
            "when_idle": False,
            "idle_timeout": 600.0,
        },
    ),
    "inbox": ("cmd_inbox", False, ("--json", "--peek"), {"limit": 1000}),
    "peers": ("cmd_peers", False, ("--json",), {}),
}


def quick_args(argv: list[str]) -> SimpleNamespace | None:
    """The arguments of a usual ``mesh send``, ``inbox`` or ``peers`` line, as argparse
    would give them; None for any other line."""
    spec = _QUICK.get(argv[0]) if argv else None
    if spec is None:
        return None
    fn, addressed, switches, defaults = spec
    values: dict[str, Any] = {v: None for v in _QUICK_VALUES.values()}
    values |= {flag[2:]: False for flag in switches} | defaults
    words: list[str] = []
    rest = iter(argv[1:])
    for word in rest:
        if word in _QUICK_VALUES:
            value = next(rest, "-")
            if value.startswith("-"):
                return None
            values[_QUICK_VALUES[word]] = value
        elif word in switches:
            values[word[2:]] = True
        elif word.startswith("-"):
            return None
        else:
            words.append(word)
    if addressed:
        if not words:
            return None
        values["to"], values["body"] = words[0], words[1:]
    elif words:
        return None
    from . import cli

    return SimpleNamespace(**values, fn=getattr(cli, fn), command=argv[0])
