"""drape_client: the thin Python client apps use to call the `tryon` and `recolor` Triton ensembles."""
from .api import BadInputError, DrapeClient, DrapeError, ServerError, encode

__all__ = ["DrapeClient", "DrapeError", "BadInputError", "ServerError", "encode"]
