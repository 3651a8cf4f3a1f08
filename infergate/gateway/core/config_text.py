"""Read a config.pbtxt that may carry fields our ModelConfig does not declare.

protobuf's own text parser can skip unknown fields (`allow_unknown_field`), but not
one written as a list without a colon (`future_field [ { ... } ]`, the syntax
Triton's docs use), and it does not say which fields it skipped. So a small scanner
walks the text alongside the ModelConfig descriptor first, notes every field the
descriptor does not know (with its path, e.g. `instance_group.fancy_new_thing`),
cuts those fields out of the text, and the strict parser reads the rest. Comments
and string literals are skipped as tokens, so a `[` inside a string is never taken
for syntax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import cast

from google.protobuf import text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from infergate.protocol import model_config_pb2 as mc

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<word>[A-Za-z0-9_.+\-]+)
  | (?P<punct>[{}\[\]<>:,;/])
    """,
    re.VERBOSE,
)


class ConfigSyntaxError(ValueError):
    """The text is not protobuf text format at all (unbalanced, stray characters)."""


@dataclass(frozen=True)
class _Token:
    kind: str  # "string", "word" or "punct"
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class ParsedConfig:
    config: mc.ModelConfig
    unknown_fields: tuple[str, ...]  # dotted paths, in the order they appear


def parse_config_text(text: str) -> ParsedConfig:
    """The config in `text`, and the fields it names that ModelConfig does not declare.

    Raises text_format.ParseError (or ConfigSyntaxError) for text that is wrong in
    itself: a bad value for a known field, unbalanced braces, ...
    """
    tokens = _tokens(text)
    scanner = _Scanner(tokens)
    # The upb descriptor type is not the pure-Python one mypy knows; same interface.
    scanner.body(cast(Descriptor, mc.ModelConfig.DESCRIPTOR), "", closing=None)
    cleaned = text
    for start, end in reversed(scanner.cuts):
        cleaned = cleaned[:start] + " " + cleaned[end:]
    config = mc.ModelConfig()
    text_format.Parse(cleaned, config)
    return ParsedConfig(config, tuple(scanner.unknown))


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            line = text.count("\n", 0, position) + 1
            raise ConfigSyntaxError(f"line {line}: unexpected {text[position]!r}")
        kind = match.lastgroup or ""
        if kind not in ("space", "comment"):
            tokens.append(_Token(kind, match.group(), match.start(), match.end()))
        position = match.end()
    return tokens


class _Scanner:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.at = 0
        self.unknown: list[str] = []
        self.cuts: list[tuple[int, int]] = []

    def _peek(self) -> _Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _next(self) -> _Token:
        token = self._peek()
        if token is None:
            raise ConfigSyntaxError("the config ends in the middle of a field")
        self.at += 1
        return token

    def _accept(self, text: str) -> bool:
        token = self._peek()
        if token is not None and token.kind == "punct" and token.text == text:
            self.at += 1
            return True
        return False

    def body(self, descriptor: Descriptor | None, path: str, closing: str | None) -> None:
        """Fields until `closing` (None: the end of the text)."""
        while True:
            token = self._peek()
            if token is None:
                if closing is not None:
                    raise ConfigSyntaxError(f"'{closing}' expected before the end of the config")
                return
            if token.kind == "punct" and token.text == closing:
                self.at += 1
                return
            self.field(descriptor, path)

    def field(self, descriptor: Descriptor | None, path: str) -> None:
        first = self._next()
        if first.kind == "punct" and first.text == "[":  # an extension or Any type URL
            name = "["
            while not self._accept("]"):
                name += self._next().text
            name += "]"
            known: FieldDescriptor | None = None
        elif first.kind == "word":
            name = first.text
            known = descriptor.fields_by_name.get(name) if descriptor is not None else None
        else:
            raise ConfigSyntaxError(f"a field name expected, not {first.text!r}")
        full = f"{path}.{name}" if path else name
        child = known.message_type if known is not None else None
        self._accept(":")
        self.value(child, full)
        end = self.tokens[self.at - 1].end
        if self._accept(",") or self._accept(";"):
            end = self.tokens[self.at - 1].end
        if descriptor is not None and known is None:  # inside an unknown one: cut already
            self.unknown.append(full)
            self.cuts.append((first.start, end))

    def value(self, descriptor: Descriptor | None, path: str) -> None:
        if self._accept("{"):
            self.body(descriptor, path, "}")
        elif self._accept("<"):
            self.body(descriptor, path, ">")
        elif self._accept("["):
            if self._accept("]"):
                return
            while True:
                self.value(descriptor, path)
                if self._accept("]"):
                    return
                if not self._accept(","):
                    raise ConfigSyntaxError(f"{path}: ',' or ']' expected in a list")
        else:
            token = self._next()
            if token.kind == "punct":
                raise ConfigSyntaxError(f"{path}: a value expected, not {token.text!r}")
            # Adjacent string literals form one value ("a" "b").
            while token.kind == "string" and (nxt := self._peek()) and nxt.kind == "string":
                token = self._next()
