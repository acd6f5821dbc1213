"""Comma-separated tuple overrides on the command line.

ml_collections parses the override of a tuple field with ``ast.literal_eval``, so
``--config.dataset.attributes=expression,identity`` (two bare words) becomes the one-element
tuple ``('expression,identity',)``; only ``--config.dataset.attributes="('expression',
'identity')"`` or a repeated flag gives two names. :func:`install` registers a parser that also
reads bare comma-separated words as a tuple of strings:

    --config.dataset.attributes=expression,identity      ->  ('expression', 'identity')
    --config.dataset.attributes="('expression','identity')"  (unchanged)
    --config.model.encoder_widths=32,64,128              ->  (32, 64, 128)  (unchanged)

It must run before the override flags are defined: a config file calls it from
``get_config`` (``configs/folder.py`` does; config files are loaded before their override flags
are defined), or a command before it parses its flags. It changes the parsing of every tuple
field for the rest of the process.
"""

from __future__ import annotations

import ast

from ml_collections import config_flags
from ml_collections.config_flags import tuple_parser

_QUOTES_AND_BRACKETS = set("'\"()[]{}")


def comma_words(text: str) -> tuple[str, ...] | None:
  """``'a,b'`` → ``('a', 'b')`` for bare words that Python cannot read as a literal; ``None``
  for anything else (numbers, quoted or bracketed tuples), which keeps ml_collections' meaning."""
  if "," not in text or _QUOTES_AND_BRACKETS & set(text):
    return None
  try:
    ast.literal_eval(text)
    return None  # e.g. "32,64,128": a literal tuple already
  except (ValueError, SyntaxError):
    pass
  words = [w.strip() for w in text.split(",")]
  if words and not words[-1]:  # a trailing comma, as in a one-element tuple "a,"
    words.pop()
  if not words or not all(words):
    return None  # "a,,b": let ml_collections report it
  return tuple(words)


class CommaTupleParser(tuple_parser.TupleParser):
  """ml_collections' tuple parser, plus bare comma-separated words (see the module doc)."""

  def parse(self, argument):
    if isinstance(argument, str):
      words = comma_words(argument)
      if words is not None:
        return words
    return super().parse(argument)


def install() -> None:
  """Makes every tuple field of a config accept ``--config.FIELD=a,b,c`` (idempotent)."""
  config_flags.register_flag_parser_for_type(tuple, CommaTupleParser())
