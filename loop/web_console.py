"""The live console in the browser: ``cortexloop console``, read from the session database.

The operator's terminal shows one line per volume; the browser shows the
whole session as it goes: each run's volumes arriving (missing and late ones
marked), their processing time, the framewise displacement against a
threshold, the ROI time courses, the rounds' scores and the warnings. It
reads only the database (opened read-only), so it can run on any computer
that reaches the database, for the session in progress or any past one, and
it cannot change anything.

It serves (Starlette, on uvicorn):

- ``/`` the page; ``/plotly.min.js`` the plotting library, from the plotly
  package (nothing is fetched from the internet);
- ``/state`` the session's state now, as JSON;
- ``/stream`` the same, pushed as server-sent events whenever it changes.

Every request but the library's carries ``token=``: the console runs on the
scanner network, and the token (printed with the URL at the start) keeps
other machines on it from reading the session.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import math
import secrets
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from db import Database
from db.base import RecordNotFoundError
from db.queries import (
    list_sessions,
    roi_timeseries,
    run_volumes,
    session_events,
    session_info,
    session_runs,
    session_scores,
)

__all__ = ["ConsoleSettings", "console_app", "session_state"]

MAX_EVENTS = 50  # the newest warnings and messages shown


@dataclasses.dataclass(frozen=True)
class ConsoleSettings:
    """What the console shows: which session (None: the newest), the FD threshold, how often it looks."""

    token: str = dataclasses.field(default_factory=lambda: secrets.token_urlsafe(16))
    session: str | None = None
    fd_threshold_mm: float = 0.5
    poll_s: float = 0.5


def session_state(database: Database, ref: str | None, fd_threshold_mm: float) -> dict[str, Any]:
    """Everything the page draws, for session ``ref`` (None: the newest), as JSON-ready values."""
    with database.reader() as s:
        sessions = [x.ref for x in list_sessions(s)]
        if not sessions:
            return {"sessions": [], "session": None}
        ref = ref or sessions[-1]
        info = session_info(s, ref)
        runs = session_runs(s, info.id)
        run_rows, volumes = [], []
        for run in runs:
            volumes = run_volumes(s, run.id)  # the last run's are drawn below
            statuses = [v.status.value for v in volumes]
            run_rows.append({
                "index": run.index, "kind": run.kind, "status": run.status, "round": run.round_index,
                "planned": run.n_volumes_planned, "received": len(statuses) - statuses.count("missing"),
                "missing": statuses.count("missing"), "late": statuses.count("late"),
            })  # fmt: skip
        current: dict[str, Any] | None = None
        if runs:
            run = runs[-1]
            series = roi_timeseries(s, run.id)
            current = {
                "index": run.index,
                "tr_s": run.tr_s,
                "volume_index": [v.index for v in volumes],
                "status": [v.status.value for v in volumes],
                "processing_ms": [_ms(v.arrived_at, v.processed_at) for v in volumes],
                "fd_mm": [v.framewise_displacement_mm for v in volumes],
                "over_threshold": sum(
                    (v.framewise_displacement_mm or 0.0) > fd_threshold_mm for v in volumes
                ),
                "rois": series.roi_names,
                "roi_values": series.values,
            }
        events = [
            {"at": e.at.isoformat(timespec="seconds"), "level": e.level, "code": e.code, "message": e.message,
             "run": e.run_index}
            for e in session_events(s, info.id)
            if e.level in ("warning", "error") or e.code.startswith(("session.", "round.", "run.", "model."))
        ][-MAX_EVENTS:]  # fmt: skip
        scores = [
            {"round": x.round_index, "roi": x.roi, "metric": x.metric, "value": x.value}
            for x in session_scores(s, info.id)
            if x.round_index is not None and x.roi is not None
        ]
    return {
        "sessions": sessions,
        "session": ref,
        "status": info.status,
        "volumes": sum(r["received"] for r in run_rows),
        "runs": run_rows,
        "current": current,
        "events": events,
        "scores": scores,
        "fd_threshold_mm": fd_threshold_mm,
    }


def _ms(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    return None if start is None or end is None else round((end - start).total_seconds() * 1000, 2)


def console_app(database: Database, settings: ConsoleSettings) -> Starlette:
    """The console's web application over ``database`` (opened read-only by the caller)."""

    def allowed(request: Request) -> bool:
        return secrets.compare_digest(request.query_params.get("token", ""), settings.token)

    def refused() -> Response:
        return PlainTextResponse(
            "the console needs its token: open the URL `cortexloop console` printed", status_code=403
        )

    def state(request: Request) -> dict[str, Any]:
        ref = request.query_params.get("session") or settings.session
        return session_state(database, ref, settings.fd_threshold_mm)

    async def page(request: Request) -> Response:
        if not allowed(request):
            return refused()
        html = resources.files("loop").joinpath("web_console.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def plotly(request: Request) -> Response:
        import plotly as package

        return FileResponse(Path(package.__file__).parent / "package_data" / "plotly.min.js")

    async def now(request: Request) -> Response:
        if not allowed(request):
            return refused()
        try:
            return JSONResponse(json.loads(_dumps(await run_in_threadpool(state, request))))
        except RecordNotFoundError as exc:
            return PlainTextResponse(str(exc), status_code=404)

    async def stream(request: Request) -> Response:
        if not allowed(request):
            return refused()

        async def changes() -> AsyncIterator[str]:
            last = None
            while not await request.is_disconnected():
                try:
                    text = _dumps(await run_in_threadpool(state, request))
                except RecordNotFoundError as exc:
                    text = json.dumps({"error": str(exc)})
                if text != last:
                    yield f"data: {text}\n\n"
                    last = text
                else:
                    yield "event: alive\ndata: {}\n\n"  # the page knows the server is there
                await asyncio.sleep(settings.poll_s)

        return StreamingResponse(
            changes(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    return Starlette(
        routes=[
            Route("/", page),
            Route("/plotly.min.js", plotly),
            Route("/favicon.ico", lambda request: Response(status_code=204)),
            Route("/state", now),
            Route("/stream", stream),
        ]
    )


def _dumps(value: Any) -> str:
    """JSON a browser parses: no NaN or infinity (null instead), dates as text."""
    return json.dumps(_finite(value), default=str, allow_nan=False, separators=(",", ":"))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
