"""Known-item queries for The Debian Administrator's Handbook, built from the book's own index.

The handbook (Debian package ``debian-handbook``, long prose: 127 HTML pages under
``/usr/share/doc/debian-handbook/html/en-US``) has a back-of-book index in its DocBook source
(``<indexterm>`` elements); the HTML keeps only the anchors. Each index entry (primary term, and
secondary term when it has one) becomes a query, judged relevant on every HTML page it points
to: the page that holds the nearest enclosing element with an ``id`` (section, chapter...).

    git clone https://salsa.debian.org/hertzog/debian-handbook.git   # the DocBook source
    python bench/debian-handbook/build_queries.py --source debian-handbook/en-US

Rules (no query is picked by hand): markup is dropped and whitespace collapsed; ``see``
entries (no location) are skipped; entries with the same text are merged; an entry whose
nearest id is missing from the installed HTML (the book changed) is dropped; entries pointing
at more than ``--max-pages`` pages are dropped (too broad to be a known item); then
``--n`` entries are drawn with a fixed seed. Writes ``queries.jsonl`` and ``qrels.tsv``
beside this script.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).parent
HTML = Path("/usr/share/doc/debian-handbook/html/en-US")


def text_of(element: ET.Element | None) -> str:
    return " ".join("".join(element.itertext()).split()) if element is not None else ""


def html_ids(html: Path) -> dict[str, str]:
    """Element id → the HTML file holding it (ids are unique across the book's pages)."""
    where: dict[str, str] = {}
    for page in sorted(html.glob("*.html")):
        for found in re.finditer(r'\sid="([^"]+)"', page.read_text(errors="replace")):
            where.setdefault(found.group(1), page.name)
    return where


def index_entries(source: Path, where: dict[str, str]) -> tuple[dict[str, set[str]], int]:
    """Index entry text → the pages it points to; and how many entries were dropped."""
    entries: dict[str, set[str]] = {}
    stale = 0
    for chapter in sorted(source.glob("*.xml")):
        root = ET.parse(chapter).getroot()
        parent = {child: node for node in root.iter() for child in node}
        for term in root.iter("indexterm"):
            if term.find("see") is not None or term.find("primary") is None:
                continue
            words = " ".join(
                t for t in (text_of(term.find("primary")), text_of(term.find("secondary"))) if t
            )
            node = parent.get(term)
            while node is not None and not node.get("id"):
                node = parent.get(node)
            page = where.get(node.get("id")) if node is not None else None
            if page is None:
                stale += 1
                continue
            entries.setdefault(words, set()).add(page)
    return entries, stale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="the DocBook en-US folder")
    parser.add_argument("--html", type=Path, default=HTML)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--max-pages", type=int, default=3)
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args()

    entries, stale = index_entries(args.source, html_ids(args.html))
    usable = sorted(
        (words, pages)
        for words, pages in entries.items()
        if len(pages) <= args.max_pages and sum(c.isalnum() for c in words) >= 2
    )
    chosen = sorted(random.Random(args.seed).sample(usable, min(args.n, len(usable))))
    with (HERE / "queries.jsonl").open("w") as queries, (HERE / "qrels.tsv").open("w") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for number, (words, pages) in enumerate(chosen, 1):
            qid = f"h{number:03d}"
            queries.write(json.dumps({"_id": qid, "text": words}) + "\n")
            qrels.writelines(f"{qid}\t{page}\t1\n" for page in sorted(pages))
    print(
        f"{len(entries)} index entries ({stale} locations not in the HTML), "
        f"{len(usable)} usable, {len(chosen)} written"
    )


if __name__ == "__main__":
    main()
