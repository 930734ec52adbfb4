"""A small mixed corpus written straight into LanceDB, embedded with the offline profile's models.

No Ray: rows are made as the ingest job makes them (MiniLM ``text_vec`` and CLIP text-tower
``clip`` for text chunks, CLIP image-tower ``clip`` for pictures and PDF page renders) and
written with the store's schema. Documents come in pairs that share words but not meaning, so
neither BM25 nor the text encoder alone ranks every question's document first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from tests.media import encode, pattern

if TYPE_CHECKING:
    from mrag.config import MragConfig

#: file name → text (one chunk each). Pairs share vocabulary on purpose.
DOCUMENTS = {
    "bank-river.txt": "The river bank was lined with willows where herons waited for fish.",
    "bank-money.txt": "The bank raised its savings rate, so deposits earn more interest.",
    "python-snake.txt": "The python is a large constrictor that swallows prey whole.",
    "python-code.txt": "Python code is indented with spaces and runs in an interpreter.",
    "apple-fruit.txt": "An apple a day: the crisp fruit is rich in fibre and vitamin C.",
    "apple-phone.txt": "Apple released a phone with a faster chip and a better camera.",
    "jaguar-cat.txt": "The jaguar is a big cat of the rainforest with a powerful bite.",
    "jaguar-car.txt": "Jaguar unveiled an electric car with a long driving range.",
    "mercury-planet.txt": "Mercury is the planet closest to the Sun and has no moons.",
    "mercury-metal.txt": "Mercury is a toxic metal that is liquid at room temperature.",
    "bread.txt": "Knead the dough, let the sourdough starter ferment overnight, then bake.",
    "volcano.txt": "Lava flows and ash clouds follow when magma erupts from a volcano.",
    "chess.txt": "Castling early keeps the king safe while the rooks connect.",
    "tides.txt": "The pull of the Moon raises ocean tides twice a day.",
    "vaccine.txt": "A vaccine trains the immune system to recognise a virus.",
    "bees.txt": "Honeybees pollinate crops and make honey from nectar.",
    "hinge.txt": "Part ZX9931 is the left hinge; order it from the spares catalogue.",
    "pump.txt": "Fault KQ4471 means the pump overheated and shut itself down.",
    "ticket.txt": "Ticket WV2208 about the login page was closed after the patch.",
    "catalogue.txt": "The spares catalogue lists every hinge, pump and door seal by part.",
}
#: PDF pages: file, page → text layer (one text chunk and one page render each).
PDF_PAGES = {
    ("guide.pdf", 1): "Chapter one introduces the telescope and how lenses gather light.",
    ("guide.pdf", 2): "Saturn's rings are made of countless pieces of ice and rock.",
    ("guide.pdf", 3): "A comet's tail always points away from the Sun because of solar wind.",
}
#: picture file → pattern seed.
PICTURES = {"sunset.png": 41, "forest.jpg": 42, "harbour.png": 43}

#: id → (text question, relevant file). Paraphrases and ambiguous keywords both.
TEXT_QUERIES = {
    "t1": ("where do herons wait by the water", "bank-river.txt"),
    "t2": ("interest on savings deposits", "bank-money.txt"),
    "t3": ("a snake that squeezes its prey", "python-snake.txt"),
    "t4": ("programming language indentation", "python-code.txt"),
    "t5": ("healthy fruit with vitamins", "apple-fruit.txt"),
    "t6": ("new smartphone camera", "apple-phone.txt"),
    "t7": ("wild cat in the jungle", "jaguar-cat.txt"),
    "t8": ("battery powered vehicle", "jaguar-car.txt"),
    "t9": ("the innermost planet of the solar system", "mercury-planet.txt"),
    "t10": ("poisonous liquid metal", "mercury-metal.txt"),
    "t11": ("how to make a loaf with a fermented starter", "bread.txt"),
    "t12": ("molten rock erupting", "volcano.txt"),
    "t13": ("protect the king in the opening", "chess.txt"),
    "t14": ("why does the sea rise and fall", "tides.txt"),
    "t15": ("how immunisation works", "vaccine.txt"),
    "t16": ("insects that make honey", "bees.txt"),
    "t17": ("what are Saturn's rings made of", "guide.pdf"),
    "t18": ("why a comet tail points away from the Sun", "guide.pdf"),
    "t19": ("ZX9931", "hinge.txt"),
    "t20": ("what does KQ4471 mean", "pump.txt"),
    "t21": ("WV2208", "ticket.txt"),
}


def write_corpus(config: MragConfig, root) -> dict[str, bytes]:
    """Writes the corpus into ``config.db_uri`` (with FTS and scalar indices); returns the
    pictures' bytes by file name (they are also written under ``root``)."""
    from mrag.models import get_model_spec
    from mrag.query import _query_models, decode_query_image
    from mrag.store import schema
    from mrag.store.lance import Store

    encoders = _query_models(config)
    clip, text = encoders["clip"].embedder, encoders["text_vec"].embedder
    clip_dim = get_model_spec(config.clip_model).embed_dim
    text_dim = get_model_spec(config.text_model).embed_dim
    store = Store(config.db_uri)
    store.ensure_tables({"clip": clip_dim, "text_vec": text_dim})
    rows = []
    texts = [*DOCUMENTS.values(), *PDF_PAGES.values()]
    text_vecs, clip_vecs = text.embed_texts(texts), clip.embed_texts(texts)
    located = [(name, None) for name in DOCUMENTS] + list(PDF_PAGES)
    for i, ((name, page), body) in enumerate(zip(located, texts, strict=True)):
        rows.append({
            "chunk_id": f"{name}#{page or 0}", "asset_id": name, "uri": f"{root}/{name}",
            "modality": "text", "page": page, "char_start": 0, "char_end": len(body),
            "text": body, "clip": clip_vecs[i].tolist(), "clip_model": config.clip_model,
            "text_vec": text_vecs[i].tolist(), "text_model": config.text_model,
        })  # fmt: skip
    pictures = {}
    visuals = [(f"{name}", None, seed) for name, seed in PICTURES.items()]
    visuals += [(name, page, 50 + page) for name, page in PDF_PAGES]
    for name, page, seed in visuals:
        data = encode(pattern(seed), "JPEG" if name.endswith(".jpg") else "PNG")
        if page is None:
            pictures[name] = data
            (root / name).write_bytes(data)
        vector = clip.embed_images(decode_query_image(data, config))[0]
        rows.append({
            "chunk_id": f"{name}#page{page or 0}", "asset_id": name, "uri": f"{root}/{name}",
            "modality": "image" if page is None else "pdf_page", "page": page,
            "clip": vector.tolist(), "clip_model": config.clip_model,
        })  # fmt: skip
    chunks = store.open(schema.CHUNKS)
    table = pa.Table.from_pylist(rows, schema=chunks.schema)
    chunks.add(table)
    chunks.create_fts_index("text", replace=True, with_position=True)
    for column in ("modality", "uri"):
        chunks.create_scalar_index(column, index_type="BITMAP" if column == "modality" else "BTREE")
    return pictures
