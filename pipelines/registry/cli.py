"""Command line for the model registry: list, show, promote, download.

    python -m pipelines.registry.cli list [NAME]
    python -m pipelines.registry.cli show NAME[:VERSION|:ALIAS] [--json]
    python -m pipelines.registry.cli promote NAME VERSION [--alias production] [--force]
    python -m pipelines.registry.cli download NAME[:VERSION|:ALIAS] DEST
    python -m pipelines.registry.cli export NAME[:VERSION|:ALIAS] DIR --format onnx [--force]

Every command takes --registry (default: register.registry of ./params.yaml when there is
one, else data/registry; s3://bucket/prefix for S3) and --endpoint-url (else
AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL). A VERSION is 3 or v3; anything else after the
colon is an alias; no colon means the latest.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipelines.errors import PipelineInputError, cli_entry
from pipelines.registry.card import primary_text, render_text, versions_with_aliases
from pipelines.registry.local import ModelRegistry, RegistryError, VersionSpec, open_registry

DEFAULT_REGISTRY = "data/registry"
PARAMS_FILE = "params.yaml"


def default_registry(params_file: str | Path = PARAMS_FILE) -> str:
    """register.registry of the project's params.yaml (the registry its runs publish to), else data/registry.

    Only that key is read: a listing does not need the rest of the params to be valid.
    """
    import yaml

    try:
        params = yaml.safe_load(Path(params_file).read_text()) or {}
    except FileNotFoundError:
        return DEFAULT_REGISTRY
    except (OSError, yaml.YAMLError) as err:
        raise PipelineInputError(f"{params_file}: cannot read register.registry ({err}); pass --registry") from None
    register = params.get("register") if isinstance(params, dict) else None
    location = register.get("registry") if isinstance(register, dict) else None
    return str(location) if location else DEFAULT_REGISTRY


def parse_version(text: str) -> int | str:
    """'3' or 'v3' -> 3; anything else is an alias name."""
    digits = text[1:] if text[:1] in ("v", "V") else text
    return int(digits) if digits.isdigit() else text


def parse_ref(ref: str) -> tuple[str, VersionSpec]:
    """'name' -> (name, None); 'name:3', 'name:v3' -> (name, 3); 'name:production' -> alias."""
    name, sep, spec = ref.partition(":")
    if sep and not spec:
        raise RegistryError(f"{ref!r}: nothing after ':'; use NAME, NAME:VERSION or NAME:ALIAS")
    return name, (parse_version(spec) if sep else None)


def cmd_list(reg: ModelRegistry, name: str | None) -> None:
    if name is None:
        models = reg.list_models()
        if not models:
            print(f"no models in {reg.location}")
        for model in models:
            versions = reg.list_versions(model)
            aliases = ", ".join(f"{a}=v{v}" for a, v in sorted(reg.aliases(model).items())) or "-"
            print(f"{model}  versions: {len(versions)}  latest: v{versions[-1]}  aliases: {aliases}")
        return
    versions = reg.list_versions(name)
    if not versions:
        raise RegistryError(f"model {name!r} has no versions in registry {reg.location}")
    aliases = versions_with_aliases(reg.aliases(name))
    rows = [("VERSION", "ALIASES", "TEST METRIC", "CREATED", "CANDIDATE")]
    for v in versions:
        card = reg.get_card(name, v)
        rows.append(
            (
                f"v{v}",
                ",".join(aliases.get(v, [])) or "-",
                primary_text(card),
                str(card.get("created_at", "-")),
                str(card.get("candidate", "-")),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def cmd_show(reg: ModelRegistry, ref: str, as_json: bool) -> None:
    name, spec = parse_ref(ref)
    card = reg.get_card(name, spec)
    if as_json:
        print(json.dumps(card, indent=2, sort_keys=True))
        return
    print(render_text(card, reg.aliases(name), reg.location))


def cmd_promote(
    reg: ModelRegistry, name: str, version: str, alias: str, force: bool, metric: str | None, mode: str | None
) -> None:
    number = parse_version(version)
    if not isinstance(number, int):
        raise RegistryError(f"promote takes a version number (3 or v3), not {version!r}")
    result = reg.promote(name, number, alias, primary_metric=metric, mode=mode, policy="always" if force else "better")  # type: ignore[arg-type]
    print(result)


def cmd_download(reg: ModelRegistry, ref: str, dest: str) -> None:
    name, spec = parse_ref(ref)
    mv = reg.download(name, spec, dest)
    print(f"{name} v{mv.version} -> {mv.checkpoint} (sha256 verified), card: {mv.path / 'card.json'}")


def cmd_export(reg: ModelRegistry, ref: str, dest: str, force: bool) -> None:
    """ONNX (the one --format): the export lives a layer above the registry, imported only for this command."""
    from pipelines.export.onnx import export_onnx

    path = export_onnx(ref, dest, reg, force=force)
    card = json.loads((path.parent / "card.json").read_text())
    files = ", ".join(sorted(p.name for p in path.parent.iterdir()))
    print(f"{card['name']} v{card['version']} -> {path.parent}/: {files}")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--registry",
        default=None,
        help=f"registry location: a path or s3://bucket/prefix (default: register.registry of ./{PARAMS_FILE}, "
        f"else {DEFAULT_REGISTRY})",
    )
    common.add_argument(
        "--endpoint-url", default=None, help="S3-compatible endpoint (default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL)"
    )
    parser = argparse.ArgumentParser(
        prog="dl-registry", description="The model registry of trained, versioned checkpoints."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", parents=[common], help="models, or the versions of one model")
    p.add_argument("name", nargs="?")
    p = sub.add_parser("show", parents=[common], help="a version's card: metrics, lineage, plots")
    p.add_argument("ref", metavar="NAME[:VERSION|:ALIAS]")
    p.add_argument("--json", action="store_true", help="print the whole card as JSON")
    p = sub.add_parser("promote", parents=[common], help="point an alias at a version if its test metric is better")
    p.add_argument("name")
    p.add_argument("version", metavar="VERSION")
    p.add_argument("--alias", default="production")
    p.add_argument("--force", action="store_true", help="move the alias whatever the metrics say")
    p.add_argument("--metric", default=None, help="compare this test metric (default: the card's primary_metric)")
    p.add_argument(
        "--mode", choices=("max", "min"), default=None, help="which way the metric improves (default: from the card)"
    )
    p = sub.add_parser("download", parents=[common], help="copy a verified checkpoint and its card to DEST")
    p.add_argument("ref", metavar="NAME[:VERSION|:ALIAS]")
    p.add_argument("dest", metavar="DEST")
    p = sub.add_parser("export", parents=[common], help="write model.onnx, preprocessing.json and card.json to DIR")
    p.add_argument("ref", metavar="NAME[:VERSION|:ALIAS]")
    p.add_argument("dest", metavar="DIR")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="export format (default: onnx)")
    p.add_argument("--force", action="store_true", help="replace DIR when it exists and is not empty")
    return parser


def run(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    reg = open_registry(args.registry or default_registry(), endpoint_url=args.endpoint_url)
    try:
        if args.command == "list":
            cmd_list(reg, args.name)
        elif args.command == "show":
            cmd_show(reg, args.ref, args.json)
        elif args.command == "promote":
            cmd_promote(reg, args.name, args.version, args.alias, args.force, args.metric, args.mode)
        elif args.command == "download":
            cmd_download(reg, args.ref, args.dest)
        elif args.command == "export":
            cmd_export(reg, args.ref, args.dest, args.force)
    except _storage_errors() as err:  # no credentials, no bucket, endpoint down: say where
        raise RegistryError(f"{reg.location}: {err}") from err


def _storage_errors() -> tuple[type[BaseException], ...]:
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # a local-only install
        return ()
    return (BotoCoreError, ClientError)


@cli_entry
def main() -> None:
    try:
        run(sys.argv[1:])
    except (RegistryError, OSError) as err:
        raise PipelineInputError(str(err)) from err


if __name__ == "__main__":
    main()
