"""Start the ServiceNow emulator: ``python -m tools.emulators.servicenow --port 8443``.

Prints the instance URL and the CA bundle to trust (set it as SERVICENOW_CA_BUNDLE), then serves
until Ctrl-C. Faults can be set here or at run time through ``POST /_emulator/faults``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tools.collections_watch import freeze_heap, watch_full_collections
from tools.emulators.servicenow.oauth import OAuthClient
from tools.emulators.servicenow.server import ServiceNowEmulator

DEFAULT_USER = "svc_defender:Emulator-Passw0rd"
DEFAULT_CLIENT = "defender-iot:Emulator-Client-Secret"


def _pair(value: str) -> tuple[str, str]:
    left, sep, right = value.partition(":")
    if not sep or not left or not right:
        raise argparse.ArgumentTypeError(f"expected NAME:SECRET, got {value!r}")
    return left, right


def _rate(value: str) -> tuple[int, float]:
    status, sep, rate = value.partition("=")
    try:
        if not sep:
            raise ValueError
        return int(status), float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected STATUS=RATE such as 503=0.2, got {value!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.emulators.servicenow",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443, help="0 picks a free port")
    parser.add_argument("--tls-dir", type=Path, default=Path(".local/tls"), help="where the test CA lives")
    parser.add_argument("--user", type=_pair, action="append", help=f"USER:PASSWORD (default {DEFAULT_USER})")
    parser.add_argument(
        "--oauth-client", type=_pair, action="append", help=f"CLIENT_ID:CLIENT_SECRET (default {DEFAULT_CLIENT})"
    )
    parser.add_argument("--access-lifespan", type=int, default=1800, help="access token lifespan, seconds")
    parser.add_argument("--refresh-lifespan", type=int, default=8_640_000, help="refresh token lifespan, seconds")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every API request")
    parser.add_argument("--error-rate", type=_rate, action="append", default=[], help="STATUS=RATE, e.g. 503=0.2")
    parser.add_argument("--retry-after", help="Retry-After sent with injected errors")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random faults")
    parser.add_argument("--max-transactions", type=int, help="concurrent API transactions (default: no limit)")
    parser.add_argument("--ire-payload-ms", type=float, default=0.0, help="time per IRE payload")
    parser.add_argument("--ire-rule-item-ms", type=float, default=0.0, help="per IRE item matched by rules")
    parser.add_argument("--ire-native-item-ms", type=float, default=0.0, help="per IRE item found by its source key")
    parser.add_argument(
        "--switch-interval",
        type=float,
        help="the interpreter's thread switch interval, seconds (default 0.005): shorter lets a Table API request "
        "waiting behind the IRE's Python work run sooner, as an instance's REST threads do not wait for its IRE",
    )
    parser.add_argument(
        "--freeze-gc",
        type=float,
        metavar="SECONDS",
        help="every SECONDS, move what the interpreter holds out of the cyclic collector's reach (gc.freeze): its "
        "full collections stop every thread for a time that grows with the store (an instance's collector does not "
        "stop its REST threads for the CMDB's size)",
    )
    args = parser.parse_args(argv)
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)

    users = dict(args.user or [_pair(DEFAULT_USER)])
    clients = [
        OAuthClient(cid, secret, args.access_lifespan, args.refresh_lifespan)
        for cid, secret in (args.oauth_client or [_pair(DEFAULT_CLIENT)])
    ]
    emulator = ServiceNowEmulator(host=args.host, port=args.port, tls_dir=args.tls_dir, users=users, clients=clients)
    emulator.faults.configure(
        {
            "latency_ms": args.latency_ms,
            "error_rates": dict(args.error_rate),
            "retry_after": args.retry_after,
            "seed": args.seed,
        }
    )
    emulator.max_transactions = args.max_transactions
    watch_full_collections(emulator.stats)  # in /_emulator/stats
    if args.freeze_gc:
        freeze_heap(args.freeze_gc)
    emulator.ire_cost.configure(
        {
            "payload_ms": args.ire_payload_ms,
            "rule_item_ms": args.ire_rule_item_ms,
            "native_item_ms": args.ire_native_item_ms,
        }
    )
    return emulator.serve_until_stopped(
        lambda: [
            f"ServiceNow emulator listening on {emulator.url}",
            f"  trust this CA: SERVICENOW_CA_BUNDLE={emulator.ca_pem.resolve()}",
            f"  users: {', '.join(users)}; OAuth clients: {', '.join(c.client_id for c in clients)}",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
