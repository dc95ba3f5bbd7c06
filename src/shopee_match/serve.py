"""``shopee-match serve``: the matching service over HTTP (FastAPI + uvicorn).

:func:`create_app` wraps a :class:`~shopee_match.apply.service.MatchService`, built by a loader
that runs in a background thread at start-up (``/health`` answers 503 until it is ready):

- ``POST /match``: a title and/or a photo -> the top-k catalog listings with their
  similarities, the candidate's score and verdict on each, and the predicted match set;
- ``POST /pair``: two listings -> duplicate or not, with the scores behind it;
- ``POST /catalog``: add a listing (a new ``posting_id``; a known one is a 409);
- ``GET /health`` and ``GET /metrics`` (Prometheus text format).

A catalog with a ``source`` column that its candidate links across (two shops) answers each
listing with the *other* shops' listings: requests then name the listing's ``source``.
Bad input is answered with a 4xx and a message (:class:`~shopee_match.apply.listing.ListingError`);
requests whose pairs fall in the gray band are appended to a JSONL log, one flushed line each.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from shopee_match.apply.listing import ListingError
from shopee_match.apply.service import GrayBand, MatchService

logger = logging.getLogger(__name__)

#: uploads above this many bytes are refused (413)
MAX_IMAGE_BYTES = 10 * 2**20


@dataclass
class Limits:
    """What a request may send."""

    max_image_bytes: int = MAX_IMAGE_BYTES
    max_image_pixels: int = 40_000_000


class Neighbour(BaseModel):
    """A catalog listing near the query, and the candidate's verdict on it."""

    posting_id: str
    title: str
    source: str | None = Field(None, description="its shop, where the catalog links shops")
    similarity: float = Field(description="fused similarity the candidate searched by")
    similarities: dict[str, float | None] = Field(
        description="cosine per modality (null where the query has no input for it)")
    score: float | None = Field(None, description="second-stage score (pair classifier or "
                                "reranker), null for a threshold candidate; where the "
                                "reranker's classifier rejects the pair whatever its "
                                "cross-encoder says, that bound (below the threshold)")
    cross_encoder: float | None = Field(None, description="cross-encoder probability, null "
                                        "where there is none or it was not run (a pair it "
                                        "could not accept; serve --exact-scores runs it)")
    accepted: bool = Field(description="in the predicted match set")
    gray: bool = Field(False, description="in the gray band (uncertain)")


class MatchResult(BaseModel):
    """Answer to ``POST /match`` (and ``POST /catalog``: the new listing's matches)."""

    candidate: str
    duplicate: bool = Field(description="the listing matches at least one catalog listing")
    matches: list[str] = Field(description="posting ids of the predicted match set")
    neighbours: list[Neighbour]
    threshold: float | None = Field(description="the candidate's threshold on score (or on "
                                    "similarity without a second stage)")
    missing: list[str] = Field(description="modalities without input (zero vectors)")
    warnings: list[str]
    gray: bool = Field(description="some pair fell in the gray band (logged)")
    milliseconds: float


class PairResult(BaseModel):
    """Answer to ``POST /pair``."""

    candidate: str
    duplicate: bool = Field(description="each accepts the other among the catalog (or their "
                            "match sets share a component, for a components candidate)")
    a_accepts_b: bool
    b_accepts_a: bool
    similarity: float | None = Field(description="fused similarity of a and b")
    similarities: dict[str, float | None]
    score_a_b: float | None = Field(description="second-stage score of b as a's neighbour "
                                    "(null when b is not among a's k nearest)")
    score_b_a: float | None
    warnings: list[str]
    gray: bool
    milliseconds: float


class CatalogResult(MatchResult):
    """Answer to ``POST /catalog``: the listing added, and what it matched on arrival."""

    posting_id: str
    catalog_size: int


class Problem(BaseModel):
    """Why a request was not answered as asked (every 4xx and 5xx of this API)."""

    detail: str = Field(description="what is wrong, and what to send instead")


#: a listing's shop: needed where the catalog links shops (see /health's sources)
SOURCE_FIELD = Form(description="the listing's source (shop, feed): needed where the catalog "
                    "links its sources across each other, as /health's sources lists them")

#: the answers every endpoint that reads a listing may give instead of its result
LISTING_PROBLEMS = {
    400: {"model": Problem, "description": "a malformed request (e.g. its Content-Length)"},
    413: {"model": Problem, "description": "a photo or request over the size limits"},
    415: {"model": Problem, "description": "an upload that is not an image"},
    422: {"model": Problem, "description": "no title and no photo, a photo that cannot be "
          "decoded, a source missing or unknown where the catalog links sources, or a form "
          "field missing or of the wrong kind"},
    500: {"model": Problem, "description": "an unexpected error (the service keeps running)"},
    503: {"model": Problem, "description": "the service is still loading, or failed to"},
}


class Health(BaseModel):
    status: str = Field(description="ok, loading or failed")
    detail: str = ""
    candidate: str | None = None
    titles_candidate: str | None = Field(None, description="decides listings without a photo")
    catalog_size: int | None = None
    sources: list[str] | None = Field(None, description="the shops the catalog links across "
                                      "(requests name theirs), null when it does not")


class Metrics:
    """Prometheus metrics of one app (its own registry: no global state)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("shopee_match_requests", "HTTP requests answered",
                                ["endpoint", "status"], registry=self.registry)
        self.errors = Counter("shopee_match_errors", "requests answered with 4xx or 5xx",
                              ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("shopee_match_request_seconds", "request latency",
                                 ["endpoint"], registry=self.registry,
                                 buckets=(.005, .01, .025, .05, .075, .1, .15, .25, .5, 1, 2.5,
                                          5, 10))
        self.catalog = Gauge("shopee_match_catalog_listings", "listings in the catalog",
                             registry=self.registry)
        self.gray = Counter("shopee_match_gray_requests", "requests logged as gray zone",
                            registry=self.registry)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class GrayLog:
    """Appends one JSON line per gray-zone request, flushed as written (thread-safe)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.lock = threading.Lock()
        self.file = None

    def write(self, record: dict) -> None:
        if self.path is None:
            return
        line = json.dumps(record, ensure_ascii=False)
        with self.lock:
            if self.file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.file = self.path.open("a", encoding="utf-8")
            self.file.write(line + "\n")
            self.file.flush()

    def close(self) -> None:
        with self.lock:
            if self.file is not None:
                self.file.close()
                self.file = None


class AppState:
    """What the app's routes share: the service once loaded (or why it is not), the gray
    band, the limits, the metrics and the gray-zone log."""

    def __init__(self, load: Callable[[], MatchService], gray_band: GrayBand | None,
                 gray_log: str | Path | None, limits: Limits,
                 on_failure: Callable[[BaseException], None] | None):
        self.load, self.on_failure = load, on_failure
        self.service: MatchService | None = None
        self.band = gray_band
        self.limits, self.metrics, self.gray_log = limits, Metrics(), GrayLog(gray_log)
        self.status, self.detail = "loading", "starting"

    def build(self) -> None:
        """Load the service (in a background thread); its log lines become /health's
        detail meanwhile."""
        steps = _LoadingSteps(self)
        kit = logging.getLogger("shopee_match")
        kit.addHandler(steps)
        if kit.getEffectiveLevel() > logging.INFO:  # the steps are INFO lines
            kit.setLevel(logging.INFO)
        try:
            service = self.load()
            self.band = self.band or candidate_band(service)
            if self.band:
                logger.info("gray band: %s", self.band)
            else:
                logger.info("no gray band (pass --gray-band LOW,HIGH to log uncertain requests)")
            self.service = service
            self.metrics.catalog.set(len(service))
            self.status, self.detail = "ok", f"ready: candidate {service.candidate.name}"
            logger.info(self.detail)
        except BaseException as err:  # reported by /health and to the caller
            self.status, self.detail = "failed", f"{type(err).__name__}: {err}"
            logger.error("loading failed: %s", self.detail)
            if self.on_failure is not None:
                self.on_failure(err)
        finally:
            kit.removeHandler(steps)


class _LoadingSteps(logging.Handler):
    """Each INFO line the kit logs while loading, as /health's detail."""

    def __init__(self, state: AppState):
        super().__init__(logging.INFO)
        self.state = state

    def emit(self, record: logging.LogRecord) -> None:
        if self.state.status == "loading":
            self.state.detail = record.getMessage()


async def app_state(request: Request) -> AppState:
    """The state of the app serving ``request`` (async: no thread hop per request)."""
    return request.app.state.shopee_match


async def ready_service(state: Annotated[AppState, Depends(app_state)]) -> MatchService:
    """The loaded service, or a 503 saying what it is doing."""
    if state.service is None:
        raise HTTPException(503, f"the service is {state.status}: {state.detail}")
    return state.service


State = Annotated[AppState, Depends(app_state)]
Service = Annotated[MatchService, Depends(ready_service)]
router = APIRouter()


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
def health(state: State):
    """Ready (200) once the catalog is embedded, indexed and the models loaded."""
    body = Health(status=state.status, detail=state.detail)
    if state.service is None:
        return JSONResponse(body.model_dump(), status_code=503)
    body.candidate = state.service.candidate.name
    if state.service.by_title is not None:
        body.titles_candidate = state.service.by_title.candidate.name
    body.catalog_size = len(state.service)
    body.sources = state.service.sources
    return body


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}},
                             "description": "Prometheus text exposition format"}})
def prometheus(state: State):
    """Requests, errors, latency histogram and catalog size (Prometheus text format)."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(state.metrics.text(), media_type=CONTENT_TYPE_LATEST)


@router.post("/match", response_model=MatchResult, responses=LISTING_PROBLEMS)
async def match(state: State, service: Service,
                title: Annotated[str, Form(description="the listing's title")] = "",
                image: Annotated[UploadFile | None, File(description="its photo")] = None,
                source: Annotated[str, SOURCE_FIELD] = ""):
    """A listing's nearest catalog listings (of the other sources, where the catalog links
    them) and which of them the candidate matches."""
    data = await _photo(state, image, "image")
    start = time.perf_counter()
    chosen = decider(service, data is not None)

    def work():
        listing = chosen.listing(title, data, state.limits.max_image_pixels, source=source)
        return listing, chosen.match(listing)

    listing, decision = await run_in_threadpool(work)
    result = _match_result(chosen, listing, decision, state.band, start, service)
    _log_gray(state, "/match", result.gray, title=listing.title, image=data,
              neighbours=[n.model_dump() for n in result.neighbours if n.gray])
    return result


@router.post("/pair", response_model=PairResult, responses=LISTING_PROBLEMS)
async def pair(state: State, service: Service, title_a: Annotated[str, Form()] = "",
               title_b: Annotated[str, Form()] = "",
               image_a: Annotated[UploadFile | None, File()] = None,
               image_b: Annotated[UploadFile | None, File()] = None,
               source_a: Annotated[str, SOURCE_FIELD] = "",
               source_b: Annotated[str, SOURCE_FIELD] = ""):
    """Are listings a and b the same product? (each judged among the catalog's listings; of
    two different sources, where the catalog links them)"""
    data_a, data_b = await _photo(state, image_a, "image_a"), await _photo(state, image_b,
                                                                          "image_b")
    start = time.perf_counter()
    chosen = decider(service, data_a is not None and data_b is not None)
    pixels = state.limits.max_image_pixels

    def work():
        a = _field(lambda: chosen.listing(title_a, data_a, pixels, source=source_a), "a")
        b = _field(lambda: chosen.listing(title_b, data_b, pixels, source=source_b), "b")
        return a, b, chosen.pair(a, b)

    a, b, verdict = await run_in_threadpool(work)
    result = _pair_result(chosen, a, b, verdict, state.band, start, service)
    _log_gray(state, "/pair", result.gray, title_a=a.title, title_b=b.title, image_a=data_a,
              image_b=data_b, score_a_b=result.score_a_b, score_b_a=result.score_b_a,
              duplicate=result.duplicate)
    return result


@router.post("/catalog", response_model=CatalogResult, status_code=201,
             responses=LISTING_PROBLEMS | {409: {"model": Problem,
                                                 "description": "a posting_id already known"}})
async def add(state: State, service: Service,
              posting_id: Annotated[str, Form(description="a new, unique id", min_length=1,
                                              pattern=r"\S")],
              title: Annotated[str, Form()] = "",
              image: Annotated[UploadFile | None, File()] = None,
              source: Annotated[str, SOURCE_FIELD] = ""):
    """Add a listing to the in-memory catalog; answers with what it matched on arrival."""
    data = await _photo(state, image, "image")
    start = time.perf_counter()
    chosen = decider(service, data is not None)

    def work():  # into both catalogs or neither: every check before the first change
        listing = service.listing(title, data, state.limits.max_image_pixels, source=source)
        pending = service.prepare_add(posting_id, listing)
        if service.by_title is None:
            return listing, pending.commit()
        by_title = service.by_title.listing(title, None, allow_empty=True, source=source)
        pending_title = service.by_title.prepare_add(posting_id, by_title)
        decision, decided = pending.commit(), pending_title.commit()
        return (listing, decision) if chosen is service else (by_title, decided)

    listing, decision = await run_in_threadpool(work)
    state.metrics.catalog.set(len(service))
    result = _match_result(chosen, listing, decision, state.band, start, service)
    return CatalogResult(**result.model_dump(), posting_id=posting_id.strip(),
                         catalog_size=len(service))


async def measure(request: Request, call_next):
    """Middleware: refuse oversized requests before reading them, answer an unexpected error
    with a 500 (the worker keeps serving), and count every answer in the metrics."""
    state: AppState = request.app.state.shopee_match
    start = time.perf_counter()
    length = request.headers.get("content-length") or "0"
    if not length.isdigit():
        response = JSONResponse({"detail": f"bad Content-Length {length!r}"}, 400)
    elif int(length) > 2 * state.limits.max_image_bytes + 2**20:  # two photos plus fields
        response = JSONResponse({"detail": f"request of {length} bytes is too large"}, 413)
    else:
        try:
            response = await call_next(request)
        except Exception as err:  # a bug, not bad input: answered, counted, logged
            logger.exception("request failed")
            response = JSONResponse({"detail": f"internal error: {type(err).__name__}: "
                                               f"{err}"}, 500)
    route = request.scope.get("route")
    state.metrics.observe(getattr(route, "path", "other"), response.status_code,
                          time.perf_counter() - start)
    return response


async def bad_listing(request: Request, err: ListingError):
    """A listing the service cannot take: its status and message."""
    return JSONResponse({"detail": str(err)}, status_code=err.status)


async def bad_form(request: Request, err: RequestValidationError):
    """A form field missing or of the wrong kind: a 422 whose detail is one message, as
    every other problem's is (FastAPI's own is a list)."""
    said = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}"
                     for e in err.errors())
    return JSONResponse({"detail": said}, status_code=422)


def create_app(load: Callable[[], MatchService], gray_band: GrayBand | None = None,
               gray_log: str | Path | None = None, limits: Limits | None = None,
               on_failure: Callable[[BaseException], None] | None = None) -> FastAPI:
    """The FastAPI app. ``load()`` builds the service, in a background thread started by
    the app's lifespan (``/health`` shows the kit's log lines meanwhile); ``gray_band``
    overrides the band the candidate carries; ``on_failure`` is called if loading fails
    (the CLI stops the server then)."""
    from contextlib import asynccontextmanager

    state = AppState(load, gray_band, gray_log, limits or Limits(), on_failure)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=state.build, name="load-service", daemon=True).start()
        yield
        state.gray_log.close()

    app = FastAPI(title="shopee-match", lifespan=lifespan,
                  description="Is this listing a duplicate, and of what? Matches listings "
                  "(title and/or photo) against a catalog with a saved candidate.")
    app.state.shopee_match = state
    app.middleware("http")(measure)
    app.add_exception_handler(ListingError, bad_listing)
    app.add_exception_handler(RequestValidationError, bad_form)
    app.include_router(router)
    return app


async def _photo(state: AppState, upload: UploadFile | None, field: str) -> bytes | None:
    """An uploaded photo's bytes, refused (413) above the size limit."""
    if upload is None:
        return None
    limit = state.limits.max_image_bytes
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ListingError(f"{field}: the image is over the limit of {limit} bytes", 413)
    return data


def decider(service: MatchService, photos: bool) -> MatchService:
    """The service that decides a request: the title-only one when a photo is missing and
    the main candidate reads photos (its decisions then lean on titles it was not tuned on)."""
    return service if photos or service.by_title is None else service.by_title


def _by_titles_note(chosen: MatchService, main: MatchService) -> list[str]:
    if chosen is main:
        return []
    return [f"no photo: decided by the title-only candidate {chosen.candidate.name} (val F1 "
            f"{chosen.candidate.val_f1:.4f}), as {main.candidate.name} is tuned on photos too"]


def candidate_band(service: MatchService) -> GrayBand | None:
    """The gray band the candidate's reranker carries (chosen on val in notebook 05)."""
    band = getattr(service.scorer, "gray_band", None)
    return GrayBand(*band, on="cross_encoder") if band else None


def _field(build: Callable, side: str):
    try:
        return build()
    except ListingError as err:
        raise ListingError(f"listing {side}: {err}", err.status) from err


def _number(x) -> float | None:
    import math

    return None if x is None or not math.isfinite(float(x)) else round(float(x), 6)


def _threshold(service: MatchService) -> float | None:
    config = service.config
    if config.second_stage is not None:
        return config.second_stage.threshold
    return config.value if config.strategy == "static" else None


def _match_result(service: MatchService, listing, decision, band: GrayBand | None,
                  start: float, main: MatchService) -> MatchResult:
    gray = band.mask(decision) if band else [False] * len(decision.rows)
    chosen = set(decision.matches.tolist())
    neighbours = []
    for t, row in enumerate(decision.rows.tolist()):
        if row < 0:
            continue
        neighbours.append(Neighbour(
            posting_id=service.ids[row], title=service.titles[row],
            source=service.source_of(row), similarity=_number(decision.similarity[t]),
            similarities={m: _number(v[t]) for m, v in decision.similarities.items()} |
            {m: None for m in listing.missing},
            score=_number(decision.score[t]) if decision.score is not None else None,
            cross_encoder=(_number(decision.cross_encoder[t])
                           if decision.cross_encoder is not None else None),
            accepted=row in chosen, gray=bool(gray[t])))
    shown = [r for r in decision.rows.tolist() if r in chosen]  # nearest first, then the rest
    matches = [service.ids[r] for r in shown + sorted(chosen - set(shown))]
    return MatchResult(candidate=service.candidate.name, duplicate=bool(matches),
                       matches=matches, neighbours=neighbours, threshold=_threshold(service),
                       missing=listing.missing,
                       warnings=_by_titles_note(service, main) + listing.warnings,
                       gray=bool(any(gray)), milliseconds=_ms(start))


def _pair_result(service: MatchService, a, b, verdict, band: GrayBand | None,
                 start: float, main: MatchService) -> PairResult:
    def at_other(decision, key: str) -> float | None:
        where = decision.rows == decision.catalog_size
        values = getattr(decision, key)
        return _number(values[where][0]) if where.any() and values is not None else None

    gray = bool(band and any(band.mask(d)[d.rows == d.catalog_size].any()
                             for d in (verdict.a, verdict.b)))
    return PairResult(candidate=service.candidate.name, duplicate=verdict.duplicate,
                      a_accepts_b=verdict.a_accepts_b, b_accepts_a=verdict.b_accepts_a,
                      similarity=_number(verdict.similarity),
                      similarities={m: _number(v) for m, v in verdict.similarities.items()},
                      score_a_b=at_other(verdict.a, "score"),
                      score_b_a=at_other(verdict.b, "score"),
                      warnings=_by_titles_note(service, main) + [f"a: {w}" for w in a.warnings] +
                      [f"b: {w}" for w in b.warnings],
                      gray=gray, milliseconds=_ms(start))


def _ms(start: float) -> float:
    return round(1000 * (time.perf_counter() - start), 2)


def _log_gray(state: AppState, endpoint: str, gray: bool, **fields: Any) -> None:
    """One JSONL record of a gray-zone request (photos by SHA-256, not their bytes)."""
    if not gray:
        return
    state.metrics.gray.inc()
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "endpoint": endpoint}
    for key, value in fields.items():
        if isinstance(value, bytes):
            key, value = f"{key}_sha256", hashlib.sha256(value).hexdigest()
        record[key] = value
    state.gray_log.write(record)
