"""Match new listings against a catalog with a saved candidate, one listing at a time.

:class:`MatchService` is what ``shopee-match serve`` runs (:mod:`shopee_match.serve` wraps it
in HTTP). At start-up it embeds the catalog as the candidate needs
(:func:`~shopee_match.apply.pipeline.apply_candidate`), builds a FAISS index of every space
the candidate searches and loads its models once.

How a listing is decided: the candidate was tuned on self-search lists (each listing's ``k``
nearest others in its gallery). A new listing gets the same list from the catalog, and the
kit's one decision (:func:`shopee_match.match.decision.decide`) decides it as the first row
of a *local gallery*: itself, its neighbours and the listings its ``union`` modalities found.
So it is decided as its row of ``predict_matches`` over the catalog plus itself (appended
last) would be, with two differences: the catalog's blended vectors are those of the catalog
alone (blending moves only the new listing), and with connected components the listing
matches what it accepts plus the clusters it joins (those of its matches, nearest first,
while the joined cluster stays within ``max_component``) rather than the clusters being recut
around it. A listing already in the catalog (:meth:`MatchService.match_known`) is decided
exactly as its row of ``predict_matches`` over the catalog; tests check both.
A listing without a photo (or title) enters with a zero vector for that modality, as a
catalog listing without one does: the fusion then leans on what is there.
A reranker's cross-encoder is not run on a pair its classifier rejects whatever the
cross-encoder says (as ``submit`` skips it: the decision is the same); such a pair shows the
bound as its score and no cross-encoder probability, unless the service keeps
``exact_scores``.
A catalog with a ``source`` column that the candidate links across (two shops, by default:
:func:`~shopee_match.match.sources.link_sources`) is searched as ``submit`` and ``link``
search it: a listing names its source and is decided among the other sources' listings only.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from shopee_match.apply.listing import (
    MAX_IMAGE_PIXELS,
    Listing,
    ListingEncoder,
    ListingError,
    check_title,
    decode,
    read_image,
)
from shopee_match.data.schema import IMAGE_PHASH, POSTING_ID, SOURCE, TITLE

logger = logging.getLogger(__name__)

#: catalogs up to this many listings are searched exactly (FAISS flat); above, HNSW
FLAT_MAX_ROWS = 100_000


@dataclass
class Decision:
    """A listing's ``k`` nearest catalog listings and the candidate's verdict on each."""

    rows: np.ndarray  # catalog row of each neighbour (or the extra listing's, see pair)
    similarity: np.ndarray  # fused (searched) similarity
    similarities: dict[str, np.ndarray]  # per modality cosine (NaN where the query lacks it)
    score: np.ndarray | None  # second-stage score (a bound below the threshold where the
    # cross-encoder was skipped), None for a threshold candidate
    cross_encoder: np.ndarray | None  # the cross-encoder's probability (NaN where skipped)
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


class RowStore:
    """Rows (vectors, or one value each) that grow without copying the whole array on every
    added listing."""

    def __init__(self, rows: np.ndarray, dtype=np.float32):
        self.data = np.array(rows, dtype=dtype)  # a copy: each store grows on its own
        self.n = len(rows)

    @property
    def rows(self) -> np.ndarray:
        return self.data[:self.n]

    def add(self, row) -> None:
        if self.n == len(self.data):
            grown = np.zeros((max(2 * self.n, 16), *self.data.shape[1:]), self.data.dtype)
            grown[:self.n] = self.data[:self.n]
            self.data = grown
        self.data[self.n] = row
        self.n += 1


class Space:
    """One searched vector space (the fused vectors of a blending round, or a union
    modality): catalog rows and FAISS indexes over them, or a sparse TF-IDF matrix.

    With ``sources`` (a code per catalog row, :func:`~shopee_match.match.sources.link_sources`)
    each source's rows get an index of their own, so that a listing can be searched among the
    other sources' rows only, as a gallery linked across sources searches them."""

    def __init__(self, vectors, flat_max_rows: int = FLAT_MAX_ROWS,
                 sources: np.ndarray | None = None):
        n = vectors.shape[0]
        codes = np.zeros(n, np.int64) if sources is None else np.asarray(sources, np.int64)
        self.codes = RowStore(codes, np.int64)
        self.sparse, self.flat_max_rows = sparse.issparse(vectors), flat_max_rows
        self.parts: dict[int, _Part] = {}
        if self.sparse:
            self.store, self.kind = vectors.tocsr(), "sparse (exact)"
            return
        self.store = RowStore(vectors)
        for code in np.unique(codes).tolist():
            rows = np.flatnonzero(codes == code)
            part = self.store.rows if len(rows) == n else self.store.rows[rows]  # no copy
            self.parts[code] = _Part(part, rows, flat_max_rows)
        kinds = {part.kind for part in self.parts.values()}
        self.kind = "hnsw" if "hnsw" in kinds else "flat"

    @property
    def rows(self):
        return self.store if self.sparse else self.store.rows

    def search(self, query, k: int, exclude: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """``(sims, rows)`` of the ``k`` nearest catalog rows (of sources other than the
        code ``exclude``, when given), nearest first and equal similarities by row, as a
        gallery's self-search orders them (-1 padding)."""
        from shopee_match.match.neighbors import search_index

        if self.sparse:
            sims = np.asarray((self.store @ query.T).todense()).ravel().astype(np.float32)
            rows = np.arange(len(sims))
            if exclude is not None:
                keep = self.codes.rows != exclude
                sims, rows = sims[keep], rows[keep]
            if len(rows) > k:
                top = np.argpartition(-sims, k - 1)[:k]
                sims, rows = sims[top], rows[top]
        else:
            sims, rows = np.zeros(0, np.float32), np.zeros(0, np.int64)
            for code, part in self.parts.items():
                if code == exclude or part.ids.n == 0:
                    continue
                s, i = search_index(part.index, query, min(k, part.ids.n))
                real = i[0] >= 0  # HNSW may find fewer
                sims = np.concatenate([sims, s[0][real]])
                rows = np.concatenate([rows, part.ids.rows[i[0][real]]])
        order = np.lexsort((rows, -sims))[:k]
        sims, rows = sims[order].astype(np.float32), rows[order].astype(np.int64)
        pad = k - len(rows)
        return (np.concatenate([sims, np.full(pad, -np.inf, np.float32)]),
                np.concatenate([rows, np.full(pad, -1, np.int64)]))

    def add(self, row, code: int = 0) -> None:
        """Add a catalog row (of source code ``code``)."""
        if self.sparse:
            self.store = sparse.vstack([self.store, row]).tocsr()
        else:
            self.store.add(row[0])
            if code not in self.parts:  # the first row of its source (an empty catalog)
                self.parts[code] = _Part(self.store.rows[:0], np.zeros(0, np.int64),
                                         self.flat_max_rows)
            self.parts[code].add(row, self.store.n - 1)
        self.codes.add(code)


class _Part:
    """The FAISS index of one source's rows of a :class:`Space`, and their catalog rows."""

    def __init__(self, vectors: np.ndarray, rows: np.ndarray, flat_max_rows: int):
        from shopee_match.match.neighbors import build_index

        self.kind = "flat" if len(rows) <= flat_max_rows else "hnsw"
        self.index = build_index(vectors, self.kind)
        self.ids = RowStore(rows, np.int64)

    def add(self, row: np.ndarray, catalog_row: int) -> None:
        self.index.add(np.ascontiguousarray(row, dtype=np.float32))
        self.ids.add(catalog_row)


class MatchService:
    """A catalog, a candidate and its models, ready to match one listing at a time.

    Build it with :meth:`load`. Methods are safe to call from several threads: encoding and
    second-stage scoring run in parallel, searching and adding take one lock.
    ``exact_scores``: cross-encode every neighbour, even those the decision does not need.
    """

    def __init__(self, postings: pd.DataFrame, candidate, vectors: dict,
                 encoder: ListingEncoder | None, scorer=None,
                 flat_max_rows: int = FLAT_MAX_ROWS, exact_scores: bool = False):
        from shopee_match.apply.pipeline import gallery_of
        from shopee_match.match.fusion import blending_rounds, fused_vectors
        from shopee_match.match.sources import link_sources

        config = candidate.config
        self.candidate, self.config, self.scorer, self.encoder = (candidate, config, scorer,
                                                                  encoder)
        self.exact_scores = exact_scores
        #: decides listings without a photo when this candidate reads photos (load_service)
        self.by_title: MatchService | None = None
        self.ids = postings[POSTING_ID].astype(str).tolist()
        self.known = set(self.ids)
        self.titles = postings[TITLE].fillna("").astype(str).tolist()
        self.phash = (postings[IMAGE_PHASH].fillna("").astype(str).tolist()
                      if IMAGE_PHASH in postings else None)
        self.vectors = {m: v if sparse.issparse(v) else RowStore(v) for m, v in vectors.items()}
        self.lock = threading.Lock()
        named = postings[SOURCE] if SOURCE in postings else None
        codes = link_sources(named, candidate.link)
        #: the sources the catalog links across (a code is a place in this list), else None
        self.sources = None if codes is None else np.unique(np.asarray(named, str)).tolist()
        rounds = blending_rounds(fused_vectors(vectors, config.fusion_weights), config.k + 1,
                                 config.blend_rounds, config.blend_top_n, sources=codes)
        self.rounds = [Space(v, flat_max_rows, codes) for v in rounds]  # the catalog's own
        self.union = {m: Space(vectors[m], flat_max_rows, codes) for m in config.union}
        logger.info("index: %s over %d catalog listings (%s %d rows)", self.rounds[-1].kind,
                    len(self.ids), "exact up to" if self.rounds[-1].kind == "flat"
                    else "HNSW above", flat_max_rows)
        self.components = None
        if config.components:
            from shopee_match.match.decision import cluster_labels

            self.components = cluster_labels(gallery_of(postings, vectors, link=candidate.link),
                                             config, scorer)

    @classmethod
    def load(cls, postings: pd.DataFrame, candidate, engine: str = "auto",
             flat_max_rows: int = FLAT_MAX_ROWS, progress: bool = True,
             exact_scores: bool = False) -> MatchService:
        """Embed ``postings`` (the catalog) as ``candidate`` was tuned, load its models and
        index every space it searches."""
        from shopee_match.apply.pipeline import apply_candidate

        config = candidate.config
        logger.info("embedding %d catalog listings (%s) for candidate %s", len(postings),
                    ", ".join(config.modalities), candidate.name)
        applied = apply_candidate(postings, candidate, progress=progress, engine=engine)
        logger.info("loading the candidate's models")
        tfidf = applied.embeddings["tfidf"].space if "tfidf" in applied.embeddings else None
        return cls(postings, candidate, applied.gallery.vectors,
                   ListingEncoder(config, engine, tfidf), applied.scorer, flat_max_rows,
                   exact_scores)

    def __len__(self) -> int:
        return len(self.ids)

    def listing(self, title: str | None = None, image: bytes | None = None,
                max_pixels: int = MAX_IMAGE_PIXELS, allow_empty: bool = False,
                source: str | None = None) -> Listing:
        """Check and embed one listing (a title and/or a photo's bytes; ``allow_empty``: an
        empty one too, e.g. a photo-only listing added to the title-only service) from
        ``source``, which a catalog linked across sources needs (:meth:`source_code`)."""
        source = (source or "").strip() or None
        self.source_code(source)  # before the slow part
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

            phash = str(imagehash.phash(decode(opened, 0)))
        if missing:
            warnings.append(f"no input for {', '.join(missing)}: the candidate was tuned with "
                            "all of them, so its decision leans on the rest")
        if source is not None and self.sources is None:
            warnings.append(f"the catalog is not linked across sources (candidate "
                            f"{self.candidate.name}, link {self.candidate.link!r}): the source "
                            "was ignored")
        return Listing(text, vectors, missing, phash, warnings, source)

    def source_code(self, source: str | None) -> int | None:
        """The code of a listing's ``source`` in a catalog linked across sources (its
        neighbours come from the other sources), None in one that is not; a missing or
        unknown source is a :class:`ListingError` there."""
        if self.sources is None:
            return None
        if not source:
            raise ListingError(f"this catalog links its sources {self.sources} across each "
                               f"other (candidate {self.candidate.name} was tuned on pairs "
                               "between them): say which one the listing comes from (source)")
        if source not in self.sources:
            raise ListingError(f"source {source!r} is not one of the catalog's sources "
                               f"{self.sources}")
        return self.sources.index(source)

    def source_of(self, row: int) -> str | None:
        """The source of catalog row ``row``, where the catalog links across sources."""
        codes = self.rounds[0].codes  # every space keeps each row's source code
        return None if self.sources is None else self.sources[int(codes.rows[row])]

    def match(self, listing: Listing) -> Decision:
        """The listing's neighbours in the catalog and the candidate's verdict on each."""
        return self._decide(listing)[0]

    def match_known(self, posting_id: str) -> Decision:
        """The decision for a listing already in the catalog, made exactly as
        ``predict_matches`` over the catalog makes its row (its own row is left out of its
        neighbours and matches)."""
        row = self.ids.index(str(posting_id)) if str(posting_id) in self.known else None
        if row is None:
            raise ListingError(f"posting_id {posting_id!r} is not in the catalog", 404)
        with self.lock:
            listing = Listing(self.titles[row], {m: self._rows(m, np.array([row]))
                                                 for m in self.vectors}, [],
                              self.phash[row] if self.phash is not None else None,
                              source=self.source_of(row))
        return self._decide(listing, member=row)[0]

    def pair(self, a: Listing, b: Listing) -> PairVerdict:
        """Whether ``a`` and ``b`` are duplicates in this catalog's context: each is matched
        against the catalog plus the other, as if the other were listed. Duplicates when
        each accepts the other (mutual, as ``dedupe`` clusters), or, with connected
        components, when their match sets share a catalog listing's component. In a catalog
        linked across sources, ``a`` and ``b`` must come from different ones."""
        if self.sources is not None and a.source == b.source and a.source is not None:
            raise ListingError(f"a and b both come from source {a.source!r}: candidate "
                               f"{self.candidate.name} links the catalog's sources across "
                               "each other, so it decides pairs from two different sources only")
        first, fused_a, _ = self._decide(a, extra=b)
        second, fused_b, _ = self._decide(b, extra=a)
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
        the catalog before it was added. A refused listing leaves no trace."""
        return self.prepare_add(posting_id, listing).commit()

    def prepare_add(self, posting_id: str, listing: Listing) -> PendingAdd:
        """Check and decide a listing to add, without adding it yet: ``commit()`` the result
        (it cannot fail then), or drop it. Lets one request add a listing to two services
        (the main and the title-only one) both or neither."""
        posting_id = str(posting_id).strip()
        if not posting_id:
            raise ListingError("posting_id is empty")
        if posting_id in self.known:  # fail fast; checked again when committing
            raise ListingError(f"posting_id {posting_id!r} is already in the catalog", 409)
        lacking = sorted(set(self.vectors) - set(listing.vectors))
        if lacking:
            raise ValueError(f"the listing has no vectors for {lacking}, which the catalog of "
                             f"candidate {self.candidate.name} holds")
        decision, final, joined = self._decide(listing)
        return PendingAdd(self, posting_id, listing, decision, final, joined)

    def _commit(self, pending: PendingAdd) -> Decision:
        from shopee_match.match.components import labels_with_new_row

        listing = pending.listing
        with self.lock:
            if pending.posting_id in self.known:
                raise ListingError(f"posting_id {pending.posting_id!r} is already in the "
                                   "catalog", 409)
            for m, store in self.vectors.items():
                row = listing.vectors[m]
                if sparse.issparse(store):
                    self.vectors[m] = sparse.vstack([store, row]).tocsr()
                else:
                    store.add(row[0])
            code = self.source_code(listing.source) or 0
            for space, vector in zip(self.rounds, pending.final):
                space.add(vector, code)
            for m, space in self.union.items():
                space.add(listing.vectors[m], code)
            if self.components is not None:
                self.components = labels_with_new_row(self.components, pending.joined)
            self.ids.append(pending.posting_id)
            self.known.add(pending.posting_id)
            self.titles.append(listing.title)
            if self.phash is not None:
                self.phash.append(listing.phash or "")
        return pending.decision

    # -- internals -------------------------------------------------------------------------

    def _rows(self, modality: str, rows: np.ndarray):
        """Catalog rows of one modality's vectors (dense or sparse)."""
        store = self.vectors[modality]
        return store[rows] if sparse.issparse(store) else store.rows[rows]

    def _query_rounds(self, listing: Listing, member: int | None = None) -> list[np.ndarray]:
        """The listing's fused vector at every blending round (searched in that round): a
        catalog listing's own, or a new one blended with its nearest catalog listings (of
        the other sources, in a catalog linked across them)."""
        from shopee_match.match.fusion import blend, fused_vectors

        if member is not None:
            return [space.rows[member:member + 1] for space in self.rounds]
        config, exclude = self.config, self.source_code(listing.source)
        out = [fused_vectors(listing.vectors, config.fusion_weights)]
        for space in self.rounds[:-1]:
            sims, rows = space.search(out[-1], config.blend_top_n, exclude)
            local = np.vstack([out[-1], space.rows[np.maximum(rows, 0)]])
            idx = np.concatenate([[0], np.where(rows >= 0, np.arange(1, len(rows) + 1), -1)])
            own = np.float32(_cosine(out[-1], out[-1]))
            out.append(blend(local, np.concatenate([[own], sims])[None], idx[None],
                             config.blend_top_n)[:1])
        return out

    def _search(self, space: Space, query, k: int, extra=None, member: int | None = None,
                exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``k`` nearest among the catalog (plus ``extra``, given as row ``len(self)``; or,
        for a ``member`` of the catalog, the ``k`` nearest other listings), none of source
        code ``exclude``."""
        if member is not None:
            sims, rows = space.search(query, k + 1, exclude)
            keep = np.flatnonzero(rows != member)[:k]
            return sims[keep], rows[keep]
        sims, rows = space.search(query, k, exclude)
        if extra is None:
            return sims, rows
        sims, rows = np.append(sims, _cosine(query, extra)), np.append(rows, len(self.ids))
        order = np.lexsort((np.where(rows < 0, np.iinfo(np.int64).max, rows), -sims))[:k]
        return sims[order], rows[order]

    def _decide(self, listing: Listing, extra: Listing | None = None,
                member: int | None = None) -> tuple[Decision, list[np.ndarray], list]:
        """The decision, the listing's fused vector at every blending round, and the catalog
        components it joins. Searching takes the lock; deciding (a cross-encoder: the slow
        part) runs beside other requests."""
        from shopee_match.match.decision import decide, scored_pairs
        from shopee_match.match.neighbors import pair_cosine

        config = self.config
        exclude = self.source_code(listing.source)
        with self.lock:
            n = len(self.ids)
            final = self._query_rounds(listing, member)
            extra_fused = self._query_rounds(extra)[-1] if extra is not None else None
            sims, rows = self._search(self.rounds[-1], final[-1], config.k, extra_fused, member,
                                      exclude)
            found = {m: self._search(self.union[m], listing.vectors[m], config.k,
                                     None if extra is None else extra.vectors[m], member,
                                     exclude)
                     for m in config.union}
            table = _table_rows([rows, *(r for _, r in found.values())])
            local = self._local_gallery(listing, table, extra, n if member is None else member)
            components = self.components
        by_row = np.argsort(table)

        def local_lists(query, s, r):
            """A searched list as the local gallery's row 0: itself first, then its
            neighbours' local rows (the table's order, from 1; -1 padding)."""
            found = np.minimum(np.searchsorted(table, r, sorter=by_row), len(table) - 1)
            idx = np.where(r >= 0, by_row[found] + 1, -1) if len(table) else np.full(len(r), -1)
            return (np.concatenate([[_cosine(query, query)], s])[None].astype(np.float32),
                    np.concatenate([[0], idx])[None])

        lists = local_lists(final[-1], sims, rows)
        unions = {m: local_lists(listing.vectors[m], *found[m]) for m in config.union}
        matched = decide(local, config, self.scorer, lists, unions)
        chosen = np.concatenate([[-1], table])[matched.indices[matched.indices > 0]]
        real = rows >= 0  # one candidate pair per real neighbour, in list order
        score = ce = pairs = None
        if config.second_stage is not None:
            pairs, scores = scored_pairs(local, config, self.scorer, lists)
            score = np.full(len(rows), np.nan)
            score[real] = scores
            part = (self.scorer.parts(pairs, scored_only=not self.exact_scores)
                    .get("cross_encoder") if len(pairs) else None)
            if part is not None:
                ce = np.full(len(rows), np.nan)
                ce[real] = part
        similarities = {}
        for m in (m for m in local.vectors if m not in listing.missing):
            similarities[m] = np.full(len(rows), np.nan)
            similarities[m][real] = (  # the pair features hold them when there are some
                pairs.features[f"sim_{m}"] if pairs is not None else pair_cosine(
                    local.vectors[m], np.zeros(int(real.sum()), int), lists[1][0, 1:][real]))
        nearest = [int(r) for r in rows if r in set(chosen.tolist())]
        ordered = nearest + sorted(set(chosen.tolist()) - set(nearest))
        joined: list = []
        if components is not None and member is not None:  # a catalog listing: its cluster
            members = np.flatnonzero(components == components[member])
            ordered = [int(r) for r in members if r != member]
        elif components is not None:  # a new one: what it accepts, and the clusters it joins
            from shopee_match.match.components import join_components

            inside = [r for r in ordered if r < len(components)]
            joined = join_components(components, inside, config.max_component)
            ordered = sorted(set(ordered) | set(np.flatnonzero(np.isin(components,
                                                                        joined)).tolist()))
        decision = Decision(rows.astype(np.int64), sims, similarities, score, ce,
                            np.array(sorted(ordered), dtype=np.int64), n)
        return decision, final, joined

    def _local_gallery(self, listing: Listing, table: np.ndarray, extra: Listing | None,
                       order: int):
        """The gallery of the listing (row 0) and the catalog rows ``table`` (``len(self)``:
        the ``extra`` listing), with their places in the catalog plus the listing
        (``order``: the listing's own) for reading pairs as the full gallery reads them."""
        from shopee_match.match.gallery import Gallery

        n = len(self.ids)
        inside = np.clip(table, 0, max(n - 1, 0))
        vectors = {}
        for m in self.config.modalities:
            picked = self._rows(m, inside)
            if extra is not None and (table == n).any():
                at = int(np.flatnonzero(table == n)[0])
                if sparse.issparse(picked):
                    picked = sparse.vstack([picked[:at], extra.vectors[m], picked[at + 1:]])
                else:
                    picked = picked.copy()
                    picked[at] = extra.vectors[m][0]
            stack = sparse.vstack if sparse.issparse(picked) else np.vstack
            vectors[m] = stack([listing.vectors[m], picked])

        def column(values: list, own, other):
            return np.array([own, *(other if r == n else values[r] for r in table.tolist())],
                            dtype=object)

        phash = None if self.phash is None else column(
            self.phash, listing.phash, extra.phash if extra else None)
        titles = column(self.titles, listing.title, extra.title if extra else "")
        positions = np.array([n + 1 if extra is not None else order, *table.tolist()])
        return Gallery(vectors, phash, titles, positions, exact_scores=self.exact_scores)


@dataclass
class PendingAdd:
    """A listing checked and decided for :meth:`MatchService.add`, not added yet."""

    service: MatchService
    posting_id: str
    listing: Listing
    decision: Decision
    final: list
    joined: list

    def commit(self) -> Decision:
        """Add the listing (409 if its id was added meanwhile); returns its decision."""
        return self.service._commit(self)


def _table_rows(lists: list[np.ndarray]) -> np.ndarray:
    """The catalog rows found in ``lists``, each once, in order of first appearance."""
    found = np.concatenate(lists).astype(np.int64)
    found = found[found >= 0]
    return found[np.sort(np.unique(found, return_index=True)[1])]


def _cosine(x, y) -> float:
    """Inner product of two single-row vectors (dense or sparse, unit rows)."""
    product = x @ y.T
    return float(product.toarray()[0, 0] if sparse.issparse(product) else product[0, 0])


def load_service(postings: pd.DataFrame, candidate, trained_on: str, split_seed: int = 0,
                 titles_candidate=None, columns: str | dict | None = None,
                 engine: str = "auto", flat_max_rows: int = FLAT_MAX_ROWS,
                 exact_scores: bool = False) -> MatchService:
    """The service of ``candidate`` over the catalog ``postings`` and, when that candidate
    reads photos, a title-only service for listings without one: ``titles_candidate``, else
    the best title-only candidate made from ``trained_on`` (or a quick threshold on titles,
    :func:`~shopee_match.apply.choosing.choose_candidate`)."""
    from shopee_match.apply.choosing import choose_candidate, reads_images

    service = MatchService.load(postings, candidate, engine, flat_max_rows,
                                exact_scores=exact_scores)
    if reads_images(candidate.config):
        titles = titles_candidate or choose_candidate(postings, trained_on, split_seed,
                                                      columns=columns, titles_only=True)
        logger.info("title-only candidate %s: val F1 %.4f", titles.name, titles.val_f1)
        service.by_title = MatchService.load(postings, titles, engine, flat_max_rows,
                                             exact_scores=exact_scores)
    return service
