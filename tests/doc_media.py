"""Test documents generated on the fly: text files, HTML, Markdown and PDFs (nothing committed).

``text_pdf`` writes a minimal, valid PDF by hand (Helvetica text, correct xref table), so tests
get a real text layer with no extra dependency; ``scanned_pdf`` has pixels and no text layer.
"""

from __future__ import annotations

import hashlib
import io
import textwrap
import zlib

from PIL import Image, ImageDraw, ImageFont

DEJAVU_BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"  # fonts-dejavu-core
# The standard security handler's password padding (PDF 32000-1, 7.6.3.3, Algorithm 2).
_PASSWORD_PAD = bytes.fromhex("28bf4e5e4e758a4164004e56fffa01082e2e00b6d0683e802f0ca9fe6453697a")
_FILE_ID = bytes.fromhex("00112233445566778899aabbccddeeff")


def _escape(text: str) -> bytes:
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return escaped.encode("cp1252")  # the font's /WinAnsiEncoding


def _rc4(key: bytes, data: bytes) -> bytes:
    state, j = list(range(256)), 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    out, i, j = bytearray(), 0, 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(byte ^ state[(state[i] + state[j]) % 256])
    return bytes(out)


class _Rc4Security:
    """The standard security handler, revision 2 (40-bit RC4): the simplest real encryption
    every PDF reader supports. An empty user password is "permissions only": readers open the
    file without asking, as they do for the many PDFs that carry only an owner password."""

    def __init__(self, user_password: str, owner_password: str, permissions: int = -4) -> None:
        user = (user_password.encode("latin-1") + _PASSWORD_PAD)[:32]
        owner = (owner_password.encode("latin-1") + _PASSWORD_PAD)[:32]
        self.owner_entry = _rc4(hashlib.md5(owner).digest()[:5], user)
        self.permissions = permissions
        p_bytes = permissions.to_bytes(4, "little", signed=True)
        self.key = hashlib.md5(user + self.owner_entry + p_bytes + _FILE_ID).digest()[:5]
        self.user_entry = _rc4(self.key, _PASSWORD_PAD)

    def encrypt(self, number: int, data: bytes) -> bytes:
        salt = number.to_bytes(3, "little") + b"\x00\x00"  # generation 0
        return _rc4(hashlib.md5(self.key + salt).digest()[:10], data)

    def dictionary(self) -> bytes:
        return b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>" % (
            self.owner_entry.hex().encode(),
            self.user_entry.hex().encode(),
            self.permissions,
        )


def text_pdf(
    pages: list[str | Image.Image],
    *,
    media_box: tuple[int, int] = (612, 792),
    rotate: int = 0,
    user_password: str | None = None,
    owner_password: str | None = None,
) -> bytes:
    """A minimal, valid PDF written by hand (correct xref table): one page per item.

    A string becomes a text layer (12 pt Helvetica, WinAnsi so accents work, wrapped at ~90
    characters); an image becomes a page that is only pixels, i.e. a scan. With a password the
    file is really encrypted (RC4, revision 2); ``owner_password`` alone means readers open it
    without asking.
    """
    security = None
    if user_password is not None or owner_password is not None:
        security = _Rc4Security(user_password or "", owner_password or user_password or "")
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    def add_stream(header: bytes, data: bytes) -> int:
        number = len(objects) + 1
        if security is not None:
            data = security.encrypt(number, data)
        return add(b"<< %s /Length %d >>\nstream\n" % (header, len(data)) + data + b"\nendstream")

    catalog = add(b"")  # filled in below, once the page tree's number is known
    pages_obj = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    width, height = media_box
    kids = []
    for item in pages:
        if isinstance(item, Image.Image):
            gray = item.convert("L")
            pixels = add_stream(
                b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
                b"/BitsPerComponent 8 /Filter /FlateDecode" % gray.size,
                zlib.compress(gray.tobytes()),
            )
            content = add_stream(b"", b"q %d 0 0 %d 0 0 cm /Im1 Do Q" % (width, height))
            resources = b"/XObject << /Im1 %d 0 R >>" % pixels
        else:
            lines = [ln for para in item.split("\n") for ln in (textwrap.wrap(para, 90) or [""])]
            ops = [b"BT", b"/F1 12 Tf", b"14 TL", b"50 %d Td" % (height - 60)]
            ops += [b"(" + _escape(line) + b") Tj T*" for line in lines]
            ops.append(b"ET")
            content = add_stream(b"", b"\n".join(ops))
            resources = b"/Font << /F1 %d 0 R >>" % font
        kids.append(add(
            b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %d %d] /Rotate %d /Contents %d 0 R "
            b"/Resources << %s >> >>" % (pages_obj, width, height, rotate, content, resources)
        ))  # fmt: skip
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_obj
    objects[pages_obj - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        len(kids),
    )
    trailer_extra = b""
    if security is not None:  # the /Encrypt dictionary itself is never encrypted
        encrypt = add(security.dictionary())
        file_id = _FILE_ID.hex().encode()
        trailer_extra = b" /Encrypt %d 0 R /ID [<%s> <%s>]" % (encrypt, file_id, file_id)
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
    out.write(b"trailer\n<< /Size %d /Root %d 0 R" % (len(objects) + 1, catalog) + trailer_extra)
    out.write(b" >>\nstartxref\n%d\n%%%%EOF\n" % xref)
    return out.getvalue()


def scan_image(lines: list[str], *, font_px: int = 64, size_px: tuple[int, int] = (1240, 1754)):
    """A white page (A4 at 150 dpi by default) with black text lines: what a scanner makes."""
    page = Image.new("RGB", size_px, "white")
    draw = ImageDraw.Draw(page)
    try:
        font = ImageFont.truetype(DEJAVU_BOLD, font_px)
    except OSError as exc:  # .ci/setup installs fonts-dejavu-core
        raise RuntimeError(f"test needs {DEJAVU_BOLD}: apt-get install fonts-dejavu-core") from exc
    for i, line in enumerate(lines):
        draw.text((100, 150 + int(i * font_px * 1.7)), line, fill="black", font=font)
    return page


def scanned_pdf(lines: list[str], *, font_px: int = 64) -> bytes:
    """A page that is only pixels (a scan with no text layer, for OCR), saved by Pillow."""
    out = io.BytesIO()
    scan_image(lines, font_px=font_px).save(out, format="PDF", resolution=150)
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
        "docs/locked.pdf": (text_pdf(["secret"], user_password="hunter2"), "EncryptedPDF"),
    }
    return good, {**{k: v for k, v in bad.items()}}
