"""The service's worker: pending requests in batches, as `erasure run --pending` does.

With `[service] worker_interval = "60s"` (off by default) `create_app`'s lifespan calls
`start(app)`: an asyncio task that, right away and then `worker_interval` seconds after each
tick ends, runs one tick in a thread (`asyncio.to_thread`):

- it takes the ledger's run lock (`Ledger.exclusive`, the lock `erasure run` takes); if a CLI
  run (or another service process's worker) holds it, the tick is skipped and logged, and the
  next one tries again;
- it runs every request `run --pending` would take (`pending_request_ids`), RUN_CHUNK (5,000)
  at a time, each chunk by a new `Runner(engine).run(chunk)`, as the CLI does; holds,
  approvals and the policy are enforced by the Runner, so a held or unapproved request waits;
- it acts as the actor "service-worker" (every ledger entry it appends names it);
- after each chunk, for every request of the chunk whose effective status (what
  `erasure status` shows) changed, it calls `webhooks.status_changed`.

`stop(app, task)` asks the loop to stop and waits for it: a chunk being run is finished (a
thread cannot be interrupted safely; the Runner records each step, so a SIGKILL instead is
safe too: the next start resumes from the ledger), no further chunk or tick starts. Then the
webhook outboxes get up to 5 seconds to empty; what is left is sent at the next start.

`app.state.worker_status` (a WorkerStatus) holds the last tick's time, how many requests it
ran, the totals, the skips for the lock and the last error; each tick is also logged
(logger "erasure.service.worker"), by request counts and ids, never a subject id.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger("erasure.service.worker")

ACTOR = "service-worker"
SHUTDOWN_WEBHOOKS = 5.0     # seconds the outboxes get to empty at shutdown


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class WorkerStatus:
    interval: int                               # seconds between the end of a tick and the next
    running: bool = False                       # a tick is running now
    ticks: int = 0                              # ticks that took the lock
    skipped_locked: int = 0                     # ticks skipped: another run held the lock
    last_tick_at: str | None = None             # when the last tick started
    last_tick_seconds: float | None = None
    last_tick_requests: int = 0                 # requests the last tick ran
    last_tick_outcomes: dict[str, int] = field(default_factory=dict)   # by outcome status
    requests_run: int = 0                       # requests run since the start (with repeats)
    status_changes: int = 0                     # effective status changes seen (webhooks sent)
    last_skipped_at: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Control:
    stop: threading.Event
    wake: asyncio.Event


def _statuses(eng: Any, ids: list[str]) -> dict[str, str]:
    """Each request's effective status, as `erasure status` and the API show it."""
    from ..requests import load_states

    holds = eng.holds()
    required = eng.config.approvals_required
    return {rid: st.effective_status(required, holds)
            for rid, st in load_states(eng.ledger, ids).items()}


def tick(config: Any, status: WorkerStatus, stop: threading.Event | None = None) -> int | None:
    """One tick (blocking): run every pending request in chunks under the ledger's lock.
    Returns how many requests it ran, or None when another run held the lock."""
    from ..cli import RUN_CHUNK
    from ..engine import Engine
    from ..errors import ErasureError, RetryableError
    from ..execution import Runner
    from ..requests import pending_request_ids
    from . import webhooks

    if getattr(config, "ledger_url", None) is None and not config.ledger_path.exists():
        return 0                    # no SQLite ledger yet: no request (and no key created here)
    t0 = time.perf_counter()
    eng = Engine(config, actor=ACTOR)
    ran = 0
    outcomes: dict[str, int] = {}
    skipped = False
    try:
        with ExitStack() as stack:
            try:
                stack.enter_context(eng.ledger.exclusive())
            except RetryableError:
                status.skipped_locked += 1
                status.last_skipped_at = _now()
                log.info("worker: another run holds the ledger lock; tick skipped")
                skipped = True
                return None
            status.running = True
            status.ticks += 1
            status.last_tick_at = _now()
            ids = pending_request_ids(eng.ledger)
            for i in range(0, len(ids), RUN_CHUNK):
                if stop is not None and stop.is_set():
                    log.info("worker: stopping; %d pending request(s) left for the next start",
                             len(ids) - i)
                    break
                chunk = ids[i:i + RUN_CHUNK]
                before = _statuses(eng, chunk)
                for o in Runner(eng).run(chunk):
                    outcomes[o.status] = outcomes.get(o.status, 0) + 1
                ran += len(chunk)
                status.requests_run += len(chunk)
                after = _statuses(eng, chunk)
                changed = [(rid, s) for rid, s in after.items() if before.get(rid) != s]
                for rid, s in changed:
                    webhooks.status_changed(config, rid, s, actor=ACTOR)
                status.status_changes += len(changed)
                log.info("worker: ran %d request(s) (%d to %d of %d pending): %s; %d status "
                         "change(s)", len(chunk), i + 1, i + len(chunk), len(ids),
                         ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) or "-",
                         len(changed))
    except Exception as exc:
        # an engine error's message names no subject; anything else: its class only
        msg = str(exc) if isinstance(exc, ErasureError) else type(exc).__name__
        status.last_error, status.last_error_at = msg, _now()
        log.error("worker: tick failed after %d request(s): %s", ran, msg)
    finally:
        eng.close()
        status.running = False
        if not skipped:
            status.last_tick_requests = ran
            status.last_tick_outcomes = outcomes
            status.last_tick_seconds = round(time.perf_counter() - t0, 3)
    return ran


async def _loop(config: Any, status: WorkerStatus, ctl: _Control) -> None:
    interval = float(config.service.worker_interval)
    while not ctl.stop.is_set():
        try:
            await asyncio.to_thread(tick, config, status, ctl.stop)
        except Exception as exc:       # tick catches its own; this is the thread pool failing
            status.last_error, status.last_error_at = type(exc).__name__, _now()
            log.error("worker: %s", type(exc).__name__)
        if ctl.stop.is_set():
            break
        try:
            await asyncio.wait_for(ctl.wake.wait(), timeout=interval)
        except asyncio.TimeoutError:
            pass


def _log_to_stderr() -> None:
    """uvicorn configures its own loggers only: unless the host application configured
    logging, the worker's and the webhooks' INFO lines go to stderr next to uvicorn's."""
    svc = logging.getLogger("erasure.service")
    if svc.handlers or logging.getLogger().handlers:
        return
    h = logging.StreamHandler()
    h.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    svc.addHandler(h)
    svc.setLevel(logging.INFO)


def start(app: Any) -> Any:
    """Start the worker task (when `[service] worker_interval` is set); its handle. Also
    resumes webhook deliveries a previous process left in the outbox."""
    from . import webhooks

    config = app.state.config
    status = WorkerStatus(interval=int(config.service.worker_interval))
    ctl = _Control(threading.Event(), asyncio.Event())
    app.state.worker_status = status
    app.state.worker_control = ctl
    _log_to_stderr()
    webhooks.resume(config)
    log.info("worker: every %d s, as %s", status.interval, ACTOR)
    return asyncio.get_running_loop().create_task(_loop(config, status, ctl),
                                                  name="erasure-worker")


async def stop(app: Any, task: Any) -> None:
    """Stop scheduling ticks and chunks, wait for the chunk being run to finish, then give the
    webhook outboxes a few seconds to empty."""
    from . import webhooks

    ctl: _Control | None = getattr(app.state, "worker_control", None)
    if ctl is None:
        task.cancel()
        return
    ctl.stop.set()
    ctl.wake.set()
    status: WorkerStatus | None = getattr(app.state, "worker_status", None)
    if status is not None and status.running:
        log.info("worker: waiting for the current batch to finish")
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        # the server is being torn down: the thread still finishes its batch on its own
        pass
    await asyncio.to_thread(webhooks.shutdown, SHUTDOWN_WEBHOOKS)
