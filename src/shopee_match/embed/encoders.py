"""Image and text encoders behind one small interface, built from an encoder spec
(:mod:`shopee_match.embed.specs`).

Every encoder returns ``(vectors, ok)``: float32 L2-normalised rows aligned with
the input, and a mask of rows that could be encoded. A row whose image is
missing or unreadable, or whose title is empty, gets a **zero vector** and
``ok = False``: its cosine similarity with everything is 0, so it never passes a
positive threshold on that modality, and it is counted and shown, never dropped.
"""

from __future__ import annotations

import functools
import io
import os

import numpy as np

from shopee_match.embed.backbones import (
    clip_image_size,
    image_transform,
    load_open_clip,
    load_timm,
    pick_device,
)
from shopee_match.embed.identity import input_kind, model_identity
from shopee_match.embed.specs import (
    TEXT_MODALITIES,
    EncoderSpec,
    EncoderSpecError,
    sbert_path,
    sbert_preprocess,
)
from shopee_match.files import is_url, open_binary

#: product titles an int8 title model is checked on against its fp32 graph before it is used
#: (:func:`shopee_match.embed.engines.onnx_model`): English, Indonesian, model numbers, one letter
PROBE_TITLES = ("apple iphone 13 pro max 256gb graphite",
                "microsoft office 2007 professional upgrade (pc)",
                "adobe photoshop elements 6 mac", "samsung 55 inch 4k uhd smart tv ua55",
                "kaos polos pria lengan pendek katun",
                "sony playstation 4 dualshock wireless controller black",
                "norton antivirus 2008 3 user", "d")


class Encoder:
    """Base: ``encode(items, bar)`` -> ``(vectors, ok)``; ``model_id`` names model + weights."""

    model_id: str = ""
    dim: int = 0

    def encode(self, items: list[str], bar=None) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class ImageEncoder(Encoder):
    """Any torch image model: a DataLoader decodes images in workers while the model runs,
    in torch or as an exported ONNX graph in onnxruntime (``engine``, see
    :mod:`shopee_match.embed.engines`)."""

    def __init__(self, model, transform, model_id: str, image_size: int, dim: int,
                 batch_size: int = 32, device: str | None = None, workers: int | None = None,
                 channels_last: bool = True, engine: str = "torch", threads: int = 0):
        import torch

        self.device = device or pick_device()
        self.engine = engine
        self.transform = transform
        self.model_id = model_id
        self.dim = dim
        self.image_size = image_size
        self.batch_size = batch_size
        self.workers = default_workers(engine) if workers is None else workers
        self.channels_last = channels_last and self.device == "cpu" and engine == "torch"
        self.model = model.eval().to(self.device)
        self.onnx = None
        if engine == "onnx":
            from shopee_match.embed.engines import onnx_model

            example = torch.zeros(2, 3, image_size, image_size)
            self.onnx = onnx_model(self.model, (example,), ["pixels"], [{0: "batch"}],
                                   model_id, threads=threads)
        elif self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def forward(self, batch) -> np.ndarray:
        """Unnormalised features of a prepared ``(B, 3, H, W)`` batch (a torch tensor)."""
        import torch

        if self.onnx is not None:
            return self.onnx(batch.numpy())
        with torch.inference_mode():
            batch = batch.to(self.device)
            if self.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            return self.model(batch).float().cpu().numpy()

    def encode_images(self, images: list) -> np.ndarray:
        """Unit rows of decoded RGB images (PIL, e.g. from :func:`open_rgb`), one batch."""
        import torch

        if not images:
            return np.zeros((0, self.dim), np.float32)
        return _unit_rows(self.forward(torch.stack([self.transform(im) for im in images])))

    def encode(self, items: list[str], bar=None) -> tuple[np.ndarray, np.ndarray]:
        import torch

        loader = torch.utils.data.DataLoader(
            ImageFiles(items, self.transform, self.image_size), batch_size=self.batch_size,
            num_workers=self.workers if len(items) > self.batch_size else 0)
        vectors, oks = [], []
        for batch, ok in loader:
            feats = _unit_rows(self.forward(batch))
            feats[~ok.numpy()] = 0.0
            vectors.append(feats)
            oks.append(ok.numpy())
            if bar is not None:
                bar.update(len(ok))
        if not vectors:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, bool)
        return np.concatenate(vectors), np.concatenate(oks)


def default_workers(engine: str) -> int:
    """DataLoader workers that decode images beside the model. onnxruntime keeps every core
    busy, so on 2 cores decoding in the main process between batches is fastest (measured by
    ``benchmarks/bench_embed.py``); torch eager leaves room for one worker."""
    cores = os.cpu_count() or 2
    if engine == "onnx":
        return max(0, min(4, (cores - 2) // 2))
    return min(4, max(1, cores // 2))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class ImageFiles:
    """Map-style dataset of image paths; an unreadable file yields zeros and ``ok = False``."""

    def __init__(self, paths: list[str], transform, image_size: int):
        self.paths = list(paths)
        self.transform = transform
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import torch

        try:
            return self.transform(open_rgb(self.paths[i], self.image_size)), True
        except ImportError:  # e.g. s3fs missing for s3:// photos: every photo would fail
            raise
        except Exception:  # missing, truncated or not an image: flagged, not fatal
            return torch.zeros(3, self.image_size, self.image_size), False


def open_rgb(path, size: int | None = None):
    """An image file (a path, or a URL fsspec opens: ``s3://``, ``gs://``, ...) as upright
    8-bit RGB: EXIF orientation applied, 16-bit images scaled (not clipped to white); a JPEG
    is decoded at the smallest scale >= ``size`` (draft mode)."""
    from PIL import Image, ImageOps

    if isinstance(path, str) and is_url(path):
        with open_binary(path) as f:
            return open_rgb(io.BytesIO(f.read()), size)
    with Image.open(path) as im:
        if size:
            im.draft("RGB", (size, size))
        im = ImageOps.exif_transpose(im)
    if im.mode.startswith("I"):  # 16/32-bit integer greyscale
        pixels = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        im = Image.fromarray(np.clip(pixels * 255.0 / top + 0.5, 0, 255).astype(np.uint8))
    return im.convert("RGB")


class TextEncoder(Encoder):
    """A tokenizer and a model forward over lists of non-empty titles.

    ``forward(tokenize(titles))`` gives one unnormalised row per title. Titles are fed in
    batches of similar length (sorted once over all titles), so little time goes to padding;
    the output keeps the input order.
    """

    def __init__(self, tokenize, forward, model_id: str, dim: int, batch_size: int,
                 engine: str = "torch", workers: int = 1):
        self.tokenize = tokenize
        self.forward = forward
        self.model_id = model_id
        self.dim = dim
        self.batch_size = batch_size
        self.engine = engine
        self.workers = workers  # forward calls at once (int8: one title each, one core each)

    def encode(self, items: list[str], bar=None) -> tuple[np.ndarray, np.ndarray]:
        from shopee_match.embed.engines import run_each

        ok = np.array([bool(t and t.strip()) for t in items], dtype=bool)
        vectors = np.zeros((len(items), self.dim), dtype=np.float32)
        rows = np.flatnonzero(ok)
        rows = rows[np.argsort([len(items[i]) for i in rows], kind="stable")]
        step = self.batch_size * self.workers * 64 if self.workers > 1 else self.batch_size
        for start in range(0, len(rows), step):
            part = rows[start:start + step]
            batches = [self.tokenize([items[i] for i in part[lo:lo + self.batch_size]])
                       for lo in range(0, len(part), self.batch_size)]  # tokenizers: 1 thread
            vectors[part] = _unit_rows(np.concatenate(run_each(self.forward, batches,
                                                               self.workers)))
            if bar is not None:
                bar.update(len(part))
        if bar is not None:
            bar.update(len(items) - len(rows))
        return vectors, ok


def make_encoder(spec: str | EncoderSpec, modality: str, image_size: int = 224,
                 batch_size: int | None = None, device: str | None = None,
                 max_tokens: int | None = None, engine: str = "auto", int8: bool = False,
                 threads: int = 0) -> Encoder:
    """Build the encoder a spec names, for ``image``, ``text`` or ``clip_text``.

    ``max_tokens`` truncates titles for SBERT models (``None``: the model's own
    limit); CLIP text always uses its model's context length. ``engine`` is ``auto``,
    ``torch`` or ``onnx`` (:mod:`shopee_match.embed.engines`); ``int8`` runs a text model as its
    quantized ONNX graph on the CPU whatever the engine, one title per run
    (:data:`shopee_match.embed.engines.INT8_BATCH`), so a title's vector is the same on every
    machine and in every batch (image models stay fp32: int8 convolutions ran 3x slower than
    torch here); ``threads`` sets onnxruntime's intra-op threads (0: its choice).
    """
    from shopee_match.embed.engines import INT8_BATCH, resolve_engine
    from shopee_match.progress import quiet_model_libraries

    quiet_model_libraries()
    spec = EncoderSpec.parse(spec)
    device = device or pick_device()
    reads = input_kind(spec, modality)
    int8 = int8 and reads == "text"
    engine = "onnx" if int8 else resolve_engine(engine, device)
    run = {"engine": engine, "threads": threads}
    batch_size = INT8_BATCH if int8 else batch_size or (
        128 if device == "cuda" else 32 if spec.kind != "sbert" else 64)
    if (modality == "image") != (reads == "image") and modality in ("image", *TEXT_MODALITIES):
        raise EncoderSpecError(
            f"Encoder spec {str(spec)!r} cannot serve modality {modality!r}. Use "
            "timm:ARCH:WEIGHTS or open_clip:ARCH:WEIGHTS for images, sbert:NAME_OR_DIR or "
            "open_clip:... for text.")
    if spec.kind == "timm":
        model = load_timm(spec.name, spec.weights)
        return ImageEncoder(model, image_transform(spec, image_size), model_identity(spec),
                            image_size, model.num_features, batch_size, device, **run)
    if spec.kind == "open_clip":
        model, preprocess, model_id = _open_clip(spec.name, spec.weights, device)
        if reads == "image":  # model.visual(x) is encode_image(x) before normalising
            return ImageEncoder(model.visual, preprocess, model_id, clip_image_size(model),
                                int(model.visual.output_dim), batch_size, device, **run)
        return _clip_text_encoder(model, spec.name, model_id, batch_size, device, **run,
                                  int8=int8)
    if spec.kind == "sbert":
        return _sbert_encoder(spec.name, batch_size, device, max_tokens, **run, int8=int8)
    if reads == "image":  # a fine-tuned image tower, at the size it was trained at
        from shopee_match.embed.finetuned import FineTunedModel

        tower = FineTunedModel.load(spec.name, device)
        return ImageEncoder(tower.model, image_transform(tower.meta["base"],
                                                         tower.meta["image_size"]),
                            model_identity(spec), tower.meta["image_size"],
                            tower.model.neck.num_features, batch_size, device, **run)
    raise EncoderSpecError(
        f"Encoder spec {str(spec)!r} cannot serve modality {modality!r} on its own (a "
        "fine-tuned head needs embed_dataset, which computes its inputs first).")


@functools.lru_cache(maxsize=4)
def _open_clip(arch: str, weights: str, device: str):
    """Load an OpenCLIP model once per (arch, weights) for both its towers."""
    model, preprocess = load_open_clip(arch, weights, device)
    return model.eval(), preprocess, model_identity(EncoderSpec("open_clip", arch, weights))


def _clip_text_encoder(model, arch: str, model_id: str, batch_size: int, device: str,
                       engine: str, int8: bool, threads: int) -> TextEncoder:
    import open_clip
    import torch

    tokenizer = open_clip.get_tokenizer(arch)
    if engine == "onnx":
        from shopee_match.embed.engines import as_module, onnx_model

        graph = onnx_model(as_module(model, lambda m, tokens: m.encode_text(tokens)),
                           (tokenizer(["a b", "c"]),), ["tokens"], [{0: "batch"}], model_id,
                           int8=int8, threads=threads,
                           probe=[(tokenizer([t]).numpy(),) for t in PROBE_TITLES] if int8
                           else None)

        def forward(tokens) -> np.ndarray:
            return graph(tokens.numpy())
    else:
        def forward(tokens) -> np.ndarray:
            with torch.inference_mode():
                return model.encode_text(tokens.to(device)).float().cpu().numpy()

    dim = int(forward(tokenizer(["x"])).shape[1])
    return TextEncoder(tokenizer, forward, model_id, dim, batch_size, engine,
                       graph.workers if engine == "onnx" else 1)


def _sbert_encoder(name: str, batch_size: int, device: str, max_tokens: int | None,
                   engine: str, int8: bool, threads: int) -> TextEncoder:
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(sbert_path(name), device=device).eval()
    if max_tokens:
        model.max_seq_length = max_tokens
    model_id = model_identity(EncoderSpec("sbert", name))
    dim = (model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension")
           else model.get_sentence_embedding_dimension())
    preprocess = sbert_preprocess(model)
    example = {k: v for k, v in preprocess(["a b c", "d"]).items() if hasattr(v, "shape")}
    names = list(example)  # the model's tensor inputs (not e.g. "modality")

    def tokenize(titles: list[str]) -> dict:
        return {k: v for k, v in preprocess(titles).items() if k in names}

    if engine == "onnx":
        from shopee_match.embed.engines import as_module, onnx_model

        probe = [tuple(tokenize([t])[k].numpy() for k in names)
                 for t in PROBE_TITLES] if int8 else None
        graph = onnx_model(as_module(model, lambda m, *t: m(dict(zip(names, t)))[
                               "sentence_embedding"]), tuple(example.values()), names,
                           [{0: "batch", 1: "tokens"}] * len(names), model_id, int8=int8,
                           threads=threads, probe=probe)

        def forward(features: dict) -> np.ndarray:
            return graph(*(features[k].numpy() for k in names))
    else:
        def forward(features: dict) -> np.ndarray:
            with torch.inference_mode():
                features = {k: v.to(device) for k, v in features.items()}
                return model(features)["sentence_embedding"].float().cpu().numpy()

    return TextEncoder(tokenize, forward, model_id, int(dim), batch_size, engine,
                       graph.workers if engine == "onnx" else 1)


def embed_images(paths: list[str], spec: str | EncoderSpec = "timm:tf_efficientnet_lite0:pypi",
                 image_size: int = 224, device: str | None = None, progress: bool = True
                 ) -> np.ndarray:
    """L2-normalised float32 image embeddings in input order; unreadable files give zero rows."""
    from shopee_match.progress import progress_bar

    encoder = make_encoder(spec, "image", image_size=image_size, device=device)
    with progress_bar(total=len(paths), desc="images", disable=not progress, leave=False) as bar:
        return encoder.encode(list(paths), bar=bar)[0]


def embed_texts(titles: list[str], spec: str | EncoderSpec = "sbert:pypi-minilm",
                device: str | None = None, max_tokens: int | None = None, progress: bool = True
                ) -> np.ndarray:
    """L2-normalised float32 title embeddings in input order; empty titles give zero rows."""
    from shopee_match.progress import progress_bar

    modality = "clip_text" if EncoderSpec.parse(spec).kind == "open_clip" else "text"
    encoder = make_encoder(spec, modality, device=device, max_tokens=max_tokens)
    with progress_bar(total=len(titles), desc="titles", disable=not progress, leave=False) as bar:
        return encoder.encode(list(titles), bar=bar)[0]


#: the engine variants compared in notebook 01 and the benchmarks: (label, engine, int8)
VARIANTS = (("torch", "torch", False), ("onnx", "onnx", False), ("onnx int8", "onnx", True))


def compare_engines(spec: str, modality: str, items: list[str], image_size: int = 224,
                    variants=VARIANTS):
    """Throughput of one encoder under each engine variant, and how far its vectors are from
    torch's: a DataFrame indexed by variant (``rows/s``, ``max |diff|``, ``min cosine``).

    Each encoder is built (and its graph exported) and warmed up on one batch before the
    timed run. A variant that cannot run here (no onnxruntime) is left out, and so is int8
    for images (the kit keeps image models fp32).
    """
    import time

    import pandas as pd

    from shopee_match.embed.engines import onnxruntime_available

    rows, reference = [], None
    for label, engine, int8 in variants:
        if (engine == "onnx" and not onnxruntime_available()) or (int8 and modality == "image"):
            continue
        encoder = make_encoder(spec, modality, image_size=image_size, device="cpu",
                               engine=engine, int8=int8)
        encoder.encode(items[:encoder.batch_size])
        start = time.perf_counter()
        vectors, ok = encoder.encode(items)
        seconds = time.perf_counter() - start
        reference = vectors if reference is None else reference
        cosine = np.sum(vectors[ok] * reference[ok], axis=1)
        rows.append({"variant": label, "rows/s": len(items) / seconds,
                     "max |diff|": float(np.abs(vectors - reference).max()),
                     "min cosine": float(cosine.min()) if cosine.size else np.nan})
    return pd.DataFrame(rows).set_index("variant")
