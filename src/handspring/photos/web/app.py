"""The photo-search web app: the page, the JSON API behind it, thumbnails and originals.

Routes follow the original photo-search tool where it makes sense: a text search
with `limit`, `offset` and a filter `{minScore, notBefore, notAfter, onThisDay}`,
"show similar" for a photo id, and originals and EXIF-upright thumbnails by id.
Files are only ever found through the index (by id, never by a path from the
request), so nothing outside the indexed photos can be read.
"""

from __future__ import annotations

import datetime as dt
import mimetypes
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from handspring.errors import HandspringError, ImageError
from handspring.photos.search.searcher import Searcher, parse_query
from handspring.photos.stores.records import Hit, Photo, SearchFilter
from handspring.photos.stores.store import PhotoStore
from handspring.photos.stores.stored_paths import display_path
from handspring.photos.web.auth import (
    AuthConfig,
    AuthError,
    AuthUnavailable,
    BearerAuthenticator,
    Principal,
)
from handspring.photos.web.file_state import STATUS, file_state
from handspring.photos.web.library_routes import library_routes, undated_excluded
from handspring.photos.web.models import (
    MAX_LIMIT,
    MAX_OFFSET,
    HealthOut,
    ModelsOut,
    PhotoDetail,
    ResultsPage,
    SearchRequest,
    SimilarQuery,
    StatusOut,
    WarmupOut,
    detail_of,
    hit_of,
)
from handspring.photos.web.thumbnails import ThumbnailCache, bucket_size

STATIC = Path(__file__).parent / "static"
_EXTRA_TYPES = {".heic": "image/heic", ".heif": "image/heif", ".webp": "image/webp"}
# The page loads only its own files; thumbnails and originals arrive as blob: URLs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; script-src 'self'; "
    "style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
T = TypeVar("T")
# Declared for the OpenAPI schema; `create_app` checks the header itself, to answer in JSON.
BEARER = HTTPBearer(
    auto_error=False,
    description="An API key or an OIDC access token, as `Authorization: Bearer <token>`.",
)


def mime_type_of(path: str) -> str:
    suffix = Path(path).suffix.lower()
    return _EXTRA_TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # A message may name a file whose name is not valid UTF-8, which JSON cannot carry.
    body = {"message": display_path(message)}
    return JSONResponse(body, status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = list(error.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]  # where in the request is plain from the field's name
        where = ".".join(str(p) for p in loc)
        parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts) or "invalid request"


def create_app(
    store: PhotoStore,
    searcher: Searcher,
    *,
    auth: AuthConfig | None = None,
    thumbnail_cache: Path,
    allowed_hosts: Sequence[str] | None = None,
) -> FastAPI:
    """The ASGI app serving the UI at `/` and the JSON API under `/api`.

    auth: API keys and/or OIDC; when given, every `/api` route needs
        `Authorization: Bearer <key or token>` (the page and `/_health` stay open).
    thumbnail_cache: folder for resized photos (created on demand).
    allowed_hosts: Host header values accepted (None: any). Serving on loopback,
        pass the loopback names so a web page cannot reach the API by DNS rebinding.
    """
    app = FastAPI(
        title="Handspring photos",
        summary="Search a photo library by text or by example photo.",
        docs_url=None,  # the bundled docs pages load their scripts from a CDN
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    if getattr(searcher, "allow_paths", False):
        # Example photos by path would let a request make the server read any file.
        raise ValueError("the web app needs a Searcher with allow_paths=False")
    thumbnails = ThumbnailCache(thumbnail_cache)
    authenticator = BearerAuthenticator(auth) if auth else None
    # One search at a time: the models load on first use and ONNX Runtime already
    # spreads one query over every core. The lock also serialises store access.
    lock = threading.Lock()

    def locked(call: Callable[[], T]) -> T:
        with lock:
            return call()

    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable) -> Response:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        if request.url.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "private, no-store")
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _describe_validation(exc))

    def require_auth(
        request: Request,
        _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> Principal | None:
        assert authenticator is not None
        try:
            return authenticator.authenticate(request.headers.get("authorization"))
        except AuthError as exc:
            raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc
        except AuthUnavailable as exc:
            raise HTTPException(503, str(exc)) from exc

    api = APIRouter(prefix="/api", dependencies=[Depends(require_auth)] if authenticator else [])

    def indexed(photo_id: int) -> Photo:
        photo = locked(lambda: store.get(photo_id))
        if photo is None:
            raise HTTPException(404, f"photo {photo_id} is not in the index")
        return photo

    def file_as_indexed(photo: Photo) -> Path:
        """The photo's file, if it is still the one indexed; otherwise a clear error."""
        state = file_state(photo)
        if state.state != "ok":
            raise HTTPException(STATUS[state.state], state.message)
        return Path(photo.path)

    def page(
        hits: list[Hit], limit: int, offset: int, flt: SearchFilter, like: int | None = None
    ) -> ResultsPage:
        """`like`: the photo a "similar" search is about, which its results leave out."""
        # One more hit than asked is fetched, to know whether there is a next page.
        more = len(hits) > limit
        total = excluded = None
        if offset == 0:  # counted once per result set, on its first page
            if flt.min_score is None:
                total = locked(lambda: store.count(flt))
                reference = locked(lambda: store.get(like)) if like is not None else None
                if reference is not None and flt.admits(reference):
                    total -= 1
            excluded = locked(lambda: undated_excluded(store, flt))
        return ResultsPage(
            results=[hit_of(hit) for hit in hits[:limit]],
            limit=limit,
            offset=offset,
            next_offset=offset + limit if more else None,
            total=total,
            undated_excluded=excluded,
        )

    def run_search(call: Callable[[], list[Hit]]) -> list[Hit]:
        try:
            return locked(call)
        except KeyError as exc:
            raise HTTPException(404, str(exc.args[0]) if exc.args else "not found") from exc
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        except HandspringError as exc:
            raise HTTPException(500, str(exc)) from exc

    @api.post("/search", response_model=ResultsPage, summary="Search by text or example photos")
    def search(request: SearchRequest) -> ResultsPage:
        try:
            terms = parse_query(request.query)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        flt = request.filter.to_search_filter()
        hits = run_search(
            lambda: searcher.search(terms, flt, limit=request.limit + 1, offset=request.offset)
        )
        alone = len(terms) == 1 and terms[0].kind == "photo_id" and terms[0].weight > 0
        like = int(terms[0].value) if alone else None
        return page(hits, request.limit, request.offset, flt, like)

    @api.get(
        "/photos/{photo_id}/similar",
        response_model=ResultsPage,
        summary="Photos similar to an indexed photo (the photo itself excluded)",
    )
    def similar(photo_id: int, query: Annotated[SimilarQuery, Query()]) -> ResultsPage:
        flt = query.to_search_filter()
        hits = run_search(
            lambda: searcher.similar(photo_id, flt, limit=query.limit + 1, offset=query.offset)
        )
        return page(hits, query.limit, query.offset, flt, photo_id)

    @api.get("/photos/{photo_id}", response_model=PhotoDetail, summary="One photo's metadata")
    def photo_detail(photo_id: int) -> PhotoDetail:
        photo = indexed(photo_id)
        return detail_of(photo, mime_type_of(photo.path), file_state(photo))

    @api.get(
        "/photos/{photo_id}/thumbnail",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, 304: {"description": "Not modified"}},
        summary="The photo resized (longest side `size`, rounded up), upright per EXIF, as JPEG",
    )
    def thumbnail(
        photo_id: int, request: Request, size: Annotated[int, Query(ge=16, le=4096)] = 256
    ) -> Response:
        photo = indexed(photo_id)
        source = file_as_indexed(photo)
        size = bucket_size(size)
        headers = {"ETag": f'"{photo.sha256}-{size}"', "Cache-Control": "private, max-age=86400"}
        if request.headers.get("if-none-match") == headers["ETag"]:
            return Response(status_code=304, headers=headers)
        try:
            path = thumbnails.get(source, photo.sha256, size)
        except ImageError as exc:
            raise HTTPException(422, f"photo {photo.id}: {exc}") from exc
        return FileResponse(path, media_type="image/jpeg", headers=headers)

    @api.get(
        "/photos/{photo_id}/original",
        response_class=FileResponse,
        responses={200: {"content": {"image/*": {}}}},
        summary="The photo's file as indexed",
    )
    def original(photo_id: int, request: Request) -> Response:
        photo = indexed(photo_id)
        source = file_as_indexed(photo)
        headers = {"ETag": f'"{photo.sha256}"', "Cache-Control": "private, max-age=86400"}
        if request.headers.get("if-none-match") == headers["ETag"]:
            return Response(status_code=304, headers=headers)
        return FileResponse(
            source,
            media_type=mime_type_of(photo.path),
            filename=display_path(source.name),
            content_disposition_type="inline",
            headers=headers,
        )

    @api.get("/status", response_model=StatusOut, summary="What the index holds")
    def status() -> StatusOut:
        stats = locked(store.stats)
        changed = stats.last_change
        return StatusOut(
            photos=stats.photos,
            errors=stats.errors,
            last_change=dt.datetime.fromtimestamp(changed, tz=dt.UTC) if changed else None,
            models=models_out(),
            max_limit=MAX_LIMIT,
            max_offset=MAX_OFFSET,
        )

    def models_out() -> ModelsOut:
        models = searcher.models
        return ModelsOut(
            image=models.image_model, text=models.text_model, text_loaded=models.text_loaded
        )

    warming = threading.Lock()

    @api.post(
        "/warmup",
        response_model=WarmupOut,
        summary="Start loading the text model now (the page asks when the search box is "
        "focused), so the first search does not wait for it",
    )
    def warmup() -> WarmupOut:
        models = searcher.models
        if not models.text_loaded and warming.acquire(blocking=False):

            def load() -> None:
                try:
                    models.text()
                except Exception:  # the search that needs it reports the reason
                    pass
                finally:
                    warming.release()

            threading.Thread(target=load, name="text-model-warmup", daemon=True).start()
        return WarmupOut(text_loaded=models.text_loaded)

    api.include_router(library_routes(store, locked))
    app.include_router(api)

    @app.get("/_health", response_model=HealthOut, include_in_schema=False)
    def health() -> HealthOut:
        return HealthOut(status="healthy")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(exc).__name__}")

    return app
