"""The FastAPI application: factory, lifespan (database, broker, ingest, upkeep), error mapping."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from server.api.responses import ERROR_RESPONSES
from server.api.routes import (
    alerts,
    approvals,
    auth,
    customers,
    devices,
    enroll,
    incidents,
    keys,
    knowledge,
    kpis,
    maintenance,
    notify,
    preferences,
    session_heartbeat,
    session_observers,
    session_sockets,
    sessions,
    surveys,
    telemetry,
    tokens,
    users,
    voice,
)
from server.api.routes import audit as audit_routes
from server.config import ServerSettings
from server.crud import InvalidInput
from server.db import create_schema, make_engine
from shared import __version__
from shared.errors import (
    AuthError,
    Conflict,
    FieldlinkError,
    InvalidDeviceId,
    NotFound,
    UnavailableError,
)

logger = logging.getLogger(__name__)

_STATUS_OF_ERROR: list[tuple[type[FieldlinkError], int]] = [
    (NotFound, 404),
    (Conflict, 409),
    (AuthError, 401),
    (InvalidInput, 422),
    (InvalidDeviceId, 422),
    (UnavailableError, 503),
]


async def _fieldlink_error(_request: Request, exc: Exception) -> Response:
    for error_type, status_code in _STATUS_OF_ERROR:
        if isinstance(exc, error_type):
            return JSONResponse({"detail": str(exc)}, status_code=status_code)
    return JSONResponse({"detail": str(exc)}, status_code=400)


def _scrape_token_valid(request: Request, settings: ServerSettings) -> bool:
    """Whether the request presents ``metrics_token`` as a bearer token (constant time)."""
    from server.security import tokens_equal

    expected = settings.metrics_token
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if not expected or scheme.lower() != "bearer" or not presented:
        return False
    return tokens_equal(presented.strip(), expected.get_secret_value())


def api_router() -> APIRouter:
    """Every ``/api/v1`` route."""
    router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)
    router.include_router(auth.router)
    router.include_router(preferences.router)
    router.include_router(tokens.router)
    router.include_router(devices.router)
    router.include_router(telemetry.router)
    router.include_router(enroll.router)
    router.include_router(incidents.router)
    router.include_router(alerts.router)
    router.include_router(knowledge.router)
    router.include_router(voice.router)  # /kpis/voice, before /kpis's own paths
    router.include_router(kpis.router)
    router.include_router(audit_routes.router)
    router.include_router(sessions.router)
    router.include_router(session_observers.router)
    router.include_router(session_sockets.router)
    router.include_router(approvals.router)
    router.include_router(session_heartbeat.router)
    router.include_router(keys.router)
    router.include_router(users.router)
    router.include_router(customers.router)
    router.include_router(maintenance.router)
    router.include_router(surveys.router)
    router.include_router(notify.router)
    return router


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the database, start the broker (when embedded) and ingest; stop them on exit."""
    settings: ServerSettings = app.state.settings
    async with AsyncExitStack() as stack:
        from server.notify.worker import check_notify

        check_notify(settings)  # a bad rule stops the start with one line
        engine = make_engine(settings.database_url)
        stack.callback(engine.dispose)
        await asyncio.to_thread(create_schema, engine)
        app.state.engine = engine
        from server.kpi.metrics import register_kpi_collector
        from server.metrics import BUSINESS_REGISTRY

        try:
            kpi_collector = register_kpi_collector(engine, settings)
        except ValueError:
            # Another app in this process (tests) already serves the KPI gauges.
            logger.debug("KPI gauges already registered in this process")
        else:
            stack.callback(BUSINESS_REGISTRY.unregister, kpi_collector)
        from server.kpi.voice_metrics import register_voice_collector

        try:
            voice_collector = register_voice_collector(engine)
        except ValueError:
            logger.debug("voice gauges already registered in this process")
        else:
            stack.callback(BUSINESS_REGISTRY.unregister, voice_collector)
        from server.upkeep import PkiUpkeep, Upkeep

        # The periodic jobs; started before the MQTT clients, so that a CRL or a
        # certificate that ran out while the server was down is renewed first.
        pki = PkiUpkeep(settings, engine=engine)
        try:
            await pki.pki_check()  # before any MQTT client dials the broker
        except Exception:  # the job runs again from the upkeep; startup goes on
            logger.exception("the PKI check at startup failed")
        upkeep = Upkeep(pki.jobs())
        await upkeep.start()
        stack.push_async_callback(upkeep.stop)
        app.state.upkeep = upkeep
        if settings.smtp.host:
            from server.surveys.mail import MAIL_JOB, add_mail_job

            add_mail_job(upkeep, engine, settings)  # new surveys and their one reminder
            stack.push_async_callback(upkeep.remove, MAIL_JOB)
        broker_url = settings.broker_url
        if broker_url == "embedded":
            from server.embedded_broker import EmbeddedBroker

            broker = EmbeddedBroker(settings.state_dir, settings.embedded_broker_port)
            await broker.start()
            stack.push_async_callback(broker.stop)
            broker_url = broker.url
        app.state.broker_url = broker_url
        from provisioning.pki import CaNotInitialized
        from server.commands import CommandPublisher
        from server.ingest.service import IngestService

        broker_settings = settings.model_copy(update={"broker_url": broker_url})
        commands: CommandPublisher | None
        try:
            commands = await asyncio.to_thread(CommandPublisher.from_ca, broker_settings, engine)
        except CaNotInitialized:
            logger.warning("no CA yet: signed commands are off until `fieldlink ca init`")
            commands = None
        if commands is not None:
            await commands.start()
            stack.push_async_callback(commands.stop)
        app.state.commands = commands
        from server.ingest.service import default_instance_id
        from server.sessions.liveness import InstanceLiveness
        from server.sessions.service import SessionService

        instance = settings.instance_id or default_instance_id()
        # Started before the sessions and stopped after them: the row goes once they are closed.
        liveness = InstanceLiveness(
            engine,
            instance,
            heartbeat_s=settings.instance_heartbeat_s,
            dead_after_s=settings.instance_dead_after_s,
        )
        await liveness.start()
        stack.push_async_callback(liveness.stop)
        from server.upkeep import LIVENESS_JOB, FleetUpkeep, liveness_job

        upkeep.add(liveness_job(liveness))
        # Stopped before the row is removed: a late beat would write it again.
        stack.push_async_callback(upkeep.remove, LIVENESS_JOB)
        session_manager = SessionService(
            settings, engine, commands, app.state.session_registry, instance=instance
        )
        session_manager.liveness = liveness
        liveness.on_judged_dead = session_manager.end_swept
        await session_manager.start()
        stack.push_async_callback(session_manager.stop)
        from server.upkeep import ACCESS_JOB, access_job

        upkeep.add(access_job(session_manager.access))
        session_manager.access.wake = lambda: upkeep.wake(ACCESS_JOB)
        # Stopped before the sessions close at shutdown.
        stack.push_async_callback(upkeep.remove, ACCESS_JOB)
        from server.sessions.heartbeat import HEARTBEAT_JOB, OperatorHeartbeat
        from server.upkeep import Job

        heartbeats = OperatorHeartbeat(session_manager, settings.operator_heartbeat_timeout_s)
        upkeep.add(Job(HEARTBEAT_JOB, heartbeats.interval_s, heartbeats.sweep, at_start=False))
        stack.push_async_callback(upkeep.remove, HEARTBEAT_JOB)
        app.state.sessions = session_manager
        from server.gateway import start_gateway

        gateway = await start_gateway(session_manager, settings, engine)
        if gateway is not None:
            stack.push_async_callback(gateway.stop)
        app.state.ssh_gateway_port = gateway.port if gateway is not None else None
        from server.ingest.resend import GapResender, resend_via
        from server.ingest.via import gateway_of

        resender = (
            GapResender(resend_via(commands, partial(gateway_of, engine)))
            if commands is not None
            else None
        )
        if resender is not None:
            stack.push_async_callback(resender.stop)
        ingest = IngestService(
            broker_settings,
            engine,
            on_command_result=commands.deliver_result if commands is not None else None,
            on_session_event=session_manager.on_session_event,
            on_gap=resender.on_gap if resender is not None else None,
        )
        await ingest.start()
        stack.push_async_callback(ingest.stop)
        app.state.ingest = ingest
        fleet = FleetUpkeep(broker_settings, engine, lock=ingest.db_lock)
        fleet_jobs = fleet.jobs()
        for job in fleet_jobs:
            upkeep.add(job)
        # Stopped before the ingest: no device is judged silent while nothing is read.
        stack.push_async_callback(upkeep.remove, *(job.name for job in fleet_jobs))
        from server.notify.worker import NotifyWorker
        from server.upkeep import NOTIFY_JOB, notify_job

        upkeep.add(notify_job(NotifyWorker(broker_settings, engine)))
        stack.push_async_callback(upkeep.remove, NOTIFY_JOB)
        # What startup allocated lives as long as the process: keep it out of the
        # collector's way (fewer and shorter GC pauses on the ingest path).
        gc.freeze()
        app.state.ready = True
        logger.info(
            "server %s ready on database %s",
            __version__,
            engine.url.render_as_string(hide_password=True),
        )
        yield
        app.state.ready = False


def create_app(settings: ServerSettings) -> FastAPI:
    """Build the application for ``settings``; the lifespan does the I/O."""
    app = FastAPI(
        title="fieldlink",
        version=__version__,
        description="Remote maintenance for installed equipment.",
        lifespan=lifespan,
        docs_url=None,  # served from the package's own files: see server.web.apidocs
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.ready = False
    app.add_exception_handler(FieldlinkError, _fieldlink_error)
    from server.api.request_guard import RequestGuard

    app.add_middleware(RequestGuard, max_body_bytes=settings.max_request_body_bytes)
    if settings.access_log:
        from server.access_log import AccessLogMiddleware, open_access_log

        open_access_log(settings.access_log_file)
        app.add_middleware(AccessLogMiddleware)
    app.include_router(api_router())
    from server.sessions.registry import SessionRegistry
    from server.sessions.relay import SessionRelay

    # The agents' tunnels: authenticated by the one-time session token, not a user.
    app.state.session_registry = SessionRegistry()
    app.state.sessions = None
    relay = SessionRelay(app.state.session_registry)
    app.add_api_websocket_route("/api/v1/tunnel/{session_id}", relay.endpoint, name="tunnel")
    from server.web import mount_console

    mount_console(app)  # the web console at /, its files at /static
    from server.surveys.page import router as survey_page

    app.include_router(survey_page)  # the customers' survey page, without login
    from server.web.apidocs import mount_api_docs

    mount_api_docs(app)  # Swagger UI at /docs, ReDoc at /redoc, no CDN

    @app.get("/healthz", tags=["ops"], include_in_schema=True)
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    def readyz(request: Request) -> JSONResponse:
        """Readiness: the database answers and ingest is connected."""
        checks: dict[str, str] = {}
        engine = getattr(request.app.state, "engine", None)
        try:
            if engine is None:
                msg = "not started"
                raise RuntimeError(msg)
            with engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # any failure means not ready
            checks["database"] = f"error: {type(exc).__name__}"
        ingest = getattr(request.app.state, "ingest", None)
        if ingest is not None:
            checks["broker"] = "ok" if ingest.ready.is_set() else "disconnected"
        ready = request.app.state.ready and all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def metrics(request: Request) -> Response:
        """Prometheus metrics: operational; with the ``metrics_token`` bearer, business too."""
        from server.metrics import render_metrics

        business = _scrape_token_valid(request, settings)
        body, content_type = render_metrics(business=business)
        return Response(body, media_type=content_type)

    @app.get(
        "/metrics/business",
        tags=["ops"],
        response_class=PlainTextResponse,
        responses={
            401: {"description": "no or wrong scrape token (Authorization: Bearer)"},
            404: {"description": "no metrics_token is configured"},
        },
    )
    def business_metrics(request: Request) -> Response:
        """The fleet's size and the KPIs for Prometheus: needs ``metrics_token`` as a bearer."""
        from server.metrics import render_metrics

        if not settings.metrics_token:
            return JSONResponse(
                {"detail": "business metrics are off: set metrics_token"}, status_code=404
            )
        if not _scrape_token_valid(request, settings):
            return JSONResponse(
                {"detail": "a valid scrape token is required"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        body, content_type = render_metrics(operational=False, business=True)
        return Response(body, media_type=content_type)

    return app
