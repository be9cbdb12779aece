"""Assemble a Triton model repository from exported networks and the serving sources.

Input: ``onnx_dir/<network>/{model.onnx, card.json}`` for every network the
export produced (plus ``model.plan`` for the GPU target). Output: a complete
Triton model repository:

* one model per network, its ``config.pbtxt`` generated from the model card
  (``target="cpu"``: a python-backend model running ONNX Runtime, i.e.
  ``1/model.py`` = ``python_models/onnx_runner.py`` + ``1/model.onnx``;
  ``target="gpu"``: a ``tensorrt_plan`` model expecting ``1/model.plan``);
* the pre/post python models (``python_models/{preprocess,postprocess}.py`` as ``<model>/1/model.py``)
  and the ensembles, their configs from ``configs/*.pbtxt`` with ``{height}``
  and ``{width}`` filled from the cards.

Versions: every model config carries ``version_policy: { latest: { num_versions: 1 } }``
and the first assembly writes version ``1/``. Re-assembling into an existing
repository of the same target, resolution and model set writes each model's
next version (``2/``, ``3/``...) beside the current one: the whole new tree is
first built in a temporary directory next to ``out_dir``, then each new
version directory is moved in under a hidden temporary name and renamed to its
number, so Triton (in poll/explicit mode) only ever sees complete versions; the
config and card are replaced by rename after it. The previous version is kept
(for rollback: delete the newest version directory) and older ones are pruned
(renamed to a hidden name first, then deleted). Any other change (another
resolution, target or model set) cannot be served by the old configs, so the
whole repository is swapped instead, in one step where the filesystem supports
``renameat2(RENAME_EXCHANGE)`` (Linux local filesystems). A failed or killed
build leaves the previous repository untouched (tests/reliability/kill_assembly.py);
assemblies next to one repository run one at a time (``flock`` on its parent
directory) and remove the staging trees killed runs left there.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import secrets
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from drape_core import contract
from drape_core.card import CARD_FILE
from drape_core.plans import PlanMismatchError, Runtime, check_card, detect_runtime

# The settings, the cards and the generated config text: drape_export.configs, re-exported here.
from .configs import (
    DEFAULT_SETTINGS,
    ONNX_FILE,
    PLAN_FILE,
    TARGETS,
    VERSION_POLICY,
    AssemblyError,
    NetworkCard,
    ServingSettings,
    _check_onnx_io,
    fill_placeholders,
    load_cards,
    network_config,
)

__all__ = [
    "AssemblyError",
    "NetworkCard",
    "AssemblyReport",
    "ServingSettings",
    "DEFAULT_SETTINGS",
    "assemble",
    "load_cards",
    "network_config",
    "fill_placeholders",
    "serving_sources",
]

MANIFEST_FILE = "manifest.json"
KEEP_VERSIONS = 2  # the new version and the previous one (rollback)


# ---------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class ServingSources:
    """Where the python model sources and config templates live."""

    python_models: Path
    configs: Path


def serving_sources(root: str | Path | None = None) -> ServingSources:
    """Locate ``python_models/`` and ``configs/`` (defaults to the checkout's ``model_repository/``).

    Read as files, not imported: the repository is what this step assembles, not code it runs."""
    if root is None:
        import drape_core

        root = Path(drape_core.__file__).resolve().parents[2] / "model_repository"
    root = Path(root)
    sources = ServingSources(python_models=root / "python_models", configs=root / "configs")
    for path in (sources.python_models, sources.configs):
        if not path.is_dir():
            raise AssemblyError(f"serving sources not found: {path} (is drape installed from a checkout?)")
    return sources


# --------------------------------------------------------------------------- assembly


@dataclass
class AssemblyReport:
    """What ``assemble`` produced. ``mode`` is "new", "replaced" (whole-tree swap) or "versioned"."""

    out_dir: Path
    target: str
    resolution: tuple[int, int]
    networks: list[str] = field(default_factory=list)
    ensembles: list[str] = field(default_factory=list)
    skipped_ensembles: dict[str, str] = field(default_factory=dict)
    missing_plans: list[str] = field(default_factory=list)
    plan_notes: list[str] = field(default_factory=list)
    mode: str = "new"
    versions: dict[str, int] = field(default_factory=dict)
    replaced_because: str = ""

    def summary(self) -> str:
        version = sorted(set(self.versions.values()))
        lines = [
            f"model repository: {self.out_dir} (target {self.target}, resolution {self.resolution[0]}x{self.resolution[1]})",
            f"  networks:  {', '.join(self.networks)}",
            f"  ensembles: {', '.join(self.ensembles) or '(none)'}",
            f"  {self.mode}: model version {', '.join(map(str, version))}"
            + (f" (whole repository swapped: {self.replaced_because})" if self.replaced_because else ""),
        ]
        lines += [f"  skipped ensemble {name}: {why}" for name, why in self.skipped_ensembles.items()]
        lines += [f"  WARNING: {name} has no {PLAN_FILE}; build it with TensorRT before serving" for name in self.missing_plans]
        lines += [f"  note: {note}" for note in self.plan_notes]
        return "\n".join(lines)


def _resolution(cards: list[NetworkCard], height: int | None, width: int | None) -> tuple[int, int]:
    found = {card.resolution for card in cards}
    if len(found) > 1:
        detail = ", ".join(f"{c.name}={c.resolution[0]}x{c.resolution[1]}" for c in cards)
        raise AssemblyError(f"model cards disagree on resolution ({detail}); export all networks at one resolution")
    (resolution,) = found
    if (height is not None and height != resolution[0]) or (width is not None and width != resolution[1]):
        requested = f"{height if height is not None else '*'}x{width if width is not None else '*'}"
        raise AssemblyError(
            f"requested resolution {requested} but the model cards are {resolution[0]}x{resolution[1]}"
        )
    return resolution


def _copy_network(
    card: NetworkCard,
    model_dir: Path,
    target: str,
    sources: ServingSources,
    settings: ServingSettings,
    external: list[str],
    runtime: Runtime | None,
    notes: list[str],
) -> bool:
    """Write one network model (version ``1/`` of the staging tree); returns False when a GPU plan is missing."""
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(network_config(card, target, settings=settings))
    for dest in (model_dir, version_dir):  # the version's own card is what the plan pre-start check reads
        shutil.copy2(card.directory / CARD_FILE, dest / CARD_FILE)
    if target == "cpu":
        shutil.copy2(sources.python_models / "onnx_runner.py", version_dir / "model.py")
        for name in [ONNX_FILE, *external]:
            shutil.copy2(card.directory / name, version_dir / name)
        return True
    plan = card.directory / PLAN_FILE
    if plan.is_file():
        try:
            notes += check_card(card.card, runtime or Runtime(), f"{card.directory / PLAN_FILE}")
        except PlanMismatchError as exc:
            raise AssemblyError(str(exc)) from None
        shutil.copy2(plan, version_dir / PLAN_FILE)
        return True
    (model_dir / "README.md").write_text(
        f"# {card.model_name}: TensorRT plan missing\n\n"
        f"This GPU model expects `<version>/{PLAN_FILE}`, built by TensorRT from `{card.directory}` "
        f"(`python -m drape_export trt --onnx-dir {card.directory.parent}`) on the serving GPU type with the "
        f"TensorRT version of the serving image, then re-assembled (`{card.directory / PLAN_FILE}` is copied "
        "here). tritonserver will not load this model until then.\n"
    )
    return False


def _write_config(
    model: str, sources: ServingSources, model_dir: Path, hw: tuple[int, int], settings: ServingSettings
) -> None:
    template = sources.configs / f"{model}.pbtxt"
    if not template.is_file():
        raise AssemblyError(f"config template missing: {template}")
    text = fill_placeholders(template.read_text(), hw[0], hw[1], str(template), settings.template_values())
    if "version_policy" not in text:
        text += VERSION_POLICY + "\n"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(text)


def _copy_python_model(
    model: str, source: str, sources: ServingSources, out: Path, hw: tuple[int, int], settings: ServingSettings
) -> None:
    model_dir = out / model
    (model_dir / "1").mkdir(parents=True)
    _write_config(model, sources, model_dir, hw, settings)
    shutil.copy2(sources.python_models / source, model_dir / "1" / "model.py")


def _build(
    cards: list[NetworkCard],
    out: Path,
    target: str,
    hw: tuple[int, int],
    sources: ServingSources,
    settings: ServingSettings,
    runtime: Runtime | None,
) -> AssemblyReport:
    """Write a complete repository (every model at version 1) into the empty directory ``out``."""
    report = AssemblyReport(out_dir=out, target=target, resolution=hw)
    if target == "gpu" and runtime is None and any((c.directory / PLAN_FILE).is_file() for c in cards):
        runtime = detect_runtime()  # once: the plans of every network are checked against the same runtime
    reserved = {name for spec in contract.ENSEMBLES.values() for name in (spec.name, spec.preprocess_model, spec.postprocess_model)}
    available = set()
    for card in cards:
        if card.model_name in reserved:
            raise AssemblyError(f"{card.directory}: network name {card.model_name!r} clashes with a serving model name")
        external = _check_onnx_io(card) if target == "cpu" else []
        if not _copy_network(card, out / card.model_name, target, sources, settings, external, runtime, report.plan_notes):
            report.missing_plans.append(card.model_name)
        available.add(card.model_name)
        report.networks.append(card.model_name)

    for spec in contract.ENSEMBLES.values():
        missing = [name for name in spec.networks if name not in available]
        if missing:
            report.skipped_ensembles[spec.name] = f"missing networks {missing}"
            continue
        _copy_python_model(spec.preprocess_model, "preprocess.py", sources, out, hw, settings)
        _copy_python_model(spec.postprocess_model, "postprocess.py", sources, out, hw, settings)
        _write_config(spec.name, sources, out / spec.name, hw, settings)
        (out / spec.name / "1").mkdir()  # Triton requires a (empty) version directory for ensembles
        report.ensembles.append(spec.name)
    if not report.ensembles:
        raise AssemblyError(f"no ensemble can be served: {report.skipped_ensembles}")
    report.versions = {p.name: 1 for p in out.iterdir() if p.is_dir()}
    _write_manifest(out, report, cards, settings)
    return report


def _write_manifest(out: Path, report: AssemblyReport, cards: list[NetworkCard], settings: ServingSettings) -> None:
    manifest = {
        "target": report.target,
        "resolution": {"height": report.resolution[0], "width": report.resolution[1]},
        "networks": {card.model_name: str(card.directory) for card in cards},
        "ensembles": report.ensembles,
        "skipped_ensembles": report.skipped_ensembles,
        "missing_plans": report.missing_plans,
        "versions": dict(sorted(report.versions.items())),
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()},
    }
    tmp = out / f".{MANIFEST_FILE}.tmp-{secrets.token_hex(4)}"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / MANIFEST_FILE)


def _read_manifest(repo: Path) -> dict | None:
    try:
        return json.loads((repo / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None


def _incompatibility(existing: Path, built: Path) -> str:
    """Why the new tree cannot be published as new versions of ``existing`` ("" when it can)."""
    old, new = _read_manifest(existing), _read_manifest(built)
    if old is None:
        return f"no readable {MANIFEST_FILE} in the existing repository"
    for key in ("target", "resolution"):
        if old.get(key) != new.get(key):
            return f"{key} changes from {old.get(key)} to {new.get(key)}"
    old_models = sorted(p.name for p in existing.iterdir() if p.is_dir() and not p.name.startswith("."))
    new_models = sorted(p.name for p in built.iterdir() if p.is_dir())
    if old_models != new_models:
        return f"the model set changes from {old_models} to {new_models}"
    return ""


def _versions(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def _replace_file(src: Path, dest: Path) -> None:
    """Move ``src`` over ``dest`` by rename (readers see the old or the new file, never half of one)."""
    os.replace(src, dest)


def _publish_versions(built: Path, out_dir: Path, report: AssemblyReport) -> None:
    """Move each model of ``built`` into ``out_dir`` as that model's next version, then its config and card."""
    for staged in sorted(p for p in built.iterdir() if p.is_dir()):
        model_dir = out_dir / staged.name
        version = max(_versions(model_dir), default=0) + 1
        incoming = model_dir / f".{version}.incoming-{secrets.token_hex(4)}"
        (staged / "1").rename(incoming)  # same filesystem: the staging tree lives next to out_dir
        incoming.rename(model_dir / str(version))  # the version appears complete, in one step
        for name in ("config.pbtxt", CARD_FILE, "README.md"):
            if (staged / name).is_file():
                _replace_file(staged / name, model_dir / name)
        report.versions[staged.name] = version
    manifest = _read_manifest(built) or {}
    manifest["versions"] = dict(sorted(report.versions.items()))
    tmp = out_dir / f".{MANIFEST_FILE}.tmp-{secrets.token_hex(4)}"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    _replace_file(tmp, out_dir / MANIFEST_FILE)
    for model_dir in (p for p in out_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for old in _versions(model_dir)[:-KEEP_VERSIONS]:
            # hide it in one rename first: a kill during the deletion must not leave a partial version in view
            doomed = model_dir / f".{old}.pruned-{secrets.token_hex(4)}"
            (model_dir / str(old)).rename(doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        for stale in [*model_dir.glob(".*.incoming-*"), *model_dir.glob(".*.pruned-*")]:  # an interrupted run's
            shutil.rmtree(stale, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the OS or filesystem cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _swap_into_place(built: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` with ``built``; the old tree is removed only after the new one is in place.

    Where the filesystem can, the two trees are exchanged in one step, so a kill at any moment leaves a complete
    repository at ``out_dir`` (the old tree then sits at ``built``, which the caller removes); elsewhere two
    renames leave ``out_dir`` missing for an instant."""
    if not out_dir.exists():
        built.rename(out_dir)
        return
    if _exchange(built, out_dir):
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{secrets.token_hex(4)}")
    out_dir.rename(old)
    try:
        built.rename(out_dir)
    except OSError:
        old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def assemble(
    onnx_dir: str | Path,
    out_dir: str | Path,
    target: str = "cpu",
    height: int | None = None,
    width: int | None = None,
    *,
    intra_op_num_threads: int | None = None,
    settings: ServingSettings = DEFAULT_SETTINGS,
    plan_runtime: Runtime | None = None,
    source_root: str | Path | None = None,
) -> AssemblyReport:
    """Build the Triton model repository for ``target`` ("cpu" or "gpu") at ``out_dir``.

    ``height``/``width``, when given, are what the caller expects; the cards
    are the source of truth and a mismatch is an error. Ensembles whose
    networks are not all present are skipped (listed in the report); having
    none servable is an error. ``intra_op_num_threads`` overrides
    ``settings.intra_op_threads``. GPU plans are checked against
    ``plan_runtime`` (default: this machine, fields it cannot detect are
    reported as unverified notes). See the module docstring for versions.
    """
    if target not in TARGETS:
        raise AssemblyError(f"unknown target {target!r}; expected one of {TARGETS}")
    if intra_op_num_threads is not None:
        settings = ServingSettings(**{**asdict(settings), "intra_op_threads": intra_op_num_threads})
    cards = load_cards(onnx_dir)
    hw = _resolution(cards, height, width)
    sources = serving_sources(source_root)
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(out_dir):
        building = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
        building.chmod(0o755)  # mkdtemp makes it private; the server may run as another user
        try:
            report = _build(cards, building, target, hw, sources, settings, plan_runtime)
            why = _incompatibility(out_dir, building) if out_dir.exists() else ""
            if not out_dir.exists():
                _swap_into_place(building, out_dir)
                report.mode = "new"
            elif why:
                _swap_into_place(building, out_dir)
                report.mode, report.replaced_because = "replaced", why
            else:
                _publish_versions(building, out_dir, report)
                report.mode = "versioned"
        finally:
            shutil.rmtree(building, ignore_errors=True)
    report.out_dir = out_dir
    return report


@contextlib.contextmanager
def _exclusive(out_dir: Path):
    """One assembly at a time next to a repository (``flock`` on the parent directory: no lock file, released by
    the kernel when its holder dies). Holding it, the staging trees left there belong to killed runs: removed.
    Where the filesystem refuses the lock, nothing is removed."""
    fd = os.open(out_dir.parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            yield
            return
        for stale in [*out_dir.parent.glob(f".{out_dir.name}.building-*"), *out_dir.parent.glob(f".{out_dir.name}.old-*")]:
            shutil.rmtree(stale, ignore_errors=True)
        yield
    finally:
        os.close(fd)
