"""The FastAPI app over the engine: routers, problem+json errors and the body-size limit.

`create_app(config_path)` loads and checks the config once (a bad one fails at start, exit 3
from `erasure serve`); each HTTP request gets its own Engine (`engine_for`), acting as the
caller. The OpenAPI document is at /openapi.json.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from .problems import PROBLEM_JSON, Problem, from_erasure_error


def create_app(config_path: Path) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from ..config import load_config
    from ..errors import ErasureError

    config = load_config(config_path)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from . import worker

        task = worker.start(app) if config.service.worker_interval else None
        if task is None and config.service.webhooks:
            from . import webhooks

            # deliveries a killed process left in the outbox go out now, not only at the
            # next status change (the worker resumes them itself when it runs)
            await asyncio.to_thread(webhooks.resume, config)
        try:
            yield
        finally:
            if task is not None:
                await worker.stop(app, task)        # also lets webhook deliveries finish
            elif config.service.webhooks:
                from . import webhooks

                await asyncio.to_thread(webhooks.shutdown)

    app = FastAPI(title="erasure", version="1", lifespan=lifespan,
                  description="GDPR Article 17 erasure requests, lineage and proof.")
    app.state.config = config
    app.state.config_path = config_path

    def problem(request: Request, p: Problem) -> JSONResponse:
        return JSONResponse(p.body(str(request.url.path)), status_code=p.status,
                            headers=p.headers, media_type=PROBLEM_JSON)

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem(request, exc)

    @app.exception_handler(ErasureError)
    async def _erasure(request: Request, exc: ErasureError) -> JSONResponse:
        return problem(request, from_erasure_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # the field paths and messages, never the values sent (they may hold a subject id)
        where = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}"
                          for e in exc.errors()[:10])
        return problem(request, Problem(422, "Unprocessable Content", where))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(request, Problem(exc.status_code, str(exc.detail), str(exc.detail)))

    limit = config.service.max_body

    @app.middleware("http")
    async def _body_limit(request: Request, call_next: Any) -> Any:
        n = request.headers.get("content-length")
        if n is not None and (not n.isdigit() or int(n) > limit):
            return problem(request, Problem(413, "Content Too Large",
                                            f"the body limit is {limit} bytes"))
        return await call_next(request)

    from . import api, dashboard

    app.include_router(api.router)
    app.include_router(dashboard.router)
    return app


def serve(config_path: Path, host: str, port: int) -> None:
    """Serve the app with uvicorn until Ctrl-C or SIGTERM."""
    import uvicorn

    uvicorn.run(create_app(config_path), host=host, port=port, log_level="info")


def engine_for(request: Any, actor: str | None) -> Any:
    """An Engine for one HTTP request, acting as `actor` (close it when done)."""
    from ..engine import Engine

    return Engine(request.app.state.config, actor=actor)
