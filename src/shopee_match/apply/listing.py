"""One listing as a request brings it: its title and photo checked, then embedded as the
catalog was (:class:`ListingEncoder`)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

#: longer titles are cut (Shopee's are under 200 characters; text models read ~128 tokens)
MAX_TITLE_CHARS = 1000
#: photos above this many pixels are refused before decoding (decompression bombs)
MAX_IMAGE_PIXELS = 40_000_000


class ListingError(ValueError):
    """A listing the service cannot take; ``status`` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclass
class Photo:
    """An uploaded photo, checked by :func:`read_image` but not yet decoded."""

    data: bytes
    width: int
    height: int


@dataclass
class Listing:
    """One listing as the service sees it: cleaned title, decoded photo, vectors."""

    title: str
    vectors: dict[str, np.ndarray | sparse.csr_matrix]  # modality -> one row
    missing: list[str]  # modalities without input (zero rows)
    phash: str | None = None
    warnings: list[str] = field(default_factory=list)
    source: str | None = None  # its shop or feed, where the catalog links across sources


def check_title(title: str | None, max_chars: int = MAX_TITLE_CHARS) -> tuple[str, list[str]]:
    """A request's title cleaned as catalog titles are
    (:func:`shopee_match.data.postings.clean_title`) and cut to ``max_chars``; the second
    value says what was cut."""
    from shopee_match.data.postings import clean_title

    text = clean_title(title or "")
    if len(text) <= max_chars:
        return text, []
    return text[:max_chars], [f"title cut from {len(text)} to {max_chars} characters (the text "
                              "models read only its start anyway)"]


def read_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Photo:
    """Check an uploaded photo's header without decoding its pixels.

    Raises :class:`ListingError`: 415 when the bytes are not an image, 413 above
    ``max_pixels`` (a decompression bomb), 422 when the file is empty.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ListingError("the image upload is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError as err:
        raise ListingError(f"the image is too large to decode safely ({err})", 413) from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ListingError("the upload is not an image PIL can read (send JPEG, PNG, WebP, "
                           "GIF or BMP)", 415) from err
    if width * height > max_pixels:
        raise ListingError(f"the image is {width} x {height} px ({width * height / 1e6:.0f} "
                           f"Mpx), above the limit of {max_pixels / 1e6:.0f} Mpx", 413)
    return Photo(data, width, height)


class ListingEncoder:
    """Embeds single listings for every modality a configuration uses, with the same models
    and input sizes as :func:`shopee_match.embed.embeddings.embed_dataset` embeds a catalog
    (int8 title models where the configuration, or a head's training, used them). A model that
    several modalities read (e.g. a fine-tuned head's inputs) is loaded and run once."""

    def __init__(self, config, engine: str = "auto", tfidf=None):
        from shopee_match.embed.finetuned import FineTunedModel
        from shopee_match.embed.identity import input_kind
        from shopee_match.embed.specs import EncoderSpec

        self.config, self.engine = config, engine
        self.tfidf = tfidf  # a TitleTfidf fitted on the catalog, if tfidf is used
        self.encoders: dict[tuple, object] = {}  # (spec, reads, size, int8) -> encoder
        self.direct: dict[str, tuple] = {}  # modality -> encoder key
        self.heads: dict[str, tuple[FineTunedModel, dict]] = {}  # modality -> head, keys
        for modality in config.modalities:
            if modality == "tfidf":
                continue
            spec = config.encoders[modality]
            if input_kind(spec, modality) == "joint":
                head = FineTunedModel.load(EncoderSpec.parse(spec).name)
                keys = {m: self._encoder(s, m, head.meta["image_size"],
                                         head.meta.get("int8", False))
                        for m, s in head.meta["inputs"].items()}
                self.heads[modality] = head, keys
            else:
                self.direct[modality] = self._encoder(spec, modality, config.image_size,
                                                      config.int8)

    def _encoder(self, spec: str, modality: str, image_size: int, int8: bool) -> tuple:
        from shopee_match.embed.encoders import make_encoder
        from shopee_match.embed.identity import input_kind

        reads = input_kind(spec, modality)
        key = (spec, reads, image_size if reads == "image" else None, int8 and reads == "text")
        if key not in self.encoders:
            self.encoders[key] = make_encoder(spec, modality, image_size=image_size,
                                              engine=self.engine, int8=key[3])
        return key

    @property
    def reads_images(self) -> bool:
        """Whether any modality embeds the photo."""
        return any(key[1] == "image" for key in self.encoders)

    def embed(self, title: str, image: Photo | None = None) -> tuple[dict, list[str]]:
        """``(vectors, missing)``: one row per modality (zeros without its input)."""
        decoded: dict[int, object] = {}
        done: dict[tuple, np.ndarray] = {}

        def one(key: tuple) -> np.ndarray:
            if key not in done:
                encoder, reads = self.encoders[key], key[1]
                if reads != "image":
                    done[key] = encoder.encode([title])[0]
                elif image is None:
                    done[key] = np.zeros((1, encoder.dim), np.float32)
                else:
                    size = encoder.image_size
                    if size not in decoded:
                        decoded[size] = decode(image, size)
                    done[key] = encoder.encode_images([decoded[size]])
            return done[key]

        vectors = {modality: one(key) for modality, key in self.direct.items()}
        missing = [m for m, key in self.direct.items()
                   if (image is None if key[1] == "image" else not title)]
        for modality, (head, keys) in self.heads.items():
            vectors[modality] = head.head_vectors({m: one(k) for m, k in keys.items()})
            if not np.any(vectors[modality]):
                missing.append(modality)
        if "tfidf" in self.config.modalities:
            vectors["tfidf"] = self.tfidf.transform([title])
            if not title:
                missing.append("tfidf")
        return vectors, sorted(missing)


def decode(photo: Photo, size: int):
    """The photo as upright RGB, decoded at ``size`` as catalog photos are (JPEG draft mode;
    0: full size)."""
    from shopee_match.embed.encoders import open_rgb

    try:
        return open_rgb(io.BytesIO(photo.data), size)
    except Exception as err:  # truncated or corrupt pixel data
        raise ListingError(f"the image could not be decoded ({err}); is the file complete?"
                           ) from err
