"""CLAP embedder: audio segments and text queries in one L2-normalised space (transformers' CLAP).

An ``audio_segment`` row carries its sound in the ``audio`` column (float32 mono samples at
16 kHz, present when a ``needs_audio`` space is in the job). The samples are resampled to the
feature extractor's rate (48 kHz for LAION's checkpoints) with ``scipy.signal.resample_poly``
(a polyphase anti-aliasing FIR: exact integer ratios, no spectral wrap-around; scipy comes with
sentence-transformers), cut into equal windows of at most the extractor's ``max_length_s``
(10 s for LAION's), and each row gets the normalised mean of its windows' vectors: the whole
segment, not the random 10 s crop the feature extractor takes of a longer input, so the same
audio always gives the same vector. Text queries go through the text tower.

Specs are data in :mod:`mrag.models` (family ``hf_clap``): hub or local checkpoints load with
``ClapModel.from_pretrained``; a random-init spec's ``model_cfg`` holds the ``ClapConfig``
arguments (``config``) and the spec whose tokenizer files it borrows (``tokenizer_from``).
"""

from __future__ import annotations

import logging
from math import ceil, gcd
from typing import TYPE_CHECKING, Any

import numpy as np

from mrag.embed.clip import torch_dtype
from mrag.errors import ConfigError
from mrag.models import ModelSpec, random_init_parts, resolve_weights, weights_id

if TYPE_CHECKING:
    import pyarrow as pa

    from mrag.embed import EmbedOptions
    from mrag.models import ResolvedWeights

log = logging.getLogger(__name__)

#: Rate of the ``audio`` column's samples (the decoders' resampling rate, mrag.decode.media).
ROW_SAMPLE_RATE_HZ = 16_000


class ClapSpaceEmbedder:
    """The ``audio_vec`` space (:class:`mrag.embed.SpaceEmbedder`): audio rows through the
    audio tower, text queries through the text tower. Rows without samples get no vector.

    Raises:
        WeightsNotFoundError: the spec's weights are nowhere to be found.
        ConfigError: the model's projection is not ``spec.embed_dim`` wide, or a random-init
            spec's ``model_cfg`` lacks ``config`` or ``tokenizer_from``.
    """

    def __init__(self, spec: ModelSpec, options: EmbedOptions) -> None:
        import torch

        if options.num_threads > 0:
            torch.set_num_threads(options.num_threads)
        self.spec = spec
        self.embed_dim = spec.embed_dim
        self.batch_size = options.batch_size
        self.device = torch.device(options.device)
        self.dtype = torch_dtype(options.dtype, options.device)
        resolved = resolve_weights(spec, options.weights)
        model, self.feature_extractor, self.tokenizer = _load(spec, resolved, options.seed)
        self.model = model.eval().to(device=self.device, dtype=self.dtype)
        self.weights_id = weights_id(spec, options.weights, seed=options.seed)
        if model.config.projection_dim != spec.embed_dim:
            raise ConfigError(
                f"CLAP model {spec.name}: the checkpoint gives {model.config.projection_dim}-d "
                f"vectors, the spec says embed_dim={spec.embed_dim}"
            )
        # What the audio tower takes: a fused model 4 stacked mels, an unfused one a single one.
        self.truncation = "fusion" if model.config.audio_config.enable_fusion else "rand_trunc"
        self.sample_rate_hz = self.feature_extractor.sampling_rate
        self.window_samples = self.feature_extractor.nb_max_samples
        text_config = model.config.text_config
        self.max_tokens = min(
            self.tokenizer.model_max_length, text_config.max_position_embeddings - 2
        )

    def embed_rows(self, rows: pa.Table, candidates: list[int]) -> tuple[list[int], np.ndarray]:
        if "audio" not in rows.column_names:
            return [], np.zeros((0, self.embed_dim), dtype=np.float32)
        audio = rows["audio"].to_pylist()
        todo = [i for i in candidates if audio[i]]
        windows: list[np.ndarray] = []
        owner: list[int] = []
        for n, i in enumerate(todo):
            samples = self._resample(np.frombuffer(audio[i], dtype="<f4"))
            pieces = np.array_split(samples, ceil(len(samples) / self.window_samples))
            windows += pieces
            owner += [n] * len(pieces)
        per_window = self.embed_audio(windows)
        pooled = np.zeros((len(todo), self.embed_dim), dtype=np.float32)
        np.add.at(pooled, np.asarray(owner, dtype=np.int64), per_window)
        return todo, pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def embed_audio(self, windows: list[np.ndarray]) -> np.ndarray:
        """Mono windows at the feature extractor's rate, each at most ``window_samples`` long
        (shorter ones are repeat-padded by the extractor) → (N, D) float32 unit vectors."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(windows), self.batch_size):
                batch = windows[start : start + self.batch_size]
                features = self.feature_extractor(
                    batch,
                    sampling_rate=self.sample_rate_hz,
                    truncation=self.truncation,
                    return_tensors="pt",
                )["input_features"]
                # No window exceeds the extractor's max length; the extractor's own flag marks
                # a random one "longer" when none is (a training trick), so it is not passed.
                is_longer = torch.zeros((len(batch), 1), dtype=torch.bool, device=self.device)
                vectors = self.model.get_audio_features(
                    input_features=features.to(self.device, self.dtype), is_longer=is_longer
                ).pooler_output
                out.append(vectors.float().cpu().numpy())
        return _unit_rows(out, self.embed_dim)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                tokens = self.tokenizer(
                    list(texts[start : start + self.batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=self.max_tokens,
                    return_tensors="pt",
                ).to(self.device)
                vectors = self.model.get_text_features(
                    input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
                ).pooler_output
                out.append(vectors.float().cpu().numpy())
        return _unit_rows(out, self.embed_dim)

    def _resample(self, samples: np.ndarray) -> np.ndarray:
        if self.sample_rate_hz == ROW_SAMPLE_RATE_HZ:
            return samples.astype(np.float32)
        from scipy.signal import resample_poly

        common = gcd(self.sample_rate_hz, ROW_SAMPLE_RATE_HZ)
        up, down = self.sample_rate_hz // common, ROW_SAMPLE_RATE_HZ // common
        return resample_poly(samples, up, down).astype(np.float32)


def _load(spec: ModelSpec, resolved: ResolvedWeights, seed: int) -> tuple[Any, Any, Any]:
    """(model, feature extractor, tokenizer): from a checkpoint folder, or built from the
    random-init spec's ``model_cfg`` with ``seed``."""
    import torch
    from transformers import AutoTokenizer, ClapConfig, ClapFeatureExtractor, ClapModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a "Loading weights" bar per model load
    if resolved.path is None:
        model_config, tokenizer_path = random_init_parts(spec, "ClapConfig")
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path), local_files_only=True)
        torch.manual_seed(seed)
        model = ClapModel(ClapConfig(**model_config))
        log.warning("CLAP model %s uses random weights (seed %d)", spec.name, seed)
        # LAION's extractor settings: 48 kHz, 64 mel bins, 10 s windows.
        return model, ClapFeatureExtractor(), tokenizer
    if not resolved.path.is_dir():
        raise ConfigError(
            f"CLAP weights must be a transformers checkpoint folder (config.json, tokenizer and "
            f"preprocessor files, weights), got the file {resolved.path}"
        )
    path = str(resolved.path)
    model = ClapModel.from_pretrained(path, local_files_only=True)
    feature_extractor = ClapFeatureExtractor.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    log.info("CLAP model %s loaded from %s (%s)", spec.name, path, resolved.source)
    return model, feature_extractor, tokenizer


def _unit_rows(parts: list[np.ndarray], dim: int) -> np.ndarray:
    """Batches → one (N, D) array, renormalised (fp16/bf16 towers drift off unit length)."""
    if not parts:
        return np.zeros((0, dim), dtype=np.float32)
    vectors = np.concatenate(parts)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
