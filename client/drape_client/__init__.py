"""drape_client: the thin, torch-free Python client apps use to call the `tryon` and `recolor` Triton ensembles."""
from .api import NO_RETRY, AsyncDrapeClient, DrapeClient, Endpoint, ModelInfo, Recolored, RetryPolicy, served_models
from .errors import BadInputError, DrapeError, RequestTimeoutError, ServerError, UnavailableError
from .images import ImageLike, describe, encode

__all__ = [
    "DrapeClient",
    "AsyncDrapeClient",
    "Endpoint",
    "RetryPolicy",
    "NO_RETRY",
    "ModelInfo",
    "Recolored",
    "ImageLike",
    "DrapeError",
    "BadInputError",
    "ServerError",
    "UnavailableError",
    "RequestTimeoutError",
    "encode",
    "describe",
    "served_models",
]
