"""Notification payloads: the part of Go's `text/template` that Dkron's users write, rendered as Dkron does.

Dkron renders `--mail-payload`, `--webhook-payload` and `--pre-webhook-payload` with Go's `text/template`
over the fields `Report`, `JobName`, `ReportingNode`, `StartTime`, `FinishedAt` (Go times), `Success`
(the *string* "true" or "false", so `{{if .Success}}` is always true: compare with `eq`), `NodeName`
and `Output`; dkron-nats adds `ExecutionGroup`, `Attempt` and `Status`.

Supported here: actions with Go's spacing and `{{- `/` -}}` trim markers, comments, `if`/`else if`/`else`/
`end`, `with`, pipelines and parentheses, string/number/bool literals, the functions `and`, `or`, `not`,
`eq`, `ne`, `len`, `print`, `printf`, `js` and `urlquery`, and the time methods
`Format`, `Unix`, `UTC`, `IsZero` and `String`. Variables, `range`, `define`,
`template` and `block` are refused when the template is parsed (the data holds nothing to range over).

Like Dkron, a template that does not parse renders as `Failed to parse template: <why>`, and one that
fails while running as `Failed to execute template:<why>`.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeAlias

from dkron_nats.models import Execution

NAME = "report"
"""The template's name in error messages, as Dkron names it."""
_ZERO_TIME = "0001-01-01 00:00:00 +0000 UTC"
_ZERO_UNIX = -62_135_596_800
_SPACE = " \t\r\n"


class TemplateSyntaxError(ValueError):
    """The template does not parse; the message reads like Go's."""


class TemplateExecError(ValueError):
    """The template parsed but failed while rendering (an unknown field, a bad comparison)."""


# ---------------------------------------------------------------------------------------------------------
# Values: what the fields hold while rendering


@dataclass(frozen=True, slots=True)
class GoTime:
    """A Go `time.Time`: printed like `Time.String()`; None is Go's zero time."""

    at: datetime | None

    def __str__(self) -> str:
        if self.at is None:
            return _ZERO_TIME
        at = self.at
        fraction = f"{at.microsecond:06d}".rstrip("0")
        offset = at.strftime("%z") or "+0000"
        return (
            f"{at.year:04d}-{at.month:02d}-{at.day:02d} {at:%H:%M:%S}"
            f"{'.' + fraction if fraction else ''} {offset} {at.tzname() or offset}"
        )


Value: TypeAlias = str | int | float | bool | GoTime | dict[str, "Value"] | None


# ---------------------------------------------------------------------------------------------------------
# The parsed tree


@dataclass(frozen=True, slots=True)
class _Field:
    names: tuple[str, ...]
    """`.A.B` is ("A", "B"); the dot alone is ()."""


@dataclass(frozen=True, slots=True)
class _Literal:
    value: Value


@dataclass(frozen=True, slots=True)
class _Func:
    name: str


@dataclass(frozen=True, slots=True)
class _Pipe:
    commands: tuple[tuple[_Arg, ...], ...]
    line: int
    source: str
    """The action's text, for error messages."""


_Arg: TypeAlias = _Field | _Literal | _Func | _Pipe


@dataclass(frozen=True, slots=True)
class _Action:
    pipe: _Pipe


@dataclass(slots=True)
class _Branch:
    pipe: _Pipe | None
    """None: the `else` branch."""
    body: list[_Node] = field(default_factory=list)


@dataclass(slots=True)
class _Block:
    kind: str
    """if or with"""
    branches: list[_Branch]


_Node: TypeAlias = str | _Action | _Block


# ---------------------------------------------------------------------------------------------------------
# Lexing: text and actions, with the trim markers applied


_TOKEN = re.compile(
    r"""
      (?P<string>"(?:[^"\\\n]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<number>[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    | (?P<field>(?:\.[A-Za-z_]\w*)+)
    | (?P<dot>\.)
    | (?P<ident>[A-Za-z_]\w*)
    | (?P<punct>[|()])
    | (?P<variable>\$\w*)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str


@dataclass(slots=True)
class _Lexer:
    src: str
    pos: int = 0

    def line(self, at: int | None = None) -> int:
        return self.src.count("\n", 0, self.pos if at is None else at) + 1

    def fail(self, message: str, at: int | None = None) -> TemplateSyntaxError:
        return TemplateSyntaxError(f"template: {NAME}:{self.line(at)}: {message}")

    def pieces(self) -> list[str | tuple[int, list[_Token]]]:
        """Text pieces and actions (line, tokens); comments are dropped."""
        out: list[str | tuple[int, list[_Token]]] = []
        trim_next = False
        while True:
            start = self.src.find("{{", self.pos)
            text = self.src[self.pos : start if start >= 0 else len(self.src)]
            if trim_next:
                text = text.lstrip(_SPACE)
            if start < 0:
                out.append(text)
                return out
            self.pos = start + 2
            if self._trim_marker_at(self.pos):
                text = text.rstrip(_SPACE)
                self.pos += 2  # Go's marker is "-" and one space
            out.append(text)
            line = self.line(start)
            tokens, trim_next = self._action(start)
            if tokens is not None:
                out.append((line, tokens))

    def _trim_marker_at(self, at: int) -> bool:
        return self.src.startswith("-", at) and self.src[at + 1 : at + 2] in tuple(_SPACE)

    def _action(self, start: int) -> tuple[list[_Token] | None, bool]:
        """The tokens of the action at `self.pos` (None for a comment) and whether it ends with ` -}}`."""
        if self.src.startswith("/*", self.pos):
            return None, self._comment(self.pos)
        tokens: list[_Token] = []
        while True:
            if self.pos >= len(self.src):
                raise self.fail("unclosed action", start)
            char = self.src[self.pos]
            if char in _SPACE:
                self.pos += 1
                if self.src.startswith("-}}", self.pos):
                    self.pos += 3
                    return tokens, True
                continue
            if self.src.startswith("}}", self.pos):
                self.pos += 2
                return tokens, False
            tokens.append(self._token())

    def _token(self) -> _Token:
        match = _TOKEN.match(self.src, self.pos)
        if match is None or match.lastgroup is None:
            char = self.src[self.pos]
            if char in '"`':
                raise self.fail("unterminated quoted string")
            raise self.fail(f"unexpected {char!r} in command")
        self.pos = match.end()
        return _Token(match.lastgroup, match.group())

    def _comment(self, opening: int) -> bool:
        end = self.src.find("*/", opening + 2)
        if end < 0:
            raise self.fail("unclosed comment", opening)
        self.pos = end + 2
        if self.src.startswith("}}", self.pos):
            self.pos += 2
            return False
        if self.src[self.pos : self.pos + 1] in tuple(_SPACE) and self.src.startswith("-}}", self.pos + 1):
            self.pos += 4
            return True
        raise self.fail("comment ends before closing delimiter", opening)


# ---------------------------------------------------------------------------------------------------------
# Parsing


_KEYWORDS = {"if", "else", "end", "with", "range", "define", "template", "block", "break", "continue"}
_UNSUPPORTED = {"range", "define", "template", "block", "break", "continue"}


class _Parser:
    def __init__(self, src: str) -> None:
        self.lexer = _Lexer(src)

    def parse(self) -> list[_Node]:
        root: list[_Node] = []
        stack: list[_Block] = []
        for piece in self.lexer.pieces():
            if isinstance(piece, str):
                if piece:
                    self._body(root, stack).append(piece)
                continue
            line, tokens = piece
            self._statement(line, tokens, root, stack)
        if stack:
            raise TemplateSyntaxError(f"template: {NAME}:{self.lexer.line()}: unexpected EOF")
        return root

    @staticmethod
    def _body(root: list[_Node], stack: list[_Block]) -> list[_Node]:
        return stack[-1].branches[-1].body if stack else root

    def _fail(self, line: int, message: str) -> TemplateSyntaxError:
        return TemplateSyntaxError(f"template: {NAME}:{line}: {message}")

    def _statement(self, line: int, tokens: list[_Token], root: list[_Node], stack: list[_Block]) -> None:
        word = tokens[0].text if tokens and tokens[0].kind == "ident" else ""
        if word in _UNSUPPORTED:
            raise self._fail(line, f"{{{{{word}}}}} is not supported in notification payloads")
        if word in ("if", "with"):
            block = _Block(word, [_Branch(self._pipe(line, tokens[1:], word))])
            self._body(root, stack).append(block)
            stack.append(block)
        elif word == "else":
            self._else(line, tokens[1:], stack)
        elif word == "end":
            if len(tokens) > 1:
                raise self._fail(line, "unexpected tokens after end")
            if not stack:
                raise self._fail(line, "unexpected {{end}}")
            stack.pop()
        else:
            self._body(root, stack).append(_Action(self._pipe(line, tokens, "command")))

    def _else(self, line: int, rest: list[_Token], stack: list[_Block]) -> None:
        if not stack or stack[-1].branches[-1].pipe is None:
            raise self._fail(line, "unexpected {{else}}")
        block = stack[-1]
        if not rest:
            block.branches.append(_Branch(None))
        elif rest[0].text == block.kind and rest[0].kind == "ident":
            block.branches.append(_Branch(self._pipe(line, rest[1:], block.kind)))
        else:
            raise self._fail(line, f"expected end; found {rest[0].text}")

    def _pipe(self, line: int, tokens: list[_Token], context: str) -> _Pipe:
        source = " ".join(t.text for t in tokens)
        if not tokens:
            raise self._fail(line, f"missing value for {context}")
        commands: list[tuple[_Arg, ...]] = []
        current: list[_Arg] = []
        i = 0
        while i < len(tokens):
            token = tokens[i]
            if token.text == "|" and token.kind == "punct":
                if not current:
                    raise self._fail(line, "missing value for command")
                commands.append(tuple(current))
                current = []
                i += 1
                continue
            arg, i = self._operand(line, tokens, i)
            current.append(arg)
        if not current:
            raise self._fail(line, "missing value for command")
        commands.append(tuple(current))
        return _Pipe(tuple(commands), line, source)

    def _operand(self, line: int, tokens: list[_Token], i: int) -> tuple[_Arg, int]:
        token = tokens[i]
        kind, text = token.kind, token.text
        if kind == "field":
            return _Field(tuple(text[1:].split("."))), i + 1
        if kind == "dot":
            return _Field(()), i + 1
        if kind == "string":
            return _Literal(_unquote(text, lambda why: self._fail(line, why))), i + 1
        if kind == "raw":
            return _Literal(text[1:-1]), i + 1
        if kind == "number":
            number = float(text) if any(c in text for c in ".eE") else int(text)
            return _Literal(number), i + 1
        if kind == "variable":
            raise self._fail(line, f"undefined variable {text!r}: variables are not supported")
        if kind == "ident":
            if text in ("true", "false"):
                return _Literal(text == "true"), i + 1
            if text == "nil":
                raise self._fail(line, "nil is not a command")
            if text in _KEYWORDS:
                raise self._fail(line, f"unexpected <{text}> in command")
            if text not in _FUNCTIONS:
                raise self._fail(line, f'function "{text}" not defined')
            return _Func(text), i + 1
        if text == "(":
            depth, j = 1, i + 1
            while j < len(tokens) and depth:
                depth += {"(": 1, ")": -1}.get(tokens[j].text, 0) if tokens[j].kind == "punct" else 0
                j += 1
            if depth:
                raise self._fail(line, "unclosed left paren")
            return self._pipe(line, tokens[i + 1 : j - 1], "parenthesized pipeline"), j
        raise self._fail(line, f"unexpected {text!r} in operand")


def _unquote(text: str, fail: Callable[[str], TemplateSyntaxError]) -> str:
    """A Go interpreted string literal ("a\\tb"); its common escapes are JSON's."""
    try:
        value = json.loads(text)
    except ValueError:
        raise fail(f"invalid syntax in string {text}") from None
    return str(value)


# ---------------------------------------------------------------------------------------------------------
# Rendering


def _truth(value: Value) -> bool:
    """Go's truth: empty strings, zero numbers, false and nil are false; structs and times are true."""
    if isinstance(value, GoTime | dict):
        return True
    return bool(value)


def _text(value: Value) -> str:
    """How Go's fmt prints a value (%v)."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, dict):
        return "{" + " ".join(_text(v) for v in value.values()) + "}"
    return str(value)


class _Renderer:
    def __init__(self, data: dict[str, Value]) -> None:
        self.data = data

    def nodes(self, nodes: Sequence[_Node], dot: Value, out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, str):
                out.append(node)
            elif isinstance(node, _Action):
                out.append(_text(self.pipe(node.pipe, dot)))
            else:
                self.block(node, dot, out)

    def block(self, block: _Block, dot: Value, out: list[str]) -> None:
        for branch in block.branches:
            if branch.pipe is None:
                self.nodes(branch.body, dot, out)
                return
            value = self.pipe(branch.pipe, dot)
            if _truth(value):
                self.nodes(branch.body, value if block.kind == "with" else dot, out)
                return

    def pipe(self, pipe: _Pipe, dot: Value) -> Value:
        try:
            value: Value = None
            for i, command in enumerate(pipe.commands):
                value = self.command(command, dot, [value] if i else [])
            return value
        except _Failure as exc:
            raise TemplateExecError(
                f'template: {NAME}:{pipe.line}: executing "{NAME}" at <{pipe.source}>: {exc}'
            ) from None

    def command(self, command: tuple[_Arg, ...], dot: Value, piped: list[Value]) -> Value:
        head, rest = command[0], command[1:]
        args = [self.arg(a, dot) for a in rest] + piped
        if isinstance(head, _Func):
            return _FUNCTIONS[head.name](*args)
        if isinstance(head, _Field):
            return self.field(head, dot, args)
        if args:
            raise _Failure(f"can't give argument to non-function {_text(self.arg(head, dot))}")
        return self.arg(head, dot)

    def arg(self, arg: _Arg, dot: Value) -> Value:
        if isinstance(arg, _Literal):
            return arg.value
        if isinstance(arg, _Field):
            return self.field(arg, dot, [])
        if isinstance(arg, _Pipe):
            return self.pipe(arg, dot)
        return _FUNCTIONS[arg.name]()

    def field(self, chain: _Field, dot: Value, args: list[Value]) -> Value:
        value = dot
        for i, name in enumerate(chain.names):
            value = _member(value, name, args if i == len(chain.names) - 1 else [])
        if not chain.names and args:
            raise _Failure("can't give argument to non-function .")
        return value


class _Failure(Exception):
    """Why rendering one action failed; wrapped with the action's position."""


def _member(value: Value, name: str, args: list[Value]) -> Value:
    if isinstance(value, dict):
        if name not in value:
            raise _Failure(f"can't evaluate field {name} in type notification data")
        if args:
            raise _Failure(f"{name} is not a method but has arguments")
        return value[name]
    if isinstance(value, GoTime):
        return _time_method(value, name, args)
    kind = "string" if isinstance(value, str) else type(value).__name__
    raise _Failure(f"can't evaluate field {name} in type {kind}")


def _time_method(value: GoTime, name: str, args: list[Value]) -> Value:
    at = value.at
    methods: dict[str, Callable[[], Value]] = {
        "String": lambda: str(value),
        "IsZero": lambda: at is None,
        "UTC": lambda: GoTime(at.astimezone(UTC) if at else None),
        "Unix": lambda: int(at.timestamp()) if at else _ZERO_UNIX,
    }
    if name == "Format":
        if len(args) != 1 or not isinstance(args[0], str):
            raise _Failure("wrong number of args for Format: want 1 string")
        return go_format(at, args[0])
    if name not in methods:
        raise _Failure(f"can't evaluate field {name} in type time.Time")
    if args:
        raise _Failure(f"wrong number of args for {name}: want 0 got {len(args)}")
    return methods[name]()


# ---------------------------------------------------------------------------------------------------------
# Go's time layouts (for .StartTime.Format "2006-01-02 15:04")


_LAYOUT = re.compile(
    r"January|Jan|Monday|Mon|MST|2006|_2|01|02|03|04|05|06|15|1|2|3|4|5|PM|pm"
    r"|-070000|-07:00:00|-0700|-07:00|-07|Z070000|Z07:00:00|Z0700|Z07:00|Z07"
    r"|[.,](?:0+|9+)(?!\d)"
)


def go_format(at: datetime | None, layout: str) -> str:
    """Format like Go's `Time.Format(layout)`; None is Go's zero time (in UTC)."""
    at = at or datetime(1, 1, 1, tzinfo=UTC)
    return _LAYOUT.sub(lambda m: _layout_chunk(at, m.group()), layout)


def _layout_chunk(at: datetime, chunk: str) -> str:
    hour12 = at.hour % 12 or 12
    fixed: dict[str, str] = {
        "January": at.strftime("%B"),
        "Jan": at.strftime("%b"),
        "Monday": at.strftime("%A"),
        "Mon": at.strftime("%a"),
        "MST": at.tzname() or _offset(at, ""),
        "2006": f"{at.year:04d}",
        "06": f"{at.year % 100:02d}",
        "01": f"{at.month:02d}",
        "1": str(at.month),
        "02": f"{at.day:02d}",
        "_2": f"{at.day:>2}",
        "2": str(at.day),
        "15": f"{at.hour:02d}",
        "03": f"{hour12:02d}",
        "3": str(hour12),
        "04": f"{at.minute:02d}",
        "4": str(at.minute),
        "05": f"{at.second:02d}",
        "5": str(at.second),
        "PM": "PM" if at.hour >= 12 else "AM",
        "pm": "pm" if at.hour >= 12 else "am",
    }
    if chunk in fixed:
        return fixed[chunk]
    if chunk[0] in ".,":
        digits = f"{at.microsecond:06d}000"[: len(chunk) - 1]
        if chunk[1] == "9":
            digits = digits.rstrip("0")
            return chunk[0] + digits if digits else ""
        return chunk[0] + digits
    if chunk.startswith("Z") and not at.utcoffset():
        return "Z"
    return _offset(at, chunk.lstrip("Z-"))


def _offset(at: datetime, shape: str) -> str:
    """The UTC offset in the shape of a layout's zone chunk (0700, 07:00, 07, 070000, 07:00:00)."""
    offset = at.utcoffset()
    seconds = int(offset.total_seconds()) if offset else 0
    sign = "-" if seconds < 0 else "+"
    hours, rest = divmod(abs(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    parts = {
        "": f"{hours:02d}{minutes:02d}",
        "07": f"{hours:02d}",
        "0700": f"{hours:02d}{minutes:02d}",
        "07:00": f"{hours:02d}:{minutes:02d}",
        "070000": f"{hours:02d}{minutes:02d}{secs:02d}",
        "07:00:00": f"{hours:02d}:{minutes:02d}:{secs:02d}",
    }
    return sign + parts[shape]


# ---------------------------------------------------------------------------------------------------------
# Functions


def _and(*args: Value) -> Value:
    if not args:
        raise _Failure("wrong number of args for and: want at least 1 got 0")
    return next((a for a in args if not _truth(a)), args[-1])


def _or(*args: Value) -> Value:
    if not args:
        raise _Failure("wrong number of args for or: want at least 1 got 0")
    return next((a for a in args if _truth(a)), args[-1])


def _not(*args: Value) -> Value:
    if len(args) != 1:
        raise _Failure(f"wrong number of args for not: want 1 got {len(args)}")
    return not _truth(args[0])


def _kind(value: Value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    raise _Failure(f"invalid type for comparison: {_text(value)}")


def _eq(*args: Value) -> Value:
    if len(args) < 2:
        raise _Failure("missing argument for comparison")
    first = args[0]
    for other in args[1:]:
        if _kind(first) != _kind(other):
            raise _Failure("incompatible types for comparison")
        if first == other:
            return True
    return False


def _ne(*args: Value) -> Value:
    if len(args) != 2:
        raise _Failure(f"wrong number of args for ne: want 2 got {len(args)}")
    return not _eq(*args)


def _len(*args: Value) -> Value:
    if len(args) != 1 or not isinstance(args[0], str):
        raise _Failure("len of a non-string")
    return len(args[0].encode())


def _sprint(*args: Value) -> str:
    """Go's fmt.Sprint: a space between two operands when neither is a string."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(_text(arg))
    return "".join(out)


_VERB = re.compile(r"%([a-zA-Z%])")


def _printf(*args: Value) -> Value:
    """Go's fmt.Sprintf for the verbs %s %v %d %q %t %% (without width or precision)."""
    if not args or not isinstance(args[0], str):
        raise _Failure("printf needs a format string")
    operands = list(args[1:])
    used = 0

    def verb(match: re.Match[str]) -> str:
        nonlocal used
        letter = match.group(1)
        if letter == "%":
            return "%"
        if used >= len(operands):
            return f"%!{letter}(MISSING)"
        used += 1
        return _format_operand(letter, operands[used - 1])

    out = _VERB.sub(verb, args[0])
    if used < len(operands):
        extra = ", ".join(f"{_go_type(v)}={_text(v)}" for v in operands[used:])
        out += f"%!(EXTRA {extra})"
    return out


def _format_operand(letter: str, value: Value) -> str:
    """One printf verb; a value of the wrong type prints as Go prints it (`%!d(string=x)`)."""
    fits = {
        "v": True,
        "s": isinstance(value, str | GoTime),
        "q": isinstance(value, str),
        "d": isinstance(value, int) and not isinstance(value, bool),
        "t": isinstance(value, bool),
    }
    if not fits.get(letter):
        return f"%!{letter}({_go_type(value)}={_text(value)})"
    return go_quote(value) if letter == "q" and isinstance(value, str) else _text(value)


_GO_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "bool"),
    (int, "int"),
    (float, "float64"),
    (GoTime, "time.Time"),
    (str, "string"),
)


def _go_type(value: Value) -> str:
    return next((name for kind, name in _GO_TYPES if isinstance(value, kind)), "<nil>")


def go_quote(text: str) -> str:
    """Go's strconv.Quote: a double-quoted literal (for most text the same as a JSON string)."""
    named = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char in named:
            out.append(named[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


def _js(*args: Value) -> Value:
    """Go's JSEscapeString: safe inside a JavaScript string literal."""
    text = _sprint(*args)
    backslashed = {"\\": "\\\\", "'": "\\'", '"': '\\"'}
    out: list[str] = []
    for char in text:
        if char in backslashed:
            out.append(backslashed[char])
        elif char in "<>&=`" or ord(char) < 0x20 or not char.isprintable():
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return "".join(out)


def _urlquery(*args: Value) -> Value:
    return urllib.parse.quote_plus(_sprint(*args), safe="")


_FUNCTIONS: dict[str, Callable[..., Value]] = {
    "and": _and,
    "or": _or,
    "not": _not,
    "eq": _eq,
    "ne": _ne,
    "len": _len,
    "print": _sprint,
    "printf": _printf,
    "js": _js,
    "urlquery": _urlquery,
}


# ---------------------------------------------------------------------------------------------------------
# The notification data and the public entry points


@dataclass(frozen=True, slots=True)
class Report:
    """What one notification is about: the execution reported on and the launch it belongs to."""

    execution: Execution
    """The execution that ended the launch (or, for a pre-webhook, the first one dispatched)."""
    launch: Sequence[Execution]
    """Every execution of the launch, one per node (its latest attempt)."""
    reporting_node: str
    success: bool
    """The launch as a whole: true only when every node succeeded."""
    status: str
    """success, failed, partially_failed, or running for a launch that just started."""

    def text(self) -> str:
        """Dkron's multi-line `Report`."""
        ex = self.execution
        lines = "".join(
            f"\t[Node]: {e.node_name} [Start]: {GoTime(e.started_at)} [End]: {GoTime(_end(e))} "
            f"[Success]: {_text(e.success)}\n"
            for e in self.launch
        )
        return (
            f"Executed: {ex.job_name}\nReporting node: {self.reporting_node}\n"
            f"Start time: {GoTime(ex.started_at)}\nEnd time: {GoTime(_end(ex))}\n"
            f"Success: {_text(self.success)}\nNode: {ex.node_name}\nOutput: {ex.output}\n"
            f"Execution group: {ex.group}\n{lines}"
        )

    def fields(self) -> dict[str, Value]:
        ex = self.execution
        return {
            "Report": self.text(),
            "JobName": ex.job_name,
            "ReportingNode": self.reporting_node,
            "StartTime": GoTime(ex.started_at),
            "FinishedAt": GoTime(_end(ex)),
            "Success": _text(self.success),
            "NodeName": ex.node_name,
            "Output": ex.output,
            "ExecutionGroup": ex.group,
            "Attempt": ex.attempt,
            "Status": self.status,
        }


def _end(ex: Execution) -> datetime | None:
    return ex.finished_at if ex.finished else None


@dataclass(frozen=True, slots=True)
class Template:
    nodes: tuple[_Node, ...]

    def execute(self, data: dict[str, Value]) -> str:
        out: list[str] = []
        _Renderer(data).nodes(self.nodes, data, out)
        return "".join(out)


def parse(source: str) -> Template:
    """Parse a template; raises TemplateSyntaxError with Go's wording."""
    return Template(tuple(_Parser(source).parse()))


def render(source: str, report: Report) -> str:
    """The body Dkron would send for `source`, or its "Failed to ..." text."""
    try:
        template = parse(source)
    except TemplateSyntaxError as exc:
        return f"Failed to parse template: {exc}"
    try:
        return template.execute(report.fields())
    except TemplateExecError as exc:
        return f"Failed to execute template:{exc}"


def problem(source: str) -> str | None:
    """Why a template cannot render (checked once at start-up), or None."""
    sample = Execution(id="0-node", job_name="job", group=0, started_at=datetime.now(UTC))
    text = render(source, Report(sample, [sample], "node", True, "success"))
    return text if text.startswith(("Failed to parse template", "Failed to execute template")) else None
