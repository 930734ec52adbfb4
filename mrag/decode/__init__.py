"""Decoders: one per object kind (:mod:`mrag.kinds`), each a generator of chunk rows.

A decoder takes an open, seekable binary stream of one object and a :class:`DecodeContext`
(limits, the CLIP model's preprocessing, the text tokenizer, the speech recogniser) and yields
chunk rows as it goes: dicts with a ``locator`` (unique within the object; the chunk id is
derived from it), a ``modality`` and the chunk fields of
:func:`mrag.decode.stage.chunk_rows_schema`. A decoder that stops early raises
:class:`~mrag.errors.DecodeError`: rows it yielded before are kept and the object is
``partial``; with none, it failed.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from mrag.config import IngestConfig
    from mrag.decode.speech import Transcriber
    from mrag.models import ImagePreprocess, ModelSpec


@dataclass(frozen=True)
class SpeechSettings:
    """The recogniser a job's decode tasks use (built once per worker process)."""

    spec: ModelSpec
    weights: str = ""
    device: str = "cpu"
    threads: int = 1
    batch_size: int = 0  # pieces of speech per forward pass (GPU); 0: one after another


@dataclass(frozen=True)
class DecodeContext:
    """What every decoder may need; small and picklable (models are built where they run).

    Attributes:
        ingest: limits, chunking and media settings.
        preprocess: the CLIP model's resize/crop for pixels.
        text_spec: the text encoder whose tokenizer measures chunk length (``None``: a regex
            approximation).
        text_weights: the job's weights override of the text encoder, for its tokenizer.
        speech: the speech recogniser, for kinds with speech (``None``: no transcripts).
        keep_audio: audio rows carry their samples (a space of the job embeds sound).
    """

    ingest: IngestConfig
    preprocess: ImagePreprocess
    text_spec: ModelSpec | None = None
    text_weights: str = ""
    speech: SpeechSettings | None = field(default=None)
    keep_audio: bool = False

    @property
    def count_tokens(self) -> Callable[[str], int] | None:
        return token_counter(self.text_spec, self.text_weights)

    def transcriber(self) -> Transcriber | None:
        return None if self.speech is None else _transcriber(self.speech)


class Decoder(Protocol):
    def __call__(self, source: BinaryIO, context: DecodeContext) -> Iterator[dict[str, Any]]: ...


@functools.cache
def load_decoder(path: str) -> Decoder:
    """``module:function`` (``ObjectKind.decoder``) → the decoder."""
    module_name, _, name = path.partition(":")
    return getattr(importlib.import_module(module_name), name)


@functools.cache
def _transcriber(settings: SpeechSettings) -> Transcriber:
    """One recogniser per process: decode workers are reused across tasks, so it loads once."""
    from mrag.decode.speech import create_transcriber

    return create_transcriber(
        settings.spec,
        weights=settings.weights,
        device=settings.device,
        threads=settings.threads,
        batch_size=settings.batch_size,
    )


@functools.cache
def token_counter(spec: ModelSpec | None, weights: str = "") -> Callable[[str], int] | None:
    """The text model's own tokenizer, so chunk windows match what the encoder sees.

    ``weights`` is the job's ``text_weights`` override, resolved exactly as the embed actor
    resolves it: a spec without weights of its own (a hub id, offline) works when the user
    supplies them. Loads ``tokenizer.json`` with the ``tokenizers`` library when the weights
    have one (the same fast tokenizer transformers wraps, without importing transformers and
    torch into every decode worker: ~2 s of CPU per worker on a small node); else transformers'
    AutoTokenizer.
    """
    if spec is None:
        return None
    from mrag.models import resolve_weights

    resolved = resolve_weights(spec, weights)
    tokenizer_file = resolved.path / "tokenizer.json" if resolved.path else None
    if tokenizer_file is not None and tokenizer_file.is_file():
        from tokenizers import Tokenizer

        fast = Tokenizer.from_file(str(tokenizer_file))
        fast.no_truncation()  # a window is measured whole, not cut at the encoder's limit
        fast.no_padding()
        return lambda text: len(fast.encode(text, add_special_tokens=False).ids)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(resolved.path), local_files_only=True)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
