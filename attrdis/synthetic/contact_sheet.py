"""A labelled contact sheet of what ``synthetic_faces`` holds.

    python -m attrdis.synthetic.contact_sheet --out=sheet.png [--image_size=64]

Panels: expression x intensity; identities x expressions; identities x illumination;
gaze and colour cast.  The identities are the default config's first training identities.
``--help`` lists the flags; an error is one ``error: ...`` line (status 1, e.g. a file that
cannot be written; 2 for a bad command line).
"""

from __future__ import annotations

from typing import Sequence

from absl import flags
from PIL import Image, ImageDraw, ImageFont

from attrdis import cli
from attrdis import errors
from attrdis.synthetic import design as design_lib
from attrdis.synthetic import render as render_lib
from attrdis.synthetic.factors import COLORS, EXPRESSIONS, GAZES, ILLUMINATIONS, Factors

FLAGS = flags.FlagValues()
flags.DEFINE_string("out", None, "The PNG file to write.", flag_values=FLAGS)
flags.DEFINE_integer(
  "image_size",
  64,
  "Side of each face.",
  lower_bound=render_lib.MIN_SIZE,
  upper_bound=render_lib.MAX_SIZE,
  flag_values=FLAGS,
)
flags.DEFINE_integer(
  "zoom",
  None,
  "Pixel repetition of each face (default: up to 64 px).",
  lower_bound=1,
  flag_values=FLAGS,
)
flags.mark_flags_as_required(["out"], flag_values=FLAGS)

_BG = (255, 255, 255)
_INK = (20, 20, 20)
_PAD = 4


def _panel(
  title: str,
  row_labels: Sequence[str],
  col_labels: Sequence[str],
  factors: Sequence[Sequence[Factors]],
  image_size: int,
  zoom: int,
  font,
) -> Image.Image:
  rows, cols = len(factors), len(factors[0])
  images = render_lib.render_batch([f for row in factors for f in row], image_size)
  cell = image_size * zoom
  label_w = max(int(font.getlength(t)) for t in row_labels) + 2 * _PAD
  col_w = max(cell, max(int(font.getlength(t)) for t in col_labels) + _PAD)
  line_h = int(font.getbbox("Ag")[3]) + 2
  title_h = line_h + _PAD
  head_h = line_h + _PAD
  width = label_w + cols * (col_w + _PAD) + _PAD
  height = title_h + head_h + rows * (cell + _PAD) + _PAD
  sheet = Image.new("RGB", (width, height), _BG)
  draw = ImageDraw.Draw(sheet)
  draw.text((_PAD, _PAD // 2), title, fill=_INK, font=font)
  for j, text in enumerate(col_labels):
    x = label_w + j * (col_w + _PAD) + (col_w - font.getlength(text)) / 2
    draw.text((x, title_h), text, fill=_INK, font=font)
  for i, text in enumerate(row_labels):
    y = title_h + head_h + i * (cell + _PAD) + (cell - line_h) / 2
    draw.text((_PAD, y), text, fill=_INK, font=font)
    for j in range(cols):
      img = Image.fromarray(images[i * cols + j])
      if zoom > 1:
        img = img.resize((cell, cell), Image.Resampling.NEAREST)
      sheet.paste(
        img,
        (label_w + j * (col_w + _PAD) + (col_w - cell) // 2, title_h + head_h + i * (cell + _PAD)),
      )
  return sheet


def contact_sheet(image_size: int = 64, zoom: int | None = None) -> Image.Image:
  """The contact sheet as a PIL image."""
  if zoom is None:
    zoom = max(1, 64 // image_size)
  _, design = design_lib.CONFIGS[design_lib.DEFAULT_CONFIG]
  ids = [design.identity(i) for i in range(8)]
  names = [design_lib.identity_name(i) for i in range(8)]
  font = ImageFont.load_default()
  intensities = (0.0, 0.25, 0.5, 0.75, 1.0)
  panels = [
    _panel(
      f"expression x intensity ({names[0]}, front light)",
      EXPRESSIONS[1:],
      [f"{t:g}" for t in intensities],
      [[Factors(ids[0], e, t) for t in intensities] for e in range(1, len(EXPRESSIONS))],
      image_size,
      zoom,
      font,
    ),
    _panel(
      "identities x expression (intensity 1)",
      names,
      EXPRESSIONS,
      [[Factors(ident, e, 1.0) for e in range(len(EXPRESSIONS))] for ident in ids],
      image_size,
      zoom,
      font,
    ),
    _panel(
      "identities x illumination",
      names[:5],
      ILLUMINATIONS,
      [
        [Factors(ident, 1, 0.5, illumination=l) for l in range(len(ILLUMINATIONS))]
        for ident in ids[:5]
      ],
      image_size,
      zoom,
      font,
    ),
    _panel(
      "gaze (left, centre, right), colour cast",
      names[5:8],
      list(GAZES) + list(COLORS[1:]),
      [
        [Factors(ident, 0, gaze=g) for g in range(len(GAZES))]
        + [Factors(ident, 0, color=c) for c in range(1, len(COLORS))]
        for ident in ids[5:8]
      ],
      image_size,
      zoom,
      font,
    ),
  ]
  # Two columns: expression panels on the left, illumination / gaze / colour on the right.
  columns = [panels[:2], panels[2:]]
  widths = [max(p.width for p in c) for c in columns]
  heights = [sum(p.height for p in c) + 2 * _PAD * (len(c) - 1) for c in columns]
  sheet = Image.new("RGB", (sum(widths) + 4 * _PAD, max(heights)), _BG)
  x = 0
  for c, w in zip(columns, widths):
    y = 0
    for p in c:
      sheet.paste(p, (x, y))
      y += p.height + 2 * _PAD
    x += w + 4 * _PAD
  return sheet


def main(argv: Sequence[str]) -> None:
  del argv  # no positional arguments (cli.run refuses them)
  if not FLAGS.out.lower().endswith(".png"):
    raise errors.CommandLineError(f"--out={FLAGS.out}: give a .png file name")
  sheet = contact_sheet(FLAGS.image_size, FLAGS.zoom)
  sheet.save(FLAGS.out)
  print(f"wrote {FLAGS.out} ({sheet.width}x{sheet.height})")


if __name__ == "__main__":
  cli.run(main, FLAGS)
