"""The ASGI app: the route table's routes over :class:`~.api.HttpApi`'s handlers, each
behind its role check, the auth and edge middleware, the error handlers, and the
lifespan that starts and stops the analyses' history feeder and the service."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from duckflock.database import Database
from duckflock.errors import DuckflockError, ForbiddenError
from duckflock.server.auth import AuthMiddleware, allows
from duckflock.server.http.api import STATUS_TYPES, HttpApi, json_response
from duckflock.server.http.edge import Edge
from duckflock.server.routes import PUBLIC_PATHS, ROUTES
from duckflock.server.service import Service
from duckflock.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app", "starlette_routes"]


Endpoint = Callable[[Request], Awaitable[Response]]
_PATHS_KEPT = 1024  # request paths whose hot-route match HotRoutes keeps


def _by_method(endpoints: dict[str, Endpoint]) -> Endpoint:
    if len(endpoints) == 1:
        return next(iter(endpoints.values()))

    async def dispatch(request: Request) -> Response:
        return await endpoints[request.method](request)

    return dispatch


def _needs(role: str, endpoint: Endpoint, checked: bool) -> Endpoint:
    """``endpoint`` behind the check that the caller's role is at least ``role`` (a
    tokenless server, loopback only, lets everything through)."""

    async def guarded(request: Request) -> Response:
        if checked and not allows(request.scope.get("duckflock.role"), role):
            raise ForbiddenError(f"this needs a token with the {role} role")
        return await endpoint(request)

    guarded.__name__ = endpoint.__name__
    return guarded


class HotRoutes:
    """The route table's ``hot`` routes, dispatched ahead of Starlette's exception layer
    and router: the same endpoint behind the same role check, and the same rendering of
    a :class:`DuckflockError`, without the router's walk over every route's pattern and
    the per-request wrappers around it (what else escapes goes to the edge's 500, as
    from the router). Sits inside the auth and edge middleware, so both still apply."""

    def __init__(
        self,
        app: ASGIApp,
        hot: list[tuple[Route, Endpoint]],
        render: Callable[[DuckflockError], Response],
    ) -> None:
        self.app = app
        self.hot = hot
        self.render = render
        # (method, root path, path) -> the hot route it fully matches with its child scope
        # (None: none does), as Route.matches found it: a regex match and the path
        # parameters' conversion less per request; bounded (further paths are matched
        # each time)
        self._found: dict[tuple[str, str, str], tuple[Route, Endpoint, Scope] | None] = {}

    def _match(self, scope: Scope) -> tuple[Route, Endpoint, Scope] | None:
        key = (scope["method"], scope.get("root_path", ""), scope["path"])
        if key in self._found and "path_params" not in scope:
            return self._found[key]
        found = None
        for route, endpoint in self.hot:
            match, child = route.matches(scope)
            if match is Match.FULL:
                found = route, endpoint, child
                break
        if len(self._found) < _PATHS_KEPT and "path_params" not in scope:
            self._found[key] = found
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            found = self._match(scope)
            if found is not None:
                route, endpoint, child = found
                # what the router leaves (the edge reads the route); params copied, as
                # Route.matches makes them per request
                scope.update(child, path_params=dict(child["path_params"]), route=route)
                try:
                    response = await endpoint(Request(scope, receive, send))
                except DuckflockError as exc:
                    response = self.render(exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class App(Starlette):
    """Starlette without its outermost ``ServerErrorMiddleware`` (two calls and a send
    wrapper per request): :class:`~.edge.Edge`, outermost now, already turns whatever
    escapes into a 500 and keeps the connection; what escapes the edge itself reaches
    uvicorn, which answers 500 as that layer did."""

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        return stack.app if isinstance(stack, ServerErrorMiddleware) else stack


def create_app(
    db: Database,
    settings: ServerSettings | None = None,
    *,
    service: Service | None = None,
    on_shutdown: Callable[[], None] | None = None,
) -> Starlette:
    """The ASGI app serving ``db`` over ``service`` (the serving service it shares with
    the Postgres port; made from ``db`` and ``settings`` when not given). ``on_shutdown``
    runs (in a thread) when it stops; ``app.state.begin_shutdown()`` begins the service's
    shutdown: running queries are interrupted and waits end, on every protocol."""
    if service is None:
        service = Service(db, settings)
    elif service.db is not db or (settings is not None and settings != service.settings):
        raise ValueError("create_app: the service serves another database or settings")
    api = HttpApi(service)

    async def on_duckflock_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DuckflockError)
        return api.render_error(exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind = STATUS_TYPES.get(exc.status_code, "HTTPError")
        body = {"error": {"type": kind, "message": exc.detail}}
        return json_response(body, exc.status_code, dict(exc.headers or {}))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        api.feeder.start()
        yield
        service.stop()  # first: running queries are interrupted, waits end
        await api.feeder.stop()
        if on_shutdown is not None:
            await run_in_threadpool(on_shutdown)

    routes, hot = _routes(api)
    app = App(
        routes=routes,
        exception_handlers={DuckflockError: on_duckflock_error, HTTPException: on_http_error},
        lifespan=lifespan,
    )
    app.add_middleware(HotRoutes, hot=hot, render=api.render_error)
    app.add_middleware(
        AuthMiddleware,
        tokens=service.tokens,
        render=api.render_error,
        public=PUBLIC_PATHS,
        client_key=service.client_key,
        backoff=service.backoff,
    )
    app.add_middleware(Edge, metrics=service.metrics, render=api.render_error)
    app.state.db = db
    app.state.service = service
    app.state.metrics = service.metrics
    app.state.guard = service.guard
    app.state.begin_shutdown = service.stop
    app.state.slots = service.queries
    app.state.history = api.kept
    return app


def starlette_routes(api: HttpApi) -> list[Route]:
    """The Starlette routes of the route table, each handler behind its role check;
    one Starlette route per path (a 405's Allow header names all its methods)."""
    return _routes(api)[0]


def _routes(api: HttpApi) -> tuple[list[Route], list[tuple[Route, Endpoint]]]:
    """The Starlette routes, and the hot ones' (route, endpoint) for :class:`HotRoutes`
    (a hot route's path serves that one method: another method reaches the router,
    which answers 405)."""
    checked = bool(api.service.tokens)
    by_path: dict[str, dict[str, Endpoint]] = {}
    for spec in ROUTES:
        endpoint: Endpoint = getattr(api, spec.handler)
        if spec.role is not None:
            endpoint = _needs(spec.role, endpoint, checked)
        by_path.setdefault(spec.path, {})[spec.method] = endpoint
    routes = {
        path: Route(path, _by_method(endpoints), methods=list(endpoints))
        for path, endpoints in by_path.items()
    }
    hot = [(routes[s.path], by_path[s.path][s.method]) for s in ROUTES if s.hot]
    if any(len(routes[route.path].methods or ()) > 1 for route, _ in hot):
        raise ValueError("a hot route's path serves one method")
    return list(routes.values()), hot
