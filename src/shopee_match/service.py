"""Match new listings against a catalog with a saved candidate, one listing at a time.

:class:`MatchService` is what ``shopee-match serve`` runs (:mod:`shopee_match.serve` wraps it
in HTTP). At start-up it embeds the catalog through the keyed cache, builds a FAISS index of
every space the candidate searches and loads the candidate's models once.

How a listing is decided: the candidate was tuned on self-search lists (each listing's ``k``
nearest others in its gallery). A new listing gets the same list from the catalog and is
decided as row 0 of a *local gallery*, itself followed by its neighbours, so the kit's own
threshold strategies, min-2, pair features and second stages apply to it unchanged
(:func:`shopee_match.matching.predict_matches` does the same for every row of a gallery).
A listing without a photo (or title) enters with a zero vector for that modality, as a
catalog listing without one does: the fusion then leans on what is there.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse

#: catalogs up to this many listings are searched exactly (FAISS flat); above, HNSW
FLAT_MAX_ROWS = 100_000
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


@dataclass
class Decision:
    """A listing's ``k`` nearest catalog listings and the candidate's verdict on each."""

    rows: np.ndarray  # catalog row of each neighbour (or the extra listing's, see pair)
    similarity: np.ndarray  # fused (searched) similarity
    similarities: dict[str, np.ndarray]  # per modality cosine (NaN where the query lacks it)
    score: np.ndarray | None  # second-stage score, None for a threshold candidate
    cross_encoder: np.ndarray | None  # the cross-encoder's probability, where there is one
    matches: np.ndarray  # catalog rows of the predicted match set (union, components incl.)
    catalog_size: int  # listings in the catalog when decided (the extra listing's row, in pair)


@dataclass
class PairVerdict:
    """Whether two listings are duplicates, with each one's decision about the other."""

    duplicate: bool
    a_accepts_b: bool
    b_accepts_a: bool
    shared_component: bool  # with connected components: their match sets meet
    similarity: float  # fused (searched) similarity of a and b
    similarities: dict[str, float | None]  # per modality (None where either lacks input)
    a: Decision  # a's decision (b is row ``a.catalog_size`` among its neighbours)
    b: Decision


@dataclass
class GrayBand:
    """Scores in ``[low, high)`` are uncertain: logged for labelling. ``on`` is the score
    it applies to: ``cross_encoder`` (the band notebook 05 chose on val) or ``score`` (the
    candidate's own: second-stage score, else the fused similarity)."""

    low: float
    high: float
    on: str = "score"

    def mask(self, decision: Decision) -> np.ndarray:
        """Which of a decision's neighbours fall in the band."""
        if self.on == "cross_encoder":
            values = decision.cross_encoder
        else:
            values = decision.score if decision.score is not None else decision.similarity
        if values is None:
            return np.zeros(len(decision.rows), bool)
        values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=-np.inf)
        return (decision.rows >= 0) & (values >= self.low) & (values < self.high)


def check_title(title: str | None, max_chars: int = MAX_TITLE_CHARS) -> tuple[str, list[str]]:
    """A request's title cleaned as catalog titles are (:func:`shopee_match.data.clean_title`)
    and cut to ``max_chars``; the second value says what was cut."""
    from shopee_match.data import clean_title

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
    and input sizes as :func:`shopee_match.embeddings.embed_dataset` embeds a catalog. A model
    that several modalities read (e.g. a fine-tuned head's inputs) is loaded and run once."""

    def __init__(self, config, engine: str = "auto", tfidf=None):
        from shopee_match.encoders import input_kind
        from shopee_match.finetune import load_finetuned

        self.config, self.engine = config, engine
        self.tfidf = tfidf  # a TitleTfidf fitted on the catalog, if tfidf is used
        self.encoders: dict[tuple, object] = {}  # (spec, reads, size) -> encoder
        self.direct: dict[str, tuple] = {}  # modality -> encoder key
        self.heads: dict[str, tuple[object, dict, dict]] = {}  # modality -> head, meta, keys
        for modality in config.modalities:
            if modality == "tfidf":
                continue
            spec = config.encoders[modality]
            if input_kind(spec, modality) == "joint":
                model, meta = load_finetuned(spec.partition(":")[2])
                keys = {m: self._encoder(s, m, meta["image_size"])
                        for m, s in meta["inputs"].items()}
                self.heads[modality] = model, meta, keys
            else:
                self.direct[modality] = self._encoder(spec, modality, config.image_size)

    def _encoder(self, spec: str, modality: str, image_size: int) -> tuple:
        from shopee_match.encoders import input_kind, make_encoder

        reads = input_kind(spec, modality)
        key = (spec, reads, image_size if reads == "image" else None)
        if key not in self.encoders:
            self.encoders[key] = make_encoder(spec, modality, image_size=image_size,
                                              engine=self.engine)
        return key

    @property
    def reads_images(self) -> bool:
        """Whether any modality embeds the photo."""
        return any(reads == "image" for _, reads, _ in self.encoders)

    def embed(self, title: str, image: Photo | None = None) -> tuple[dict, list[str]]:
        """``(vectors, missing)``: one row per modality (zeros without its input)."""
        from shopee_match.finetune import head_embeddings

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
                        decoded[size] = _decode(image, size)
                    done[key] = encoder.encode_images([decoded[size]])
            return done[key]

        vectors = {modality: one(key) for modality, key in self.direct.items()}
        missing = [m for m, key in self.direct.items()
                   if (image is None if key[1] == "image" else not title)]
        for modality, (model, meta, keys) in self.heads.items():
            vectors[modality] = head_embeddings(model, meta, {m: one(k) for m, k in keys.items()})
            if not np.any(vectors[modality]):
                missing.append(modality)
        if "tfidf" in self.config.modalities:
            vectors["tfidf"] = self.tfidf.transform([title])
            if not title:
                missing.append("tfidf")
        return vectors, sorted(missing)


def _decode(photo: Photo, size: int):
    """The photo as upright RGB, decoded at ``size`` as catalog photos are (JPEG draft mode;
    0: full size)."""
    from shopee_match.encoders import open_rgb

    try:
        return open_rgb(io.BytesIO(photo.data), size)
    except Exception as err:  # truncated or corrupt pixel data
        raise ListingError(f"the image could not be decoded ({err}); is the file complete?"
                           ) from err


class RowStore:
    """Dense rows that grow without copying the whole array on every added listing."""

    def __init__(self, rows: np.ndarray):
        self.data = np.array(rows, dtype=np.float32)  # a copy: each store grows on its own
        self.n = len(rows)

    @property
    def rows(self) -> np.ndarray:
        return self.data[:self.n]

    def add(self, row: np.ndarray) -> None:
        if self.n == len(self.data):
            grown = np.zeros((max(2 * self.n, 16), self.data.shape[1]), np.float32)
            grown[:self.n] = self.data[:self.n]
            self.data = grown
        self.data[self.n] = row
        self.n += 1


class Space:
    """One searched vector space (the fused vectors of a blending round, or a union
    modality): catalog rows and a FAISS index over them, or a sparse TF-IDF matrix."""

    def __init__(self, vectors, flat_max_rows: int = FLAT_MAX_ROWS):
        from shopee_match.neighbors import build_index

        self.sparse = sparse.issparse(vectors)
        if self.sparse:
            self.store, self.index, self.kind = vectors.tocsr(), None, "sparse (exact)"
        else:
            self.store = RowStore(vectors)
            self.kind = "flat" if len(vectors) <= flat_max_rows else "hnsw"
            self.index = build_index(self.store.rows, self.kind)

    @property
    def rows(self):
        return self.store if self.sparse else self.store.rows

    def search(self, query, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(sims, rows)`` of the ``k`` nearest catalog rows, nearest first (-1 padding)."""
        from shopee_match.neighbors import search_index

        n = self.rows.shape[0]
        k_real = min(k, n)
        if self.sparse:
            scores = np.asarray((self.store @ query.T).todense()).ravel()
            top = np.argpartition(-scores, k_real - 1)[:k_real]
            top = top[np.lexsort((top, -scores[top]))]
            sims, rows = scores[top].astype(np.float32), top.astype(np.int64)
        else:
            sims, rows = search_index(self.index, query, k_real)
            sims, rows = sims[0], rows[0]
        pad = k - len(rows)
        return (np.concatenate([sims, np.full(pad, -np.inf, np.float32)]),
                np.concatenate([rows, np.full(pad, -1, np.int64)]))

    def add(self, row) -> None:
        if self.sparse:
            self.store = sparse.vstack([self.store, row]).tocsr()
        else:
            self.store.add(row[0])
            self.index.add(np.ascontiguousarray(row, dtype=np.float32))


class MatchService:
    """A catalog, a candidate and its models, ready to match one listing at a time.

    Build it with :meth:`load`. Methods are safe to call from several threads: encoding and
    second-stage scoring run in parallel, searching and adding take one lock.
    """

    def __init__(self, postings: pd.DataFrame, candidate, vectors: dict, encoder: ListingEncoder,
                 model=None, flat_max_rows: int = FLAT_MAX_ROWS,
                 log: Callable[[str], None] = print):
        from shopee_match.matching import blend, fused_neighbors, fused_vectors

        config = candidate.config
        self.candidate, self.config, self.model, self.encoder = candidate, config, model, encoder
        #: decides listings without a photo when this candidate reads photos (set by the loader)
        self.by_title: MatchService | None = None
        self.ids = postings["posting_id"].astype(str).tolist()
        self.known = set(self.ids)
        self.titles = postings["title"].fillna("").astype(str).tolist()
        self.phash = (postings["image_phash"].fillna("").astype(str).tolist()
                      if "image_phash" in postings else None)
        self.vectors = {m: v if sparse.issparse(v) else RowStore(v) for m, v in vectors.items()}
        self.lock = threading.Lock()
        fused = fused_vectors(vectors, config.fusion_weights)
        rounds = [fused]
        for _ in range(config.blend_rounds):  # the catalog's own blending, as predict_matches
            sims, idx = fused_neighbors({"fused": rounds[-1]}, {"fused": 1.0}, config.k + 1)
            rounds.append(blend(rounds[-1], sims, idx, config.blend_top_n))
        self.rounds = [Space(v, flat_max_rows) for v in rounds]
        self.union = {m: Space(vectors[m], flat_max_rows) for m in config.union}
        log(f"index: {self.rounds[-1].kind} over {len(self.ids)} catalog listings "
            f"({'exact up to' if self.rounds[-1].kind == 'flat' else 'HNSW above'} "
            f"{flat_max_rows} rows)")
        self.components = self._catalog_components(vectors) if config.components else None

    @classmethod
    def load(cls, postings: pd.DataFrame, candidate, engine: str = "auto",
             flat_max_rows: int = FLAT_MAX_ROWS, progress: bool = True,
             log: Callable[[str], None] = print) -> MatchService:
        """Embed ``postings`` (the catalog) as ``candidate`` was tuned, load its models and
        index every space it searches."""
        from shopee_match.encoders import TitleTfidf
        from shopee_match.submission import embed_for

        config = candidate.config
        dense = [m for m in config.modalities if m != "tfidf"]
        log(f"embedding {len(postings)} catalog listings ({', '.join(dense)}) for candidate "
            f"{candidate.name}")
        vectors = embed_for(postings, config, progress=progress, engine=engine, modalities=dense)
        tfidf = None
        if "tfidf" in config.modalities:
            tfidf = TitleTfidf(postings["title"].fillna("").astype(str).tolist())
            vectors["tfidf"] = tfidf.transform(postings["title"].fillna("").astype(str).tolist())
        log("loading the candidate's models")
        encoder = ListingEncoder(config, engine, tfidf)
        return cls(postings, candidate, vectors, encoder, candidate.load_model(), flat_max_rows,
                   log)

    def __len__(self) -> int:
        return len(self.ids)

    def listing(self, title: str | None = None, image: bytes | None = None,
                max_pixels: int = MAX_IMAGE_PIXELS, allow_empty: bool = False) -> Listing:
        """Check and embed one listing (a title and/or a photo's bytes; ``allow_empty``: an
        empty one too, e.g. a photo-only listing added to the title-only service)."""
        text, warnings = check_title(title)
        opened = read_image(image, max_pixels) if image is not None else None
        if not text and opened is None and not allow_empty:
            raise ListingError("a listing needs a title or an image (both are empty)")
        if opened is not None and not self.encoder.reads_images:
            warnings.append(f"candidate {self.candidate.name} uses no photos; the image was "
                            "ignored")
        vectors, missing = self.encoder.embed(text, opened)
        phash = None
        if self.phash is not None and opened is not None:
            import imagehash

            phash = str(imagehash.phash(_decode(opened, 0)))
        if missing:
            warnings.append(f"no input for {', '.join(missing)}: the candidate was tuned with "
                            "all of them, so its decision leans on the rest")
        return Listing(text, vectors, missing, phash, warnings)

    def match(self, listing: Listing) -> Decision:
        """The listing's neighbours in the catalog and the candidate's verdict on each."""
        return self._decide(listing)[0]

    def pair(self, a: Listing, b: Listing) -> PairVerdict:
        """Whether ``a`` and ``b`` are duplicates in this catalog's context: each is matched
        against the catalog plus the other, as if the other were listed. Duplicates when
        each accepts the other (mutual, as ``dedupe`` clusters), or, with connected
        components, when their match sets share a catalog listing's component."""
        first, fused_a = self._decide(a, extra=b)
        second, fused_b = self._decide(b, extra=a)
        lacking = {*a.missing, *b.missing}
        similarities = {m: None if m in lacking else _cosine(a.vectors[m], b.vectors[m])
                        for m in sorted(a.vectors)}
        a_takes_b = bool((first.matches == first.catalog_size).any())
        b_takes_a = bool((second.matches == second.catalog_size).any())
        shared = self.components is not None and bool(
            set(first.matches.tolist()) & set(second.matches.tolist()) -
            {first.catalog_size, second.catalog_size})
        return PairVerdict((a_takes_b and b_takes_a) or shared, a_takes_b, b_takes_a, shared,
                           _cosine(fused_a[-1], fused_b[-1]), similarities, first, second)

    def add(self, posting_id: str, listing: Listing) -> Decision:
        """Add a listing to the catalog (its id must be new); returns its decision against
        the catalog before it was added."""
        posting_id = str(posting_id).strip()
        if not posting_id:
            raise ListingError("posting_id is empty")
        if posting_id in self.known:  # fail fast; checked again when adding
            raise ListingError(f"posting_id {posting_id!r} is already in the catalog", 409)
        decision, final = self._decide(listing)
        with self.lock:
            if posting_id in self.known:
                raise ListingError(f"posting_id {posting_id!r} is already in the catalog", 409)
            for m, store in self.vectors.items():
                row = listing.vectors[m]
                if sparse.issparse(store):
                    self.vectors[m] = sparse.vstack([store, row]).tocsr()
                else:
                    store.add(row[0])
            for space, vector in zip(self.rounds, final):
                space.add(vector)
            for m, space in self.union.items():
                space.add(listing.vectors[m])
            if self.components is not None:
                self.components = _join_components(self.components, decision,
                                                   self.config.max_component)
            self.ids.append(posting_id)
            self.known.add(posting_id)
            self.titles.append(listing.title)
            if self.phash is not None:
                self.phash.append(listing.phash or "")
        return decision

    # -- internals -------------------------------------------------------------------------

    def _dense(self, modality: str):
        store = self.vectors[modality]
        return store if sparse.issparse(store) else store.rows

    def _query_rounds(self, listing: Listing) -> list[np.ndarray]:
        """The listing's fused vector at every blending round (searched in that round)."""
        from shopee_match.matching import blend, fused_vectors

        config = self.config
        out = [fused_vectors(listing.vectors, config.fusion_weights)]
        for space in self.rounds[:-1]:
            sims, rows = space.search(out[-1], config.blend_top_n)
            local = np.vstack([out[-1], space.rows[np.maximum(rows, 0)]])
            idx = np.concatenate([[0], np.where(rows >= 0, np.arange(1, len(rows) + 1), -1)])
            out.append(blend(local, np.concatenate([[1.0], sims])[None], idx[None],
                             config.blend_top_n)[:1])
        return out

    def _search(self, space: Space, query, k: int, extra=None) -> tuple[np.ndarray, np.ndarray]:
        """``k`` nearest among the catalog (plus ``extra``, given as row ``len(self)``)."""
        sims, rows = space.search(query, k)
        if extra is None:
            return sims, rows
        sims, rows = np.append(sims, _cosine(query, extra)), np.append(rows, len(self.ids))
        order = np.lexsort((np.where(rows < 0, np.iinfo(np.int64).max, rows), -sims))[:k]
        return sims[order], rows[order]

    def _gather(self, modality: str, query: Listing, rows: np.ndarray, extra: Listing | None):
        """The local gallery of one modality: the query's row, then each neighbour's."""
        n = len(self.ids)
        picked = self._dense(modality)[np.clip(rows, 0, n - 1)]
        if extra is not None and (rows == n).any():
            at = np.flatnonzero(rows == n)[0]
            if sparse.issparse(picked):
                picked = sparse.vstack([picked[:at], extra.vectors[modality], picked[at + 1:]])
            else:
                picked[at] = extra.vectors[modality][0]
        stack = sparse.vstack if sparse.issparse(picked) else np.vstack
        return stack([query.vectors[modality], picked])

    def _decide(self, listing: Listing, extra: Listing | None = None
                ) -> tuple[Decision, list[np.ndarray]]:
        """The decision and the listing's fused vector at every blending round. Searching
        takes the lock; scoring (a cross-encoder: the slow part) runs beside other requests."""
        from shopee_match.matching import STRATEGIES, candidate_pairs, min2, pair_features
        from shopee_match.neighbors import pair_cosine

        config = self.config
        with self.lock:
            n = len(self.ids)
            final = self._query_rounds(listing)
            extra_fused = self._query_rounds(extra)[-1] if extra is not None else None
            sims, rows = self._search(self.rounds[-1], final[-1], config.k, extra_fused)
            local = {m: self._gather(m, listing, rows, extra) for m in config.modalities}
            if self.phash is not None:
                phash = [listing.phash] + [(extra.phash if r == n else self.phash[r])
                                           if r >= 0 else None for r in rows]
            titles = [listing.title] + [(extra.title if r == n else self.titles[r])
                                        if r >= 0 else "" for r in rows]
            matched = set()
            for modality, threshold in config.union.items():
                other = extra.vectors[modality] if extra is not None else None
                s, r = self._search(self.union[modality], listing.vectors[modality], config.k,
                                    other)
                matched |= set(r[(r >= 0) & (s >= threshold)].tolist())
            components = self.components
        local_idx = np.concatenate([[0], np.where(rows >= 0, np.arange(1, len(rows) + 1), -1)])
        local_idx, local_sims = local_idx[None], np.concatenate([[1.0], sims])[None]
        real = rows >= 0
        similarities = {m: np.where(real, pair_cosine(v, np.zeros(len(rows), int),
                                                      np.arange(1, len(rows) + 1)), np.nan)
                        for m, v in local.items() if m not in listing.missing}
        score = ce = None
        if config.second_stage is not None:
            i, j, rank = candidate_pairs(local_idx)
            features = pair_features(i, j, rank, local, local_sims, local_idx,
                                     phash if self.phash is not None else None)
            score = np.full(len(rows), np.nan)
            if len(i):
                score[j - 1], ce = self._second_stage(features, titles, i, j)
            accepted = real & (np.nan_to_num(score, nan=-np.inf) >= config.second_stage.threshold)
        else:
            mask = STRATEGIES[config.strategy](local_sims, local_idx, config.value)
            if config.min2 is not None:
                mask = min2(local_sims, local_idx, mask, config.min2)
            accepted = mask[0, 1:]
        matched |= set(rows[accepted].tolist())
        if components is not None:
            inside = [r for r in matched if r < len(components)]
            comps = np.unique(components[inside])
            matched |= set(np.flatnonzero(np.isin(components, comps)).tolist())
        decision = Decision(rows, sims, similarities, score, ce,
                            np.array(sorted(matched), dtype=np.int64), n)
        return decision, final

    def _second_stage(self, features: pd.DataFrame, titles: list[str], i: np.ndarray,
                      j: np.ndarray):
        """Scores of the local pairs ``(0, j)`` and the cross-encoder's probability (or None)."""
        from shopee_match.matching import pair_probabilities

        if self.config.second_stage.kind == "pair_classifier":
            return pair_probabilities(self.model, features), None
        cache: dict = {}
        ce = np.full(len(titles) - 1, np.nan)
        ce[j - 1] = self.model.pair_scores(titles, i, j, cache)
        return self.model.score(features, titles, i, j, cache), ce

    def _catalog_components(self, vectors: dict) -> np.ndarray:
        """Component label of every catalog listing under the candidate's rule, components
        cut at their weakest edges to ``max_component`` (labels only: nothing expanded)."""
        from shopee_match.matching import (
            component_labels,
            fused_neighbors,
            predict_matches,
            similarity_matrix,
        )

        config, cache = self.config, {}
        matches = predict_matches(vectors, config.replace(components=False), self.model,
                                  self.phash, cache, titles=self.titles)
        sims, idx = fused_neighbors(vectors, config.fusion_weights, config.k + 1,
                                    config.blend_rounds, config.blend_top_n, cache)
        return component_labels(matches, similarity_matrix(sims, idx), config.max_component)[0]


def _cosine(x, y) -> float:
    """Inner product of two single-row vectors (dense or sparse, unit rows)."""
    product = x @ y.T
    return float(product.toarray()[0, 0] if sparse.issparse(product) else product[0, 0])


def _join_components(labels: np.ndarray, decision: Decision, max_size: int) -> np.ndarray:
    """Labels with one more listing, joined to the components it matched, nearest first,
    while the joined component stays within ``max_size`` listings."""
    n = len(labels)
    matched = set(decision.matches[decision.matches < n].tolist())
    nearest = [r for r in decision.rows.tolist() if r in matched]
    joined, size = [], 1
    for row in nearest + sorted(matched - set(nearest)):
        component = labels[row]
        if component in joined:
            continue
        members = int((labels == component).sum())
        if size + members <= max_size:
            joined.append(component)
            size += members
    new = labels.max(initial=-1) + 1
    return np.append(np.where(np.isin(labels, joined), new, labels), new)
