"""open_clip embedder: image and text towers into one L2-normalised space.

``ClipEmbedder`` is the in-process model (notebooks, the Serve query encoder, tests);
``ClipImageEmbedStage`` wraps it as a Ray Data ``map_batches`` callable class. Both take a
:class:`~mrag.models.ModelSpec` — a small descriptor — and build the model where they run.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from mrag.errors import ConfigError
from mrag.models import ModelSpec, resolve_weights, weights_id

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import pyarrow as pa
    import torch

    from mrag.embed import EmbedOptions

log = logging.getLogger(__name__)


def pick_device(num_gpus: float) -> str:
    """``cuda`` when the worker was given GPUs (and CUDA is there), else ``cpu``."""
    import torch

    if num_gpus > 0:
        if not torch.cuda.is_available():
            raise RuntimeError("num_gpus > 0 but CUDA is not available on this worker")
        return "cuda"
    return "cpu"


def torch_dtype(name: str, device: str) -> torch.dtype:
    """``auto`` is fp16 on CUDA and fp32 on CPU; fp16/bf16 halve memory and transfer on GPU."""
    import torch

    if name == "auto":
        return torch.float16 if device == "cuda" else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


class ClipEmbedder:
    """A CLIP model ready for inference.

    Image preprocessing is open_clip's: the decode tasks resize and crop as the spec's
    :attr:`~mrag.models.ModelSpec.image_preprocess` says (checked here against open_clip's
    config for the pretrained tag), and :meth:`embed_images` normalises with the mean and std
    of ``open_clip.get_model_preprocess_cfg(self.model)``.

    Args:
        spec: which model; random-init specs are built with ``seed`` for reproducibility.
        weights: optional local path or object-storage URI overriding the spec's weights.
        device: ``cpu`` or ``cuda``.
        dtype: ``auto``, ``fp32``, ``fp16`` or ``bf16``.
        batch_size: rows per forward pass; larger inputs are split.
        num_threads: torch intra-op threads (0 leaves torch's setting alone).
        seed: seed for random-init specs.

    Attributes:
        weights_id: what made the vectors (see :func:`mrag.models.weights_id`), for the rows.

    Raises:
        ConfigError: the spec's image size or preprocessing disagrees with open_clip's.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        weights: str = "",
        device: str = "cpu",
        dtype: str = "auto",
        batch_size: int = 32,
        num_threads: int = 0,
        seed: int = 0,
    ) -> None:
        import open_clip
        import torch

        if num_threads > 0:
            torch.set_num_threads(num_threads)
        resolved = resolve_weights(spec, weights)
        self.spec = spec
        self.device = torch.device(device)
        self.dtype = torch_dtype(dtype, device)
        self.batch_size = batch_size
        checkpoint = None if resolved.path is None else str(_checkpoint_file(resolved.path))
        torch.manual_seed(seed)  # random init, or the parameters a checkpoint then overwrites
        if spec.model_cfg is not None:  # an architecture open_clip does not list
            model = open_clip.CLIP(**spec.model_cfg)
            if checkpoint is not None:
                open_clip.load_checkpoint(model, checkpoint)
        else:
            model = open_clip.create_model(spec.architecture, pretrained=checkpoint)
        if checkpoint is None:
            log.warning("model %s uses random weights (seed %d)", spec.name, seed)
        else:
            log.info("model %s loaded from %s (%s)", spec.name, checkpoint, resolved.source)
        self.weights_id = weights_id(spec, weights, seed=seed)
        open_clip.set_model_preprocess_cfg(model, open_clip_preprocess(spec, model))
        self.model = model.eval().to(device=self.device, dtype=self.dtype)
        self._tokenizer = None  # built on first use: an image-only job never needs it
        preprocess = open_clip.get_model_preprocess_cfg(self.model)
        self._mean = torch.tensor(preprocess["mean"], device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(preprocess["std"], device=self.device).view(1, 3, 1, 1) * 255

    @property
    def tokenizer(self) -> Callable[[list[str]], torch.Tensor]:
        """open_clip's tokenizer for the spec (an HF-tokenizer model needs its hub files)."""
        if self._tokenizer is None:
            import open_clip

            if self.spec.model_cfg is not None:
                context_length = self.spec.model_cfg.get("text_cfg", {}).get("context_length", 77)
                self._tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=context_length)
            else:
                self._tokenizer = open_clip.get_tokenizer(self.spec.architecture)
        return self._tokenizer

    @property
    def embed_dim(self) -> int:
        return self.spec.embed_dim

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB at the spec's ``image_size`` → (N, D) float32, unit length."""
        import torch

        if pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) uint8 pixels, got shape {pixels.shape}")
        out = []
        with torch.inference_mode():
            for start in range(0, len(pixels), self.batch_size):
                chunk = torch.from_numpy(
                    np.require(pixels[start : start + self.batch_size], requirements=["C", "W"])
                )
                if self.device.type == "cuda":
                    chunk = chunk.pin_memory().to(self.device, non_blocking=True)
                images = (chunk.permute(0, 3, 1, 2).float() - self._mean) / self._std
                features = self.model.encode_image(images.to(self.dtype), normalize=True)
                out.append(features.float().cpu().numpy())
        return _concat(out, self.embed_dim)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Strings → (N, D) float32, unit length, in the same space as the images."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                tokens = self.tokenizer(list(texts[start : start + self.batch_size]))
                features = self.model.encode_text(tokens.to(self.device), normalize=True)
                out.append(features.float().cpu().numpy())
        return _concat(out, self.embed_dim)


def open_clip_preprocess(spec: ModelSpec, model: torch.nn.Module) -> dict:
    """open_clip's inference preprocessing for this spec, as its ``PreprocessCfg`` dict.

    ``open_clip.create_model(arch, pretrained=<file>)`` knows nothing of the tag the file was
    trained with and falls back to OpenAI defaults, which are wrong for SigLIP, CLIPA, PE…; so
    this starts from those defaults, applies open_clip's pretrained config for
    ``spec.pretrained_tag`` when open_clip lists one, and takes the size from the model itself.

    Raises:
        ConfigError: the spec's ``image_size``, ``resize_mode`` or ``interpolation`` (what the
            decode tasks use) disagree with the result; the message gives open_clip's values.
    """
    from dataclasses import asdict

    import open_clip
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    cfg = asdict(PreprocessCfg())
    if spec.pretrained_tag:
        tag_cfg = open_clip.get_pretrained_cfg(spec.architecture, spec.pretrained_tag)
        cfg = merge_preprocess_dict(cfg, tag_cfg or {})
    size = model.visual.image_size
    cfg["size"] = size
    square = tuple(size) if isinstance(size, tuple | list) else (size, size)
    wanted = (square, cfg["resize_mode"], cfg["interpolation"])
    declared = ((spec.image_size,) * 2, spec.resize_mode, spec.interpolation)
    if declared != wanted:
        source = f"{spec.architecture}/{spec.pretrained_tag}" if spec.pretrained_tag else "model"
        raise ConfigError(
            f"model {spec.name!r} declares image_size={spec.image_size}, resize_mode="
            f"{spec.resize_mode!r}, interpolation={spec.interpolation!r}, but open_clip's "
            f"preprocessing for {source} is {square[0]}x{square[1]} px, resize_mode="
            f"{wanted[1]!r}, interpolation={wanted[2]!r}; fix the spec"
        )
    return cfg


def _concat(parts: list[np.ndarray], dim: int) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)


def _checkpoint_file(path: Path) -> Path:
    """A folder of weights (copied prefix, hub snapshot) → the open_clip checkpoint inside it."""
    if path.is_file():
        return path
    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        if (path / name).is_file():
            return path / name
    candidates = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt"))
    if not candidates:
        from mrag.errors import WeightsNotFoundError

        raise WeightsNotFoundError(f"no open_clip checkpoint (.safetensors/.bin/.pt) in {path}")
    return candidates[0]


def vector_column(vectors: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """(N, D) float32 → ``FixedSizeList<float32>[D]`` (what LanceDB searches); invalid rows null."""
    import pyarrow as pa

    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    mask = None if valid is None else pa.array(~valid)
    return pa.FixedSizeListArray.from_arrays(flat, dim, mask=mask)


class ClipSpaceEmbedder:
    """The ``clip`` space (:class:`mrag.embed.SpaceEmbedder`): rows with pixels go through the
    image tower, text rows through the text tower, so an image query can reach text and a text
    query images. A row whose pixels hold several frames (a video segment's keyframes) gets
    the normalised mean of their vectors: the segment as a whole, in the frames' own space."""

    def __init__(self, spec: ModelSpec, options: EmbedOptions) -> None:
        self.spec = spec
        self.embedder = ClipEmbedder(
            spec,
            weights=options.weights,
            device=options.device,
            dtype=options.dtype,
            batch_size=options.batch_size,
            num_threads=options.num_threads,
            seed=options.seed,
        )
        self.embed_dim = spec.embed_dim
        self.weights_id = self.embedder.weights_id

    def embed_rows(self, rows: pa.Table, candidates: list[int]) -> tuple[list[int], np.ndarray]:
        size = self.spec.image_size
        frame_bytes = size * size * 3
        pixels = rows["pixels"].to_pylist()
        texts = rows["text"].to_pylist()
        modalities = rows["modality"].to_pylist()
        image_rows = [i for i in candidates if pixels[i]]
        text_rows = [
            i for i in candidates if not pixels[i] and modalities[i] == "text" and texts[i]
        ]
        vectors = np.zeros((len(image_rows) + len(text_rows), self.embed_dim), dtype=np.float32)
        if image_rows:
            frames = [len(pixels[i]) // frame_bytes for i in image_rows]
            stacked = np.frombuffer(b"".join(pixels[i] for i in image_rows), dtype=np.uint8)
            per_frame = self.embedder.embed_images(stacked.reshape(-1, size, size, 3))
            if max(frames) == 1:
                vectors[: len(image_rows)] = per_frame
            else:
                owner = np.repeat(np.arange(len(image_rows)), frames)
                pooled = np.zeros((len(image_rows), self.embed_dim), dtype=np.float32)
                np.add.at(pooled, owner, per_frame)
                norms = np.linalg.norm(pooled, axis=1, keepdims=True)
                vectors[: len(image_rows)] = pooled / np.maximum(norms, 1e-12)
        if text_rows:
            vectors[len(image_rows) :] = self.embedder.embed_texts([texts[i] for i in text_rows])
        return image_rows + text_rows, vectors

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self.embedder.embed_texts(texts)

    def embed_query_images(self, pixels: np.ndarray) -> np.ndarray:
        return self.embedder.embed_images(pixels)
