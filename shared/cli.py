"""The ``scorefn`` command line.

    scorefn up [--port-shift N]                      the local stack (make up)
    scorefn endpoint apply endpoints/fraud.yaml      store a spec in the endpoints table
    scorefn traffic show fraud
    scorefn traffic set fraud blue=90 green=10       ETag-guarded; bad weights change nothing
    scorefn mirror set fraud green=20
    scorefn keys regenerate fraud primary            prints the new key once
    scorefn token --endpoint fraud [--role R]        a dev token (local mode)
    scorefn invoke --endpoint fraud --data '{...}'   score through the router
    scorefn deploy -g RG --endpoint endpoints/fraud.yaml [--dry-run]   Azure rollout
    scorefn stats fraud                              per deployment: req/s, p50/p99, errors,
                                                     batch size, mirror agreement (Prometheus)
    scorefn batch submit|status|list|resume fraud ...   batch jobs (shared/batch/cli.py)
    scorefn models push models/fraud [--version V]   upload a package to the model store

Commands that touch storage take ``--storage`` (a connection string; default: the
router's setting, ``AzureWebJobsStorage``, else Azurite's ``UseDevelopmentStorage=true``).
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path
from typing import Any, Literal

import orjson

from shared.errors import PackageError, ScorefnError

__all__ = ["main"]

_DEFAULT_ISSUER = "http://127.0.0.1:7070"
_DEFAULT_ROUTER = "http://127.0.0.1:7071"


def _print_json(obj: Any) -> None:
    print(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode())


def _store(args: argparse.Namespace) -> Any:
    from shared.routing.store import EndpointStore
    from shared.settings import RouterSettings

    return EndpointStore.from_connection_string(args.storage or RouterSettings().storage)


def _routing(stored: Any) -> dict[str, Any]:
    return {
        "endpoint": stored.spec.name,
        "traffic": dict(stored.spec.traffic),
        "mirror": dict(stored.spec.mirror),
        "etag": stored.etag,
    }


def _up(args: argparse.Namespace) -> int:
    from shared.stack import StackOptions, run_stack

    return run_stack(
        StackOptions(endpoint=args.endpoint, port_shift=args.port_shift, run_dir=args.run_dir)
    )


def _endpoint_apply(args: argparse.Namespace) -> int:
    from shared.routing.endpoint import load_endpoint

    spec = load_endpoint(args.file)
    stored, issued = _store(args).apply(spec)
    print(f"endpoint {spec.name!r} stored (etag {stored.etag})")
    if issued is not None:
        print("endpoint keys (shown once; only their hashes are stored):")
        print(f"  primary:   {issued.primary}")
        print(f"  secondary: {issued.secondary}")
    return 0


def _traffic_show(args: argparse.Namespace) -> int:
    _print_json(_routing(_store(args).get(args.endpoint)))
    return 0


def _routing_set(args: argparse.Namespace, kind: Literal["traffic", "mirror"]) -> int:
    """``scorefn traffic set`` / ``scorefn mirror set``: parse, then one guarded update."""
    from shared.routing.traffic import parse_assignments

    try:
        table = parse_assignments(args.assignments, kind=kind)
    except ValueError as exc:
        print(f"scorefn: {exc}; nothing changed", file=sys.stderr)
        return 2
    store = _store(args)
    update = store.set_traffic if kind == "traffic" else store.set_mirror
    _print_json(_routing(update(args.endpoint, table)))
    return 0


def _keys_regenerate(args: argparse.Namespace) -> int:
    _, key = _store(args).regenerate_key(args.endpoint, args.slot)
    print(f"new {args.slot} key of endpoint {args.endpoint!r} (shown once):")
    print(key)
    return 0


def _audience(args: argparse.Namespace) -> str:
    if args.audience:
        return str(args.audience)
    spec = _store(args).get(args.endpoint).spec
    if not spec.auth.audiences:
        raise ScorefnError(f"endpoint {args.endpoint!r} lists no audience; pass --audience")
    return str(spec.auth.audiences[0])


def _token(args: argparse.Namespace) -> int:
    from shared.client.dev_credential import DevIssuerCredential

    credential = DevIssuerCredential(
        args.issuer_url, key_file=args.key_file, roles=args.role or ["Endpoint.Invoke"]
    )
    print(credential.get_token(_audience(args) + "/.default").token)
    return 0


def _invoke(args: argparse.Namespace) -> int:
    from shared.client import DevIssuerCredential, ScoringClient

    data = args.data.encode() if args.data is not None else Path(args.file).read_bytes()
    url = f"{args.router_url.rstrip('/')}/api/endpoints/{args.endpoint}"
    if args.key:
        client = ScoringClient(url, key=args.key)
    else:
        credential = DevIssuerCredential(args.issuer_url, key_file=args.key_file)
        client = ScoringClient(url, credential, scope=_audience(args) + "/.default")
    with client:
        scored = client.score(data, model=args.model, deployment=args.deployment)
    print(f"deployment: {scored.deployment}  request id: {scored.request_id}", file=sys.stderr)
    _print_json(scored.body)
    return 0


def _parser() -> argparse.ArgumentParser:
    from shared.auth.dev_issuer import DEFAULT_KEY_FILE
    from shared.stack import ROOT

    parser = argparse.ArgumentParser(prog="scorefn", description="ONNX models as Azure Functions")
    parser.add_argument("--log-level", default="WARNING", help="Python logging level")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the local stack serving an endpoint")
    up.add_argument("--endpoint", type=Path, default=ROOT / "endpoints" / "fraud.yaml")
    up.add_argument(
        "--port-shift", type=int, default=0, help="add this to every port (several stacks)"
    )
    up.add_argument("--run-dir", type=Path, default=ROOT / ".run", help="logs and Azurite data")
    up.set_defaults(func=_up, log_level="INFO")

    def storage(p: argparse.ArgumentParser) -> None:
        p.add_argument("--storage", help="storage connection string (default: settings)")

    endpoint = sub.add_parser("endpoint", help="endpoint configs in table storage")
    esub = endpoint.add_subparsers(dest="action", required=True)
    apply = esub.add_parser("apply", help="store (create or replace) an endpoint spec")
    apply.add_argument("file", type=Path)
    storage(apply)
    apply.set_defaults(func=_endpoint_apply)

    def routing_set(
        actions: argparse._SubParsersAction[argparse.ArgumentParser],
        kind: Literal["traffic", "mirror"],
        help_text: str,
    ) -> None:
        p = actions.add_parser("set", help=help_text)
        p.add_argument("endpoint")
        p.add_argument("assignments", nargs="+", metavar="deployment=percent")
        storage(p)
        p.set_defaults(func=functools.partial(_routing_set, kind=kind))

    traffic = sub.add_parser("traffic", help="traffic weights of an endpoint")
    tsub = traffic.add_subparsers(dest="action", required=True)
    show = tsub.add_parser("show", help="print traffic and mirror")
    show.add_argument("endpoint")
    storage(show)
    show.set_defaults(func=_traffic_show)
    routing_set(tsub, "traffic", "set weights: blue=90 green=10 (sum 100)")

    mirror = sub.add_parser("mirror", help="mirrored (shadow) traffic of an endpoint")
    msub = mirror.add_subparsers(dest="action", required=True)
    routing_set(msub, "mirror", "copy a percentage of requests: green=20")

    keys = sub.add_parser("keys", help="endpoint keys (auth mode key)")
    ksub = keys.add_subparsers(dest="action", required=True)
    regen = ksub.add_parser("regenerate", help="replace one key and print it once")
    regen.add_argument("endpoint")
    regen.add_argument("slot", choices=["primary", "secondary"])
    storage(regen)
    regen.set_defaults(func=_keys_regenerate)

    def dev_token(p: argparse.ArgumentParser) -> None:
        p.add_argument("--endpoint", required=True, help="endpoint name")
        p.add_argument("--audience", help="token audience (default: the stored spec's first)")
        p.add_argument("--issuer-url", default=_DEFAULT_ISSUER, help="the dev issuer's URL")
        p.add_argument("--key-file", type=Path, default=DEFAULT_KEY_FILE)
        storage(p)

    token = sub.add_parser("token", help="print a dev token for an endpoint (local mode)")
    dev_token(token)
    token.add_argument("--role", action="append", help="app role (default Endpoint.Invoke)")
    token.set_defaults(func=_token)

    invoke = sub.add_parser("invoke", help="score through the router")
    dev_token(invoke)
    body = invoke.add_mutually_exclusive_group(required=True)
    body.add_argument("--data", help="JSON request body")
    body.add_argument("--file", help="file holding the JSON request body")
    invoke.add_argument("--router-url", default=_DEFAULT_ROUTER)
    invoke.add_argument("--model", help="name[:version] (default: the deployment's first)")
    invoke.add_argument("--deployment", help="pin a deployment")
    invoke.add_argument("--key", help="endpoint key instead of a dev token")
    invoke.set_defaults(func=_invoke)

    from shared.deploy.cli import add_deploy_parser

    add_deploy_parser(sub)
    from shared.telemetry.cli import add_stats_parser

    add_stats_parser(sub)

    from shared.rollout.cli import add_rollout_parser

    add_rollout_parser(sub)
    from shared.batch.cli import add_batch_parser

    add_batch_parser(sub)
    from shared.modelstore.cli import add_models_parser

    add_models_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``scorefn``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except PackageError as exc:
        print(f"scorefn: {exc}", file=sys.stderr)
        return 2
    except ScorefnError as exc:
        print(f"scorefn: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
