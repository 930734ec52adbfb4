"""The audio-text space (CLAP): a seeded tiny random-init model built offline, its rows and
queries, the embed stage filling ``audio_vec``, and the offline profile that turns it on."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from mrag.config import IngestConfig, load_config
from mrag.embed import EmbedOptions, create_space_embedder
from mrag.embed.clap import ROW_SAMPLE_RATE_HZ, ClapSpaceEmbedder
from mrag.embed.stage import EmbedStage
from mrag.errors import WeightsNotFoundError
from mrag.models import get_model_spec

SPEC = get_model_spec("tiny-clap-random")
RATE = ROW_SAMPLE_RATE_HZ


def _tone(hz: float, seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _chirp(seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (0.4 * np.sin(2 * np.pi * (300 + 40 * t) * t)).astype(np.float32)


NOISE = (0.3 * np.random.default_rng(0).standard_normal(3 * RATE)).astype(np.float32)
TONE = _tone(440, 3)


def _rows(audio: list[np.ndarray | None]) -> pa.Table:
    """Chunk rows as the decode stage makes them: an image and a text row beside the audio."""
    n = len(audio)
    return pa.table(
        {
            "modality": ["audio_segment"] * n + ["text", "image"],
            "error_class": [""] * (n + 2),
            "text": ["speech"] * n + ["a recipe", None],
            "audio": [None if a is None else a.tobytes() for a in audio] + [None, None],
            "pixels": [b""] * (n + 1) + [bytes(64 * 64 * 3)],
        },
        schema=pa.schema(
            [
                ("modality", pa.string()),
                ("error_class", pa.string()),
                ("text", pa.string()),
                ("audio", pa.binary()),
                ("pixels", pa.binary()),
            ]
        ),
    )


@pytest.fixture(scope="module")
def embedder() -> ClapSpaceEmbedder:
    built = create_space_embedder("audio_vec", SPEC, EmbedOptions(num_threads=1))
    assert isinstance(built, ClapSpaceEmbedder)
    return built


def _unit(vectors: np.ndarray) -> None:
    assert vectors.dtype == np.float32 and vectors.shape[1] == SPEC.embed_dim
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_rows_with_samples_get_unit_vectors_and_the_rest_are_skipped(embedder) -> None:
    rows = _rows([TONE, np.zeros(0, np.float32), None, NOISE])
    done, vectors = embedder.embed_rows(rows, [0, 1, 2, 3])
    assert done == [0, 3] and vectors.shape == (2, SPEC.embed_dim)
    _unit(vectors)
    assert embedder.weights_id == "random-init seed:0"


def test_same_audio_same_vector_different_audio_different_vector(embedder) -> None:
    _, vectors = embedder.embed_rows(_rows([TONE, NOISE, TONE]), [0, 1, 2])
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-6)
    assert float(vectors[0] @ vectors[1]) < 0.9
    _, again = embedder.embed_rows(_rows([TONE]), [0])  # no random crop or flag in between
    np.testing.assert_allclose(again[0], vectors[0], atol=1e-6)


def test_a_segment_longer_than_a_window_is_embedded_whole(embedder) -> None:
    clip = _chirp(10)  # one 10 s window at 48 kHz
    _, vectors = embedder.embed_rows(_rows([clip, np.tile(clip, 2), _tone(440, 10)]), [0, 1, 2])
    _unit(vectors)
    # Two windows of the same sound pool to that sound's vector, not to a random crop of it.
    assert float(vectors[0] @ vectors[1]) > 0.9999
    assert float(vectors[0] @ vectors[2]) < 0.999


def test_resampling_to_48_khz_keeps_the_waveform(embedder) -> None:
    assert embedder.sample_rate_hz == 48_000
    resampled = embedder._resample(_tone(440, 1))
    assert resampled.dtype == np.float32 and len(resampled) == 48_000
    t = np.arange(48_000) / 48_000
    expected = 0.5 * np.sin(2 * np.pi * 440 * t)
    np.testing.assert_allclose(resampled[1000:-1000], expected[1000:-1000], atol=1e-3)


def test_text_queries_get_unit_vectors_in_batches(embedder) -> None:
    queries = ["a dog barking", "rain on a tin roof", "x"]
    vectors = embedder.embed_queries(queries)
    assert vectors.shape == (3, SPEC.embed_dim)
    _unit(vectors)
    assert not np.allclose(vectors[0], vectors[1])
    one_by_one = create_space_embedder("audio_vec", SPEC, EmbedOptions(batch_size=1))
    np.testing.assert_allclose(one_by_one.embed_queries(queries), vectors, atol=1e-5)


def test_embed_stage_fills_audio_vec_on_audio_rows_only() -> None:
    rows = _rows([TONE, None, NOISE])
    failed = rows.slice(0, 1).set_column(1, "error_class", pa.array(["DecodeError"]))
    out = EmbedStage({"audio_vec": (SPEC, "")}, IngestConfig(torch_threads=1))(
        pa.concat_tables([rows, failed])
    )
    # rows: tone, no samples, noise, text, image, a failed row with samples
    has_vector = [v is not None for v in out["audio_vec"].to_pylist()]
    assert has_vector == [True, False, True, False, False, False]
    assert out["audio_model"].to_pylist() == [SPEC.name, None, SPEC.name, None, None, None]
    weights = ["random-init seed:0", None, "random-init seed:0", None, None, None]
    assert out["audio_weights_id"].to_pylist() == weights
    assert len(out["audio_vec"].to_pylist()[0]) == SPEC.embed_dim
    assert "audio" not in out.column_names and "pixels" not in out.column_names


def test_a_hub_model_offline_fails_with_the_ways_to_provide_it() -> None:
    with pytest.raises(WeightsNotFoundError, match="laion/clap-htsat-unfused"):
        create_space_embedder(
            "audio_vec", get_model_spec("laion/clap-htsat-unfused"), EmbedOptions()
        )


def test_the_offline_profile_turns_the_space_and_its_list_on() -> None:
    config = load_config(profile="offline")
    assert "audio_vec" in config.active_spaces()
    assert config.space_model("audio_vec") == SPEC.name
    audio_text = config.retrieval.lists["audio_text"]
    assert (audio_text.query, audio_text.space) == ("text", "audio_vec")
    assert audio_text.modalities == ("audio_segment",)


def test_a_checkpoint_folder_loads_through_from_pretrained(embedder, tmp_path) -> None:
    """The path hub and local weights take: config, weights, preprocessor and tokenizer files
    of a folder (here the tiny model's own, saved), giving the same vectors."""
    folder = tmp_path / "clap"
    embedder.model.save_pretrained(folder)
    embedder.feature_extractor.save_pretrained(folder)
    embedder.tokenizer.save_pretrained(folder)
    loaded = create_space_embedder("audio_vec", SPEC, EmbedOptions(weights=str(folder)))
    assert loaded.weights_id.startswith(f"local:{folder.resolve()} sha256:")
    _, expected = embedder.embed_rows(_rows([TONE]), [0])
    np.testing.assert_allclose(loaded.embed_rows(_rows([TONE]), [0])[1], expected, atol=1e-5)
    np.testing.assert_allclose(
        loaded.embed_queries(["a dog barking"]),
        embedder.embed_queries(["a dog barking"]),
        atol=1e-5,
    )
