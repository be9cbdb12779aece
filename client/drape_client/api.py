"""Thin typed client for the `tryon` and `recolor` ensembles: gRPC by default, HTTP selectable, sync and asyncio.

    from drape_client import DrapeClient
    with DrapeClient("localhost:8001") as c:                     # or "grpcs://host:443", "https://host"
        rgb = c.tryon("person.jpg", "garment.jpg")              # uint8 [H, W, 3], the person's size
        rgb, mask = c.recolor(on_model_array, still_pil_image)  # uint8 [H, W, 3], uint8 [H, W] (255 = garment)

    async with AsyncDrapeClient("localhost:8001") as c:
        rgb = await c.tryon(person_bytes, "garment.png", timeout_s=5)

One client holds one connection (a gRPC channel, or an HTTP keep-alive pool) for its lifetime: create it once
and share it. A `DrapeClient` may be shared by threads (over HTTP each thread gets its own pooled connection,
because tritonclient's HTTP client is single-threaded). Returned arrays are read-only views of the response
buffer (no copy); ``.copy()`` one to modify it.

Failures raise :mod:`drape_client.errors` types that name the call and its inputs. Only UNAVAILABLE /
RESOURCE_EXHAUSTED (HTTP 503 / 429) and refused or dropped connections are retried, with capped exponential
backoff and full jitter (so a fleet of clients does not retry in lockstep); bad input, server faults and timeouts
are not.
Torch-free: importing this package pulls in numpy, Pillow and tritonclient only.
"""
from __future__ import annotations

import asyncio
import random
import re
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Literal, NamedTuple, Sequence

import numpy as np

from drape_core import contract

from .errors import BadInputError, DrapeError, UnavailableError, classify
from .images import ImageLike, describe, encode

__all__ = ["Protocol", "Endpoint", "RetryPolicy", "NO_RETRY", "ModelInfo", "Recolored", "DrapeClient",
           "AsyncDrapeClient", "served_models"]

Protocol = Literal["grpc", "http"]
_SCHEMES = {"grpc": ("grpc", False), "grpcs": ("grpc", True), "http": ("http", False), "https": ("http", True)}
_LONG_S = 24 * 3600.0  # transport-level timeouts: the per-call deadline is enforced separately
_INT32_MAX = 2**31 - 1


def _grpc_channel_args() -> list[tuple[str, int]]:
    """tritonclient's default channel options, plus a 1 s cap on gRPC's reconnect backoff.

    gRPC waits 1 s, then x1.6 per failed connection attempt (up to 120 s), before dialing an address that refused
    it again. After a server restart (tens of seconds) a client would keep failing, or keep retrying, up to ~20 s
    after the server is back (measured: tests/reliability/faults.py server-restart, RELIABILITY.md).
    """
    return [("grpc.max_send_message_length", _INT32_MAX), ("grpc.max_receive_message_length", _INT32_MAX),
            ("grpc.keepalive_time_ms", _INT32_MAX), ("grpc.keepalive_timeout_ms", 20000),
            ("grpc.keepalive_permit_without_calls", 0), ("grpc.http2.max_pings_without_data", 2),
            ("grpc.initial_reconnect_backoff_ms", 250), ("grpc.min_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 1000)]


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: ``protocol``, ``address`` (``host:port``) and whether TLS is on.

    ``grpcs://`` and ``https://`` turn TLS on, with certificate verification (against the system roots or the
    client's ``ca_certs``); a bare ``host:port`` uses ``protocol`` (default gRPC) in plaintext.
    """

    protocol: Protocol
    address: str
    tls: bool = False

    @classmethod
    def parse(cls, url: str, protocol: Protocol | None = None) -> "Endpoint":
        scheme, sep, rest = url.partition("://")
        if not sep:
            proto = protocol or "grpc"
            if proto not in ("grpc", "http"):
                raise ValueError(f"protocol must be 'grpc' or 'http', got {proto!r}")
            return cls(proto, url.rstrip("/"), False)
        if scheme.lower() not in _SCHEMES:
            raise ValueError(f"{url!r}: unknown scheme {scheme!r}; use grpc://, grpcs://, http:// or https://")
        proto, tls = _SCHEMES[scheme.lower()]
        if protocol is not None and protocol != proto:
            raise ValueError(f"{url!r} is a {proto} URL but protocol={protocol!r} was asked for")
        if not rest.strip("/"):
            raise ValueError(f"{url!r} has no host")
        return cls(proto, rest.rstrip("/"), tls)

    def __str__(self) -> str:
        return f"{self.protocol}{'s' if self.tls else ''}://{self.address}"


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` sends at most (1 = never retry); the n-th retry waits ``uniform(0, min(cap_s, base_s * 2**n))``.

    Full jitter spreads a burst of clients that all saw the same 503 over the whole backoff window.
    """

    attempts: int = 4
    base_s: float = 0.1
    cap_s: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_s < 0 or self.cap_s < 0:
            raise ValueError(f"invalid retry policy {self}")

    def backoff_s(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        return (rng or random).uniform(0.0, min(self.cap_s, self.base_s * (2 ** retry)))


NO_RETRY = RetryPolicy(attempts=1)


@dataclass(frozen=True)
class ModelInfo:
    """A model as its (unrestricted) metadata endpoint describes it, and whether it is ready to serve."""

    name: str
    versions: tuple[str, ...]
    platform: str
    ready: bool


def served_models() -> tuple[str, ...]:
    """Every model behind the public ensembles: the ensembles, their pre/post models and networks (contract order)."""
    names: list[str] = []
    for spec in contract.ENSEMBLES.values():
        for name in (spec.name, spec.preprocess_model, *spec.networks, spec.postprocess_model):
            if name not in names:
                names.append(name)
    return tuple(names)


class Recolored(NamedTuple):
    """``recolor`` result; unpacks as ``image, mask``."""

    image: np.ndarray  # uint8 [H, W, 3] RGB, the on-model image's size
    mask: np.ndarray   # uint8 [H, W], 255 on the garment


# ----------------------------------------------------------------------------- shared request logic


@dataclass(frozen=True)
class _Request:
    spec: contract.EnsembleSpec
    arrays: tuple[tuple[str, np.ndarray], ...]  # (input name, uint8 [1, n_bytes])
    call: str                                   # "tryon(person_image=a.jpg, garment_image=<12 bytes>)"


def _prepare(spec: contract.EnsembleSpec, images: Sequence[ImageLike]) -> _Request:
    """Encode every input once (retries resend the same bytes); bad inputs fail here, before any network I/O."""
    call = f"{spec.name}({', '.join(f'{n}={describe(i)}' for n, i in zip(spec.input_names, images))})"
    arrays = []
    for name, image in zip(spec.input_names, images):
        try:
            data = encode(image, name)
        except BadInputError as exc:
            raise BadInputError(exc.reason, call=call, input_name=name) from None
        if not data:
            raise BadInputError(f"{name}: empty input (0 bytes)", call=call, input_name=name)
        if len(data) > contract.MAX_IMAGE_BYTES:   # the server refuses it too, but only after buffering it all
            raise BadInputError(f"{name}: encoded image is {len(data)} bytes, over the {contract.MAX_IMAGE_BYTES}-byte "
                                "limit of the contract", call=call, input_name=name)
        arrays.append((name, np.frombuffer(data, dtype=np.uint8)[None, :]))
    return _Request(spec, tuple(arrays), call)


def _tc_inputs(tc: Any, request: _Request) -> tuple[list, list]:
    inputs = []
    for name, arr in request.arrays:
        inp = tc.InferInput(name, list(arr.shape), "UINT8")
        inp.set_data_from_numpy(arr)
        inputs.append(inp)
    return inputs, [tc.InferRequestedOutput(o) for o in request.spec.output_names]


def _named_input(spec: contract.EnsembleSpec, message: str) -> str | None:
    """The input a server error message names (``... person_image: not a JPEG``), if any."""
    for name in spec.input_names:
        if re.search(rf"\b{re.escape(name)}:", message):
            return name
    return None


def _error(exc: BaseException, call: str, attempts: int, spec: contract.EnsembleSpec | None) -> DrapeError:
    cls, status, message, _ = classify(exc)
    named = _named_input(spec, message) if spec is not None else None
    return cls(message, call=call, status=status, attempts=attempts, input_name=named)


def _outputs(result: Any, spec: contract.EnsembleSpec) -> tuple[np.ndarray, ...]:
    """Drop the contract's leading batch axis of 1."""
    return tuple(result.as_numpy(o)[0] for o in spec.output_names)


def _model_info(meta: dict, ready: bool) -> ModelInfo:
    versions = tuple(sorted((str(v) for v in meta.get("versions", [])), key=lambda v: (len(v), v)))
    return ModelInfo(str(meta.get("name", "")), versions, str(meta.get("platform", "")), bool(ready))


def _ssl_context(ca_certs: str | None) -> ssl.SSLContext:
    """A verifying client context: hostname checked, certificate required."""
    return ssl.create_default_context(cafile=ca_certs)


# ------------------------------------------------------------------------------------ sync client


class DrapeClient:
    """Blocking client. ``timeout_s`` is the default per-call deadline (each attempt); calls may override it."""

    def __init__(self, url: str = "localhost:8001", protocol: Protocol | None = None, timeout_s: float = 60.0, *,
                 retry: RetryPolicy = RetryPolicy(), ca_certs: str | None = None):
        self.endpoint = Endpoint.parse(url, protocol)
        self.protocol: Protocol = self.endpoint.protocol
        self.timeout_s = float(timeout_s)
        self.retry = retry
        self.ca_certs = ca_certs
        self._lock = threading.Lock()
        self._http_clients: list[Any] = []
        self._local = threading.local()
        self._closed = False
        if self.protocol == "grpc":
            import tritonclient.grpc as tc

            # ssl=True: gRPC verifies the server certificate against ca_certs, or its default roots.
            self._grpc = tc.InferenceServerClient(self.endpoint.address, ssl=self.endpoint.tls,
                                                  root_certificates=ca_certs, channel_args=_grpc_channel_args())
        else:
            import tritonclient.http as tc

            self._grpc = None
        self._tc = tc

    # -- connection management

    def _http(self) -> Any:
        """This thread's HTTP client (tritonclient's HTTP client must not be shared across threads)."""
        client = getattr(self._local, "client", None)
        if client is None:
            if self._closed:
                raise RuntimeError("DrapeClient is closed")
            client = self._tc.InferenceServerClient(
                self.endpoint.address, connection_timeout=min(self.timeout_s, 30.0), network_timeout=_LONG_S,
                ssl=self.endpoint.tls, insecure=False,
                ssl_options={"ca_certs": self.ca_certs} if (self.endpoint.tls and self.ca_certs) else None)
            self._local.client = client
            with self._lock:
                self._http_clients.append(client)
        return client

    def _drop_http(self) -> None:
        """Forget this thread's HTTP connection after a timeout: it may hold half a response."""
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            with self._lock:
                if client in self._http_clients:
                    self._http_clients.remove(client)
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail; it is gone either way
                pass

    def _run(self, fn: Callable[[Any], Any], timeout_s: float) -> Any:
        """Run one transport call with a total deadline of ``timeout_s``."""
        if self._grpc is not None:
            return fn(self._grpc)
        import gevent

        client = self._http()
        try:
            with gevent.Timeout(timeout_s, TimeoutError(f"no response within {timeout_s:g} s")):
                return fn(client)
        except TimeoutError:
            self._drop_http()
            raise

    def close(self) -> None:
        """Close every connection this client opened. Idempotent."""
        self._closed = True
        if self._grpc is not None:
            self._grpc.close()
        with self._lock:
            clients, self._http_clients = self._http_clients, []
        for client in clients:
            client.close()

    def __enter__(self) -> "DrapeClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inference

    def infer(self, spec: contract.EnsembleSpec, images: Sequence[ImageLike],
              timeout_s: float | None = None) -> tuple[np.ndarray, ...]:
        """Run ensemble ``spec`` on ``images`` (``spec.input_names`` order); outputs in ``spec.output_names`` order."""
        request = _prepare(spec, images)
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        inputs, outputs = _tc_inputs(self._tc, request)
        kw = {"client_timeout": timeout} if self._grpc is not None else {}
        for attempt in range(1, self.retry.attempts + 1):
            try:
                result = self._run(lambda c: c.infer(spec.name, inputs, outputs=outputs, **kw), timeout)
                return _outputs(result, spec)
            except Exception as exc:  # noqa: BLE001 - classified below; unknown kinds become ServerError
                retryable = classify(exc)[3]
                if not retryable or attempt == self.retry.attempts:
                    raise _error(exc, request.call, attempt, spec) from exc
            time.sleep(self.retry.backoff_s(attempt - 1))
        raise AssertionError("unreachable")

    def tryon(self, person: ImageLike, garment: ImageLike, *, timeout_s: float | None = None) -> np.ndarray:
        """The person wearing the garment: uint8 RGB ``[H, W, 3]`` at the person image's size."""
        return self.infer(contract.TRYON, (person, garment), timeout_s)[0]

    def recolor(self, on_model: ImageLike, still: ImageLike, *, timeout_s: float | None = None) -> Recolored:
        """The on-model photo in the still's garment colour, and the garment mask (255 on the garment)."""
        image, mask = self.infer(contract.RECOLOR, (on_model, still), timeout_s)
        return Recolored(image, mask)

    # -- health and metadata

    def _meta(self, what: str, fn: Callable[[Any], Any], timeout_s: float | None) -> Any:
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        kw = {"client_timeout": timeout} if self._grpc is not None else {}
        try:
            return self._run(lambda c: fn(c, **kw), timeout)
        except Exception as exc:  # noqa: BLE001
            raise _error(exc, f"{what} at {self.endpoint}", 1, None) from exc

    def live(self, timeout_s: float | None = 5.0) -> bool:
        """Whether the server process answers at all."""
        try:
            return bool(self._meta("live", lambda c, **kw: c.is_server_live(**kw), timeout_s))
        except DrapeError:
            return False

    def ready(self, models: Sequence[str] = tuple(contract.ENSEMBLES), timeout_s: float | None = 5.0) -> bool:
        """Whether the server and ``models`` (default: both ensembles) are ready; never raises."""
        try:
            return bool(self._meta("ready", lambda c, **kw: c.is_server_ready(**kw), timeout_s)) and all(
                self._meta("ready", lambda c, **kw: c.is_model_ready(m, **kw), timeout_s) for m in models)
        except DrapeError:
            return False

    def wait_ready(self, timeout_s: float = 60.0, poll_s: float = 0.5) -> None:
        """Block until :meth:`ready`; raise :class:`UnavailableError` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self.ready(timeout_s=min(5.0, timeout_s)):
            if time.monotonic() >= deadline:
                raise UnavailableError(f"not ready after {timeout_s:g} s", call=f"wait_ready at {self.endpoint}")
            time.sleep(poll_s)

    def server_metadata(self, timeout_s: float | None = None) -> dict[str, Any]:
        """``{"name", "version", "extensions"}`` of the server."""
        if self._grpc is not None:
            return dict(self._meta("server_metadata", lambda c, **kw: c.get_server_metadata(as_json=True, **kw),
                                   timeout_s))
        return dict(self._meta("server_metadata", lambda c, **kw: c.get_server_metadata(), timeout_s))

    def model(self, name: str, timeout_s: float | None = None) -> ModelInfo:
        """Versions, platform and readiness of one model (metadata API: open, unlike the repository index)."""
        if self._grpc is not None:
            meta = self._meta(f"model {name}", lambda c, **kw: c.get_model_metadata(name, as_json=True, **kw),
                              timeout_s)
            ready = self._meta(f"model {name}", lambda c, **kw: c.is_model_ready(name, **kw), timeout_s)
        else:
            meta = self._meta(f"model {name}", lambda c, **kw: c.get_model_metadata(name), timeout_s)
            ready = self._meta(f"model {name}", lambda c, **kw: c.is_model_ready(name), timeout_s)
        return _model_info(meta, ready)

    def models(self, names: Sequence[str] | None = None, timeout_s: float | None = None) -> list[ModelInfo]:
        """:meth:`model` for ``names`` (default: the ensembles and every model they run)."""
        return [self.model(n, timeout_s) for n in (names or served_models())]

    def model_versions(self, names: Sequence[str] | None = None,
                       timeout_s: float | None = None) -> dict[str, list[str]]:
        """Versions per model, e.g. ``{"tryon": ["1"], "gmm": ["1"], ...}``: what an app logs next to its results."""
        return {m.name: list(m.versions) for m in self.models(names, timeout_s)}


# ----------------------------------------------------------------------------------- async client


class _AsyncGrpc:
    """Awaitable face of a blocking ``tritonclient.grpc`` client: the subset :class:`AsyncDrapeClient` calls."""

    def __init__(self, client: Any):
        self._client = client

    async def infer(self, model_name: str, inputs: list, *, outputs: list, client_timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def settle(result: Any, error: Any) -> None:  # runs on a gRPC thread
            def resolve() -> None:
                if done.cancelled():
                    return
                if error is not None:
                    done.set_exception(error)
                else:
                    done.set_result(result)
            loop.call_soon_threadsafe(resolve)

        self._client.async_infer(model_name, inputs, settle, outputs=outputs, client_timeout=client_timeout)
        return await done

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._client, name)   # is_server_ready, get_model_metadata, ...: blocking, short

        async def call(*args: Any, **kw: Any) -> Any:
            return await asyncio.to_thread(method, *args, **kw)
        return call

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)



class AsyncDrapeClient:
    """asyncio twin of :class:`DrapeClient`.

    HTTP runs on ``tritonclient.http.aio`` (aiohttp). gRPC runs on the thread-safe ``tritonclient.grpc`` channel:
    inference through its callback-based ``async_infer`` resolved into asyncio futures, metadata calls in a worker
    thread. (``grpc.aio`` was tried first: in a process that also uses the blocking gRPC stack it intermittently
    never completed a call, which no retry policy can fix.) The connection is opened on first use, inside the
    running event loop; use one client per loop.
    """

    def __init__(self, url: str = "localhost:8001", protocol: Protocol | None = None, timeout_s: float = 60.0, *,
                 retry: RetryPolicy = RetryPolicy(), ca_certs: str | None = None, max_connections: int = 100):
        self.endpoint = Endpoint.parse(url, protocol)
        self.protocol: Protocol = self.endpoint.protocol
        self.timeout_s = float(timeout_s)
        self.retry = retry
        self.ca_certs = ca_certs
        self.max_connections = max_connections
        self._client: Any = None
        if self.protocol == "grpc":
            import tritonclient.grpc as tc
        else:
            import tritonclient.http.aio as tc
        self._tc = tc

    def _conn(self) -> Any:
        if self._client is None:
            if self.protocol == "grpc":
                self._client = _AsyncGrpc(self._tc.InferenceServerClient(
                    self.endpoint.address, ssl=self.endpoint.tls, root_certificates=self.ca_certs,
                    channel_args=_grpc_channel_args()))
            else:
                self._client = self._tc.InferenceServerClient(
                    self.endpoint.address, conn_limit=self.max_connections, conn_timeout=_LONG_S,
                    ssl=self.endpoint.tls, ssl_context=_ssl_context(self.ca_certs) if self.endpoint.tls else None)
        return self._client

    async def _run(self, fn: Callable[[Any], Awaitable[Any]], timeout_s: float) -> Any:
        if self.protocol == "grpc":
            return await fn(self._conn())
        try:
            return await asyncio.wait_for(fn(self._conn()), timeout_s)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no response within {timeout_s:g} s") from None

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def __aenter__(self) -> "AsyncDrapeClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def infer(self, spec: contract.EnsembleSpec, images: Sequence[ImageLike],
                    timeout_s: float | None = None) -> tuple[np.ndarray, ...]:
        """See :meth:`DrapeClient.infer`."""
        request = _prepare(spec, images)
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        inputs, outputs = _tc_inputs(self._tc, request)
        kw = {"client_timeout": timeout} if self.protocol == "grpc" else {}
        for attempt in range(1, self.retry.attempts + 1):
            try:
                result = await self._run(lambda c: c.infer(spec.name, inputs, outputs=outputs, **kw), timeout)
                return _outputs(result, spec)
            except Exception as exc:  # noqa: BLE001
                if not classify(exc)[3] or attempt == self.retry.attempts:
                    raise _error(exc, request.call, attempt, spec) from exc
            await asyncio.sleep(self.retry.backoff_s(attempt - 1))
        raise AssertionError("unreachable")

    async def tryon(self, person: ImageLike, garment: ImageLike, *, timeout_s: float | None = None) -> np.ndarray:
        return (await self.infer(contract.TRYON, (person, garment), timeout_s))[0]

    async def recolor(self, on_model: ImageLike, still: ImageLike, *, timeout_s: float | None = None) -> Recolored:
        image, mask = await self.infer(contract.RECOLOR, (on_model, still), timeout_s)
        return Recolored(image, mask)

    async def _meta(self, what: str, fn: Callable[..., Awaitable[Any]], timeout_s: float | None) -> Any:
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        kw = {"client_timeout": timeout} if self.protocol == "grpc" else {}
        try:
            return await self._run(lambda c: fn(c, **kw), timeout)
        except Exception as exc:  # noqa: BLE001
            raise _error(exc, f"{what} at {self.endpoint}", 1, None) from exc

    async def live(self, timeout_s: float | None = 5.0) -> bool:
        try:
            return bool(await self._meta("live", lambda c, **kw: c.is_server_live(**kw), timeout_s))
        except DrapeError:
            return False

    async def ready(self, models: Sequence[str] = tuple(contract.ENSEMBLES), timeout_s: float | None = 5.0) -> bool:
        try:
            if not await self._meta("ready", lambda c, **kw: c.is_server_ready(**kw), timeout_s):
                return False
            for m in models:
                if not await self._meta("ready", lambda c, **kw: c.is_model_ready(m, **kw), timeout_s):
                    return False
            return True
        except DrapeError:
            return False

    async def wait_ready(self, timeout_s: float = 60.0, poll_s: float = 0.5) -> None:
        deadline = time.monotonic() + timeout_s
        while not await self.ready(timeout_s=min(5.0, timeout_s)):
            if time.monotonic() >= deadline:
                raise UnavailableError(f"not ready after {timeout_s:g} s", call=f"wait_ready at {self.endpoint}")
            await asyncio.sleep(poll_s)

    async def server_metadata(self, timeout_s: float | None = None) -> dict[str, Any]:
        if self.protocol == "grpc":
            return dict(await self._meta("server_metadata",
                                         lambda c, **kw: c.get_server_metadata(as_json=True, **kw), timeout_s))
        return dict(await self._meta("server_metadata", lambda c, **kw: c.get_server_metadata(), timeout_s))

    async def model(self, name: str, timeout_s: float | None = None) -> ModelInfo:
        if self.protocol == "grpc":
            meta = await self._meta(f"model {name}", lambda c, **kw: c.get_model_metadata(name, as_json=True, **kw),
                                    timeout_s)
        else:
            meta = await self._meta(f"model {name}", lambda c, **kw: c.get_model_metadata(name), timeout_s)
        ready = await self._meta(f"model {name}", lambda c, **kw: c.is_model_ready(name, **kw), timeout_s)
        return _model_info(meta, ready)

    async def models(self, names: Sequence[str] | None = None, timeout_s: float | None = None) -> list[ModelInfo]:
        return [await self.model(n, timeout_s) for n in (names or served_models())]

    async def model_versions(self, names: Sequence[str] | None = None,
                             timeout_s: float | None = None) -> dict[str, list[str]]:
        return {m.name: list(m.versions) for m in await self.models(names, timeout_s)}
