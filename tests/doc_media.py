"""Test documents generated on the fly: text files, HTML, Markdown and PDFs (nothing committed).

``text_pdf`` writes a minimal, valid PDF by hand (Helvetica text, correct xref table), so tests
get a real text layer with no extra dependency; ``scanned_pdf`` has pixels and no text layer.
"""

from __future__ import annotations

import io
import textwrap

from PIL import Image, ImageDraw, ImageFont


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def text_pdf(
    pages: list[str],
    *,
    media_box: tuple[int, int] = (612, 792),
    encrypted: bool = False,
) -> bytes:
    """One page per string; lines wrap at ~90 characters, 12 pt Helvetica."""
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled below, once the page tree's number is known
    pages_obj = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    kids = []
    for text in pages:
        lines = [ln for para in text.split("\n") for ln in (textwrap.wrap(para, 90) or [""])]
        ops = ["BT", "/F1 12 Tf", "14 TL", f"50 {media_box[1] - 60} Td"]
        ops += [f"({_escape(line)}) Tj T*" for line in lines]
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        content = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        kids.append(add(
            b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %d %d] /Contents %d 0 R "
            b"/Resources << /Font << /F1 %d 0 R >> >> >>"
            % (pages_obj, media_box[0], media_box[1], content, font)
        ))  # fmt: skip
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_obj
    objects[pages_obj - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        len(kids),
    )
    encrypt_ref = b""
    if encrypted:  # standard security handler, R2, with a user password we never reveal
        enc = add(b"<< /Filter /Standard /V 1 /R 2 /O <" + b"ab" * 32 + b"> /U <"
                  + b"cd" * 32 + b"> /P -4 >>")  # fmt: skip
        encrypt_ref = b" /Encrypt %d 0 R /ID [<00112233445566778899aabbccddeeff>"
        encrypt_ref = encrypt_ref % enc + b" <00112233445566778899aabbccddeeff>]"
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root %d 0 R" % (len(objects) + 1, catalog) + encrypt_ref)
    out.write(b" >>\nstartxref\n%d\n%%%%EOF\n" % xref)
    return out.getvalue()


def scanned_pdf(lines: list[str]) -> bytes:
    """A page that is only pixels (big, clear type): a scan with no text layer, for OCR."""
    page = Image.new("RGB", (1240, 1754), "white")
    draw = ImageDraw.Draw(page)
    try:
        font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", 64)
    except OSError as exc:  # .ci/setup installs fonts-dejavu-core
        raise RuntimeError("test needs fonts-dejavu-core (see .ci/setup)") from exc
    for i, line in enumerate(lines):
        draw.text((100, 150 + i * 110), line, fill="black", font=font)
    out = io.BytesIO()
    page.save(out, format="PDF", resolution=150)
    return out.getvalue()


BREAD = """Baking sourdough bread at home starts with a lively starter. Feed the starter with
flour and water the night before, and use it when it has doubled and smells pleasantly sour.

Mix the flour, water and starter into a shaggy dough and let it rest. Add salt, then fold the
dough every half hour while it rises. A long, slow fermentation gives the loaf its open crumb.

Shape the dough into a tight ball and proof it overnight in the refrigerator. Bake it in a very
hot covered pot so the crust blisters and the bread springs up in the oven."""

VOLCANO = """# Volcanoes

A volcano forms where molten rock from deep inside the earth escapes to the surface.

## Eruptions

When magma rises and pressure builds, gas-rich **lava** bursts out in an eruption. Ash clouds
can travel thousands of kilometres and ground flights. The ledger of the zephyrine quokka
expedition recorded one such eruption in detail.

## Living nearby

Volcanic soil is fertile, so farms often surround even active volcanoes."""

CHESS = """<html><head><title>Chess openings</title><style>p{margin:0}</style>
<script>var tracking = "ignore me";</script></head><body>
<h1>Opening principles</h1>
<p>In the opening of a chess game, control the centre with pawns, develop knights and bishops
early, and castle to keep the king safe.</p>
<p>Popular first moves include the king's pawn and the queen's pawn; the Sicilian Defence is a
sharp reply to the king's pawn.</p></body></html>"""

ASTRONOMY_PAGES = [
    "Telescopes. A refracting telescope gathers light with a lens, while a reflecting telescope "
    "uses a curved mirror. Larger apertures collect more light and reveal fainter objects.",
    "Planetary rings. The rings of Saturn are made mostly of water ice, with some rock and dust. "
    "The particles range from tiny grains to chunks as large as a house, orbiting in a thin disk.",
    "Comets. A comet is a ball of ice and dust that grows a glowing tail when it passes near the "
    "Sun. Its tail always points away from the Sun, pushed by the solar wind.",
]


def mixed_corpus() -> tuple[dict[str, bytes], dict[str, str]]:
    """Good and bad documents (path → bytes), and the bad ones' expected error classes."""
    good = {
        "docs/bread.txt": BREAD.encode(),
        "docs/volcano.md": VOLCANO.encode(),
        "docs/chess.HTML": CHESS.encode(),
        "docs/astronomy.pdf": text_pdf(ASTRONOMY_PAGES),
        "docs/scans/harvest.pdf": scanned_pdf(["QUARTERLY HARVEST", "REPORT"]),
    }
    bad = {
        "docs/junk.txt": (bytes(range(256)) * 16, "BinaryContent"),
        "docs/corrupt.pdf": (text_pdf(["x"])[:150], "CorruptPDF"),
        "docs/locked.pdf": (text_pdf(["secret"], encrypted=True), "EncryptedPDF"),
    }
    return good, {**{k: v for k, v in bad.items()}}
