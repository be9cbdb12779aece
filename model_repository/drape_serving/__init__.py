"""Serving tools, run beside Triton rather than inside it: the launcher (``server``, ``drape-serve``; finding and
preparing the Triton install and its environment in ``triton``), the request-size gateway (``gateway``), the health
probe (``health``), the TensorRT plan check (``plan_check``), the in-process reference pipeline (``reference``) and
their shared process helpers (``procs``). What the python models import at run time is ``drape_runtime``.
"""
