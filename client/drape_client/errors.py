"""What a call can raise, and how tritonclient / transport failures map onto it.

Apps need three decisions, so there are three families: fix the input (``BadInputError``), try later or page
someone (``ServerError`` and its ``UnavailableError``), or raise the deadline (``RequestTimeoutError``). Every
message names the call and its inputs (a path, a byte count, an array shape), because "person_image: not a
JPEG" is useless in a batch of ten thousand files unless you know which file.
"""
from __future__ import annotations

import errno
import ssl

__all__ = [
    "DrapeError",
    "BadInputError",
    "ServerError",
    "UnavailableError",
    "RequestTimeoutError",
    "classify",
]


class DrapeError(RuntimeError):
    """Base class of every failure a call raises.

    ``call`` describes the call and its inputs (e.g. ``tryon(person_image=a.jpg, garment_image=<9107 bytes>)``),
    ``status`` is the server/transport status (``StatusCode.INVALID_ARGUMENT``, ``400``, ...) or ``""``,
    ``attempts`` how many times the request was sent.
    """

    def __init__(self, message: str, *, call: str = "", status: str = "", attempts: int = 1,
                 input_name: str | None = None):
        super().__init__(f"{call}: {message}" if call else message)
        self.reason = message
        self.call = call
        self.status = status
        self.attempts = attempts
        self.input_name = input_name


class BadInputError(DrapeError, ValueError):
    """The request is unusable (INVALID_ARGUMENT / HTTP 400, or rejected before sending).

    ``input_name`` is the offending input (``person_image``...) when the server or the encoder named one.
    Retrying the same input cannot succeed.
    """


class ServerError(DrapeError):
    """The server failed to process a request it accepted (INTERNAL / HTTP 500, unknown model, ...)."""


class UnavailableError(ServerError):
    """The server could not take the request (UNAVAILABLE / RESOURCE_EXHAUSTED, HTTP 503 / 429, connection
    refused or dropped, TLS failure); raised after the retries ran out."""


class RequestTimeoutError(DrapeError, TimeoutError):
    """No answer within the per-call timeout (DEADLINE_EXCEEDED, socket timeout). Not retried: the server may
    still be working on it, and a retry would double the load exactly when the server is slow."""


# Status strings as tritonclient reports them: str(grpc.StatusCode.X) for gRPC, the HTTP code for HTTP.
_BAD_INPUT = {"StatusCode.INVALID_ARGUMENT", "400"}
_RETRYABLE = {"StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED", "503", "429"}
_TIMEOUT = {"StatusCode.DEADLINE_EXCEEDED", "504", "408"}
# The connection dropped before an answer (the server was killed or restarted mid-request). gRPC reports this as
# UNAVAILABLE; HTTP clients raise these. Names, so that no HTTP library has to be imported to recognise them.
_DROPPED_TYPES = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)
_DROPPED_NAMES = {"HTTPConnectionClosed", "RemoteDisconnected", "ServerDisconnectedError"}
_DROPPED_ERRNOS = {errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE}
_TLS_HINTS = ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed", "handshake failed", "Handshake failed",
              "WRONG_VERSION_NUMBER", "wrong version number",
              # gRPC's wording for a certificate that does not name the host dialed (grpcio >= 1.6x / older)
              "Hostname Verification Check failed", "is not in peer certificate")


def _status_and_message(exc: BaseException) -> tuple[str, str]:
    """(status, message) of a tritonclient InferenceServerException, or of any other exception."""
    status = getattr(exc, "status", None)
    message = getattr(exc, "message", None)
    if callable(status) and callable(message):  # InferenceServerException
        return str(status() or ""), str(message() or exc)
    return "", str(exc) or type(exc).__name__


def _is_tls_failure(exc: BaseException, message: str) -> bool:
    if isinstance(exc, ssl.SSLError):
        return True
    cause = getattr(exc, "os_error", None) or exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLError):
        return True
    return any(h in message for h in _TLS_HINTS)


def _is_dropped_connection(exc: BaseException) -> bool:
    for e in (exc, getattr(exc, "os_error", None), exc.__cause__):
        if e is None:
            continue
        if isinstance(e, _DROPPED_TYPES) or any(c.__name__ in _DROPPED_NAMES for c in type(e).__mro__):
            return True
        if isinstance(e, OSError) and e.errno in _DROPPED_ERRNOS:
            return True
    return False


def classify(exc: BaseException) -> tuple[type[DrapeError], str, str, bool]:
    """Map a transport exception to ``(error class, status, message, retryable)``.

    Retryable means a later attempt may succeed and sending the request again is safe: UNAVAILABLE,
    RESOURCE_EXHAUSTED, HTTP 503 / 429, a refused TCP connection (what gRPC itself reports as UNAVAILABLE), and a
    connection that dropped before the answer (the server was killed or restarted mid-request; gRPC reports that
    as UNAVAILABLE too). tryon and recolor are pure functions of their inputs, so a request that may have run
    can be sent again. A TLS failure is reported as unavailable but never retried: a certificate does not fix
    itself in a few hundred milliseconds.
    """
    status, message = _status_and_message(exc)
    if status in _BAD_INPUT:
        return BadInputError, status, message, False
    if status in _TIMEOUT or isinstance(exc, TimeoutError):
        return RequestTimeoutError, status or "timeout", message, False
    if _is_tls_failure(exc, message):
        return UnavailableError, status or "tls", f"TLS failure: {message}", False
    if status in _RETRYABLE:
        return UnavailableError, status, message, True
    if isinstance(exc, ConnectionRefusedError) or isinstance(getattr(exc, "os_error", None), ConnectionRefusedError):
        return UnavailableError, "connection refused", message, True
    if status == "" and _is_dropped_connection(exc):
        return UnavailableError, "connection dropped", message, True
    if status == "" and isinstance(exc, OSError):  # reset, unreachable, DNS: the transport, not the server logic
        return UnavailableError, type(exc).__name__, message, False
    return ServerError, status, message, False
