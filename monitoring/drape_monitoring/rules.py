"""Generate the kube-prometheus PrometheusRule from the standalone rule file, so the rules have one source.

``monitoring/rules/drape.rules.yml`` is what a plain Prometheus loads (``rule_files``) and what the promtool unit
tests exercise. kube-prometheus wants the same groups wrapped in a ``PrometheusRule`` object, and kustomize cannot
build one from a file (a configMapGenerator makes ConfigMaps only), so this writes ``k8s/base/prometheusrule.yaml``::

    python -m drape_monitoring.rules            # rewrite k8s/base/prometheusrule.yaml
    python -m drape_monitoring.rules --check    # exit 1 if it is out of date (tests run this)

Edit the rule file, never the generated manifest.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "monitoring" / "rules" / "drape.rules.yml"
OUT = ROOT / "k8s" / "base" / "prometheusrule.yaml"
NAME = "drape"

__all__ = ["load_groups", "render", "main"]


def load_groups(path: str | Path = RULES) -> list[dict]:
    """The ``groups`` list of a Prometheus rule file."""
    doc = yaml.safe_load(Path(path).read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list) or not doc["groups"]:
        raise ValueError(f"{path}: not a Prometheus rule file (no groups)")
    return doc["groups"]


class _Dumper(yaml.SafeDumper):
    """Multi-line expressions as ``|`` blocks, so the generated file reads like the source."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(groups: list[dict], source: Path = RULES) -> str:
    """The PrometheusRule manifest text for ``groups``."""
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": NAME, "labels": {"app.kubernetes.io/name": "drape-rules"}},
        "spec": {"groups": groups},
    }
    try:
        shown = source.resolve().relative_to(ROOT)
    except ValueError:
        shown = source
    header = (f"# GENERATED from {shown} by `python -m drape_monitoring.rules`; edit that file, not this one.\n"
              "# tests/test_monitoring_rules.py fails when the two differ.\n")
    return header + yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drape_monitoring.rules", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", type=Path, default=RULES, help="standalone rule file (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=OUT, help="PrometheusRule manifest (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if --out is not up to date")
    args = parser.parse_args(argv)
    text = render(load_groups(args.rules), args.rules)
    if args.check:
        current = args.out.read_text() if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is out of date: run `python -m drape_monitoring.rules`", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
