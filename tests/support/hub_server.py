"""A Hugging Face hub stand-in on loopback, serving model repos from local folders.

The real hub cannot be reached from the test machines, so downloads are tested against the
part of its HTTP API that huggingface_hub's `snapshot_download` speaks: the revision info,
the recursive tree listing and `resolve` (HEAD for the metadata, GET for the bytes). Each
file request is recorded, so a test can say exactly which files a download fetched.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

COMMIT = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"


@dataclass
class HubRepos:
    repos: dict[str, Path]  # repo id -> folder of its files
    downloads: list[tuple[str, str]] = field(default_factory=list)  # (repo id, file) per GET

    def files(self, repo_id: str) -> list[Path]:
        root = self.repos[repo_id]
        return sorted(p for p in root.rglob("*") if p.is_file())

    def app(self) -> Starlette:
        def repo_of(request: Request) -> str | None:
            repo_id = f"{request.path_params['org']}/{request.path_params['name']}"
            return repo_id if repo_id in self.repos else None

        def missing(repo_id: str) -> Response:
            # What the hub answers for an unknown repo: 404 with its error header.
            return JSONResponse(
                {"error": "Repository not found"},
                status_code=404,
                headers={"X-Error-Code": "RepoNotFound", "X-Error-Message": repo_id},
            )

        async def revision(request: Request) -> Response:
            repo_id = repo_of(request)
            if repo_id is None:
                return missing(request.url.path)
            root = self.repos[repo_id]
            siblings = [{"rfilename": p.relative_to(root).as_posix()} for p in self.files(repo_id)]
            return JSONResponse({"id": repo_id, "sha": COMMIT, "siblings": siblings})

        async def tree(request: Request) -> Response:
            repo_id = repo_of(request)
            if repo_id is None:
                return missing(request.url.path)
            root = self.repos[repo_id]
            entries = [
                {
                    "type": "file",
                    "oid": _oid(p),
                    "size": p.stat().st_size,
                    "path": p.relative_to(root).as_posix(),
                }
                for p in self.files(repo_id)
            ]
            return JSONResponse(entries)

        async def resolve(request: Request) -> Response:
            repo_id = repo_of(request)
            if repo_id is None:
                return missing(request.url.path)
            path = self.repos[repo_id] / request.path_params["path"]
            if not path.is_file():
                return JSONResponse(
                    {"error": "Entry not found"},
                    status_code=404,
                    headers={"X-Error-Code": "EntryNotFound"},
                )
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{_oid(path)}"'}
            if request.method == "HEAD":
                headers["Content-Length"] = str(path.stat().st_size)
                return Response(status_code=200, headers=headers)
            self.downloads.append((repo_id, request.path_params["path"]))
            return FileResponse(path, headers=headers)

        prefix = "/api/models/{org}/{name}"
        return Starlette(
            routes=[
                Route(prefix + "/revision/{revision}", revision),
                Route(prefix + "/tree/{revision}", tree),
                Route(prefix + "/tree/{revision}/{sub:path}", tree),
                Route(
                    "/{org}/{name}/resolve/{revision}/{path:path}", resolve, methods=["GET", "HEAD"]
                ),
            ]
        )


def _oid(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()
