"""What tritonserver needs to run: the install inside the nvidia-pytriton wheel, its environment, its command line.

:func:`find_triton` locates the wheel's ``tritonserver`` binary, python backend and the python-backend stub for this
interpreter; :func:`prepare_backend_dir` copies the backend once into a writable directory with that stub next to
``libtriton_python.so`` (the module docstring of :mod:`drape_serving.server` says why). :func:`python_shm_bytes`
sizes the python backend's shared memory, :func:`malloc_preload` picks the allocator preloaded into tritonserver,
``_server_env`` / ``_server_command`` build the process environment and the command line, and the admin-key
helpers restrict the admin APIs (``RESTRICTED_APIS``) behind ``ADMIN_HEADER``. :mod:`drape_serving.server`, the
launcher, starts the process; it re-exports these names.

Torch-free by design: importing this module pulls in only the standard library.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from drape_core import contract

__all__ = [
    "TritonInstall",
    "ServerStartError",
    "find_triton",
    "prepare_backend_dir",
    "python_shm_bytes",
    "malloc_preload",
    "MALLOC_LIBS",
    "admin_key_from_env",
    "ADMIN_HEADER",
    "ADMIN_KEY_ENV",
    "RESTRICTED_APIS",
    "DEFAULT_EXIT_TIMEOUT_S",
]

DEFAULT_EXIT_TIMEOUT_S = 15
_MIB = 1024 * 1024
ADMIN_KEY_ENV = "DRAPE_ADMIN_KEY"
ADMIN_HEADER = "drape-admin-key"
_GRPC_HEADER_PREFIX = "triton-grpc-protocol-"  # Triton prefixes restricted-protocol keys on gRPC
RESTRICTED_APIS = ("model-repository", "shared-memory", "statistics", "trace", "logging")
_ADMIN_KEY_FORM = re.compile(r"^[A-Za-z0-9_\-.~]{16,256}$")


class ServerStartError(RuntimeError):
    """tritonserver could not be started or did not become ready; the message carries its log tail."""


# ------------------------------------------------------------------ locating triton


@dataclass(frozen=True)
class TritonInstall:
    """The pieces of tritonserver inside the installed nvidia-pytriton wheel."""

    binary: Path
    python_backend: Path  # backends/python: libtriton_python.so + triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub for this interpreter's Python version
    lib_dir: Path  # shared libraries the binary links against
    version: str

    @property
    def python_tag(self) -> str:
        return f"{sys.version_info.major}.{sys.version_info.minor}"


def find_triton() -> TritonInstall:
    """Locate tritonserver, its python backend and the stub for this Python inside nvidia-pytriton."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError("nvidia-pytriton is not installed; install the 'serve' extra (pip install -e '.[serve]')")
    package = Path(next(iter(spec.submodule_search_locations)))
    root = package / "tritonserver"
    tag = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        binary=root / "bin" / "tritonserver",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / tag / "triton_python_backend_stub",
        lib_dir=package.parent / "nvidia_pytriton.libs",
        version=_pytriton_version(),
    )
    for path in (install.binary, install.python_backend / "libtriton_python.so", install.stub):
        if not path.exists():
            raise ServerStartError(f"nvidia-pytriton install is incomplete: {path} not found (Python {tag} supported?)")
    return install


def _pytriton_version() -> str:
    try:
        return importlib.metadata.version("nvidia-pytriton")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _default_backend_root() -> Path:
    """``<checkout>/build/triton_backends`` when running from a checkout, else a user cache dir."""
    override = os.environ.get("DRAPE_TRITON_BACKENDS")
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parent.parent.parent
    if (checkout / "pyproject.toml").is_file() and os.access(checkout, os.W_OK):
        return checkout / "build" / "triton_backends"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "drape" / "triton_backends"


def prepare_backend_dir(install: TritonInstall | None = None, root: str | Path | None = None) -> Path:
    """Return a ``--backend-directory`` whose ``python/`` holds the backend plus the matching stub.

    Copied once per (pytriton version, Python version); later calls reuse it.
    The copy is made in a temp dir and renamed, so concurrent starts are safe.
    """
    install = install or find_triton()
    root = Path(root) if root is not None else _default_backend_root()
    backend_dir = root / f"pytriton-{install.version}-py{install.python_tag}"
    marker = backend_dir / "python" / ".complete"
    if marker.is_file():
        return backend_dir
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".backend-", dir=root))
    try:
        shutil.copytree(install.python_backend, staging / "python", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(install.stub, staging / "python" / "triton_python_backend_stub")
        (staging / "python" / ".complete").write_text(f"{install.python_backend}\n{install.stub}\n")
        try:
            staging.rename(backend_dir)
        except OSError:
            if not marker.is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return backend_dir


def python_shm_bytes(height: int = 1024, width: int = 768) -> int:
    """Initial shared-memory size per python-model instance, sized for one 1024x768 request.

    The largest single request a python model handles is the try-on network
    (``tom``: 27 input + 4 output channels of FP32 at the model resolution,
    ~93 MiB at 1024x768). Starting there avoids regrowing the region on the
    first request; batches grow it further in ``shm-growth-byte-size`` steps.
    The region is sparse tmpfs, so unused size costs no memory.
    """
    channels = max(
        sum(c for _, c in spec.inputs) + sum(c for _, c in spec.outputs) for spec in contract.NETWORKS.values()
    )
    needed = channels * height * width * 4
    step = 16 * _MIB
    return -(-needed // step) * step


# ------------------------------------------------------------- environment, command line


# Triton's documentation recommends tcmalloc (or jemalloc) over glibc malloc: with glibc, per-thread arenas keep
# the high-water mark of every request size ever seen, and a soak with mixed payloads (up to 2048x1536) grew the
# server's RSS for 8 minutes before it plateaued (RELIABILITY.md, "Soak"). The NGC image ships libtcmalloc.so.4;
# here `apt-get install libtcmalloc-minimal4`. DRAPE_TRITON_MALLOC=auto (default) | glibc | /path/to/lib.so
MALLOC_LIBS = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libjemalloc.so.2")
_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")


def malloc_preload(choice: str | None = None) -> str | None:
    """The allocator library to LD_PRELOAD into tritonserver (and its stubs), or None for glibc malloc."""
    choice = choice or os.environ.get("DRAPE_TRITON_MALLOC", "auto")
    if choice == "glibc":
        return None
    if choice != "auto":
        if not Path(choice).is_file():
            raise FileNotFoundError(f"DRAPE_TRITON_MALLOC={choice}: no such library")
        return choice
    for name in MALLOC_LIBS:
        for folder in _LIB_DIRS:
            if (Path(folder) / name).is_file():
                return str(Path(folder) / name)
    return None


def _server_env(install: TritonInstall) -> dict[str, str]:
    env = dict(os.environ)
    libs = [str(install.lib_dir)] + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else [])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    preload = malloc_preload()
    if preload:
        env["LD_PRELOAD"] = os.pathsep.join([preload] + ([env["LD_PRELOAD"]] if env.get("LD_PRELOAD") else []))
    # The stub runs the first `python` on PATH: make it this interpreter (do not resolve venv symlinks).
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir] + [p for p in env.get("PATH", "").split(os.pathsep) if p and p != bin_dir])
    return env


def _has_nvidia_gpu() -> bool:
    return Path("/dev/nvidiactl").exists()


def _server_command(
    install: TritonInstall,
    backend_dir: Path,
    model_repository: Path,
    ports: tuple[int, int, int],
    address: str,
    extra_args: Iterable[str],
    admin_key: str = "",
    metrics_address: str | None = None,
) -> list[str]:
    http_port, grpc_port, metrics_port = ports
    shm_prefix = f"drape_{os.getpid()}_{secrets.token_hex(4)}_"  # unique per server: two servers must not share regions
    shm_default = python_shm_bytes()
    return [
        str(install.binary),
        f"--model-repository={model_repository}",
        f"--backend-directory={backend_dir}",
        f"--http-address={address}",
        f"--http-port={http_port}",
        f"--grpc-address={address}",
        f"--grpc-port={grpc_port}",
        f"--metrics-address={address if metrics_address is None else metrics_address}",
        f"--metrics-port={metrics_port}",
        "--allow-gpu-metrics=false",
        "--metrics-config=summary_latencies=true",  # latency quantiles for monitoring/rules (as in k8s)
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
        f"--backend-config=python,shm-default-byte-size={shm_default}",
        f"--backend-config=python,shm-growth-byte-size={64 * _MIB}",
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--model-control-mode=none",
        "--log-verbose=0",
        f"--exit-timeout-secs={DEFAULT_EXIT_TIMEOUT_S}",
        *([] if _has_nvidia_gpu() else ["--pinned-memory-pool-byte-size=0"]),  # no CUDA: skip the failing pinned pool
        *_restricted_api_args(admin_key),
        *extra_args,
    ]


def _restricted_api_args(admin_key: str) -> list[str]:
    if not admin_key:
        return []
    restricted = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={admin_key}"
    return [f"--http-restricted-api={restricted}", f"--grpc-restricted-protocol={restricted}"]


def admin_key_from_env() -> str:
    """``$DRAPE_ADMIN_KEY`` if set (validated), else a fresh random key."""
    key = os.environ.get(ADMIN_KEY_ENV, "")
    if not key:
        return secrets.token_urlsafe(24)
    if not _ADMIN_KEY_FORM.match(key):
        raise ServerStartError(f"{ADMIN_KEY_ENV} must be 16-256 characters of A-Z a-z 0-9 _ - . ~ "
                               "(Triton parses it out of a command-line flag)")
    return key
