"""Known-item queries for the PostgreSQL 15 manual, built from the book's own index.

The manual (Debian package ``postgresql-doc-15``: 1,168 HTML pages of dense reference — SQL
commands, functions, configuration parameters, client programs — and the chapters around them,
under ``/usr/share/doc/postgresql-doc-15/html``) ships its back-of-book index as
``bookindex.html``. Each index entry (primary term, and secondary term when it has one) becomes
a query, judged relevant on every page it links to. ``bookindex.html`` itself is left out of
the corpus (see bench/README.md).

    python bench/postgresql/build_queries.py

Rules (no query is picked by hand): whitespace is collapsed; entries without a link ("see
...") are skipped; entries with the same text are merged; entries pointing at more than
``--max-pages`` pages are dropped (too broad to be a known item); then ``--n`` entries are
drawn with a fixed seed. Writes ``queries.jsonl`` and ``qrels.tsv`` beside this script.
"""

from __future__ import annotations

import argparse
import json
import random
from html.parser import HTMLParser
from pathlib import Path

HERE = Path(__file__).parent
INDEX = Path("/usr/share/doc/postgresql-doc-15/html/bookindex.html")


class BookIndex(HTMLParser):
    """DocBook's index page: ``<dt>term, <a href=page#anchor>...</a></dt>``, a term's
    secondary entries in the ``<dl>`` of the ``<dd>`` that follows it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.entries: dict[str, set[str]] = {}
        self._terms: list[str] = []  # the primary term while inside its <dd>
        self._depth = 0  # <dl> nesting: 1 primary, 2 secondary
        self._text: list[str] | None = None  # the <dt> being read, up to its first link
        self._pages: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "dl":
            self._depth += 1
        elif tag == "dt":
            self._text, self._pages = [], set()
        elif tag == "a" and self._text is not None:
            href = dict(attrs).get("href") or ""
            if href and not href.startswith(("#", "http")):
                self._pages.add(href.split("#")[0])

    def handle_endtag(self, tag: str) -> None:
        if tag == "dl":
            self._depth -= 1
            del self._terms[self._depth :]
        elif tag == "dt" and self._text is not None:
            term = " ".join("".join(self._text).split()).rstrip(", ")
            del self._terms[self._depth - 1 :]
            self._terms.append(term)
            if self._pages:
                words = " ".join(self._terms)
                self.entries.setdefault(words, set()).update(self._pages)
            self._text = None

    def handle_data(self, data: str) -> None:
        # The term is the text before the first link of its <dt>.
        if self._text is not None and not self._pages:
            self._text.append(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", type=Path, default=INDEX)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--max-pages", type=int, default=3)
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args()

    book = BookIndex()
    book.feed(args.index.read_text())
    usable = sorted(
        (words, pages)
        for words, pages in book.entries.items()
        if len(pages) <= args.max_pages and sum(c.isalnum() for c in words) >= 2
    )
    chosen = sorted(random.Random(args.seed).sample(usable, min(args.n, len(usable))))
    with (HERE / "queries.jsonl").open("w") as queries, (HERE / "qrels.tsv").open("w") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for number, (words, pages) in enumerate(chosen, 1):
            qid = f"p{number:03d}"
            queries.write(json.dumps({"_id": qid, "text": words}) + "\n")
            qrels.writelines(f"{qid}\t{page}\t1\n" for page in sorted(pages))
    print(f"{len(book.entries)} index entries, {len(usable)} usable, {len(chosen)} written")


if __name__ == "__main__":
    main()
