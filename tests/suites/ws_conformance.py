"""Autobahn WebSocket conformance cases (run by kosoku) against a running gateway.

The gateway's socket serves authenticated users only, and kosoku cannot add a
header to its upgrade request. So the cases go through a small TCP relay that
adds `Authorization: Bearer <token>` of a freshly registered user to the upgrade
request and passes every byte after it through untouched both ways: the
gateway's frame loop (where a chat client's frames go) is what is tested, not
its refusal of strangers.

Each case's verdicts (message exchange and closing handshake) are compared with
the committed expectations (tests/suites/ws_conformance_expected.txt); any
difference fails the run. `--write` records what was observed instead, keeping
the reasons already written and marking new non-OK verdicts with `?` for a
person to explain.

    GATEWAY_URL=http://127.0.0.1:8080 python tests/suites/ws_conformance.py [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from kosoku import FailureError, run_fuzzingclient

sys.path.insert(0, str(Path(__file__).parent))
from gateway_client import register_user  # noqa: E402

EXPECTED = Path(__file__).with_name("ws_conformance_expected.txt")
HEADER_LIMIT = 64 * 1024


class Expectations:
    """The committed file: a legend of reasons, the case globs not run (with
    why), and one line per case: `id behavior close reason-key`."""

    def __init__(self, reasons: dict[str, str], excluded: dict[str, str], cases: dict[str, tuple[str, str, str]]):
        self.reasons = reasons
        self.excluded = excluded
        self.cases = cases

    @classmethod
    def read(cls, path: Path) -> Expectations:
        reasons: dict[str, str] = {}
        excluded: dict[str, str] = {}
        cases: dict[str, tuple[str, str, str]] = {}
        for number, line in enumerate(path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            kind, _, rest = line.partition(" ")
            if kind == "reason":
                key, _, text = rest.strip().partition(" ")
                reasons[key] = text.strip()
            elif kind == "exclude":
                pattern, _, why = rest.strip().partition(" ")
                excluded[pattern] = why.strip()
            elif kind == "case":
                fields = rest.split()
                if len(fields) != 4:
                    raise SystemExit(f"{path}:{number}: expected `case ID BEHAVIOR CLOSE REASON`")
                case_id, behavior, close, reason = fields
                cases[case_id] = (behavior, close, reason)
            else:
                raise SystemExit(f"{path}:{number}: unknown line kind {kind!r}")
        for case_id, (behavior, close, reason) in cases.items():
            if reason not in reasons:
                raise SystemExit(f"{path}: case {case_id} names reason {reason!r}, which the legend lacks")
        return cls(reasons, excluded, cases)

    def write(self, path: Path, header: str) -> None:
        lines = [header.rstrip(), ""]
        lines += [f"reason {key} {text}" for key, text in self.reasons.items()]
        lines.append("")
        lines += [f"exclude {pattern} {why}" for pattern, why in self.excluded.items()]
        lines.append("")
        for case_id in sorted(self.cases, key=case_order):
            behavior, close, reason = self.cases[case_id]
            lines.append(f"case {case_id} {behavior} {close} {reason}")
        path.write_text("\n".join(lines) + "\n")


def case_order(case_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case_id.split("."))


def file_header(path: Path) -> str:
    return "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))


async def relay(token: str, upstream_host: str, upstream_port: int, connections: set) -> asyncio.Server:
    """A TCP relay that adds the bearer token to each upgrade request; the
    task of each connection it relays is added to `connections`."""
    authorization = f"Authorization: Bearer {token}\r\n".encode()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            # Half-close, so each side sees the other's end of stream as it happened.
            if writer.can_write_eof():
                try:
                    writer.write_eof()
                except OSError:
                    pass

    async def serve(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        connections.add(asyncio.current_task())
        try:
            head = await client_reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            client_writer.close()
            return
        request_line, _, headers = head.partition(b"\r\n")
        upstream_reader, upstream_writer = await asyncio.open_connection(upstream_host, upstream_port)
        try:
            upstream_writer.write(request_line + b"\r\n" + authorization + headers)
            await upstream_writer.drain()
            await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            client_writer.close()
            upstream_writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0, limit=HEADER_LIMIT)


async def run_cases(gateway_url: str, excluded: list[str], parallelism: int) -> list:
    gateway = urlsplit(gateway_url)
    token = register_user(gateway_url, "autobahn")
    connections: set = set()
    server = await relay(token, gateway.hostname, gateway.port, connections)
    port = server.sockets[0].getsockname()[1]
    try:
        return await run_fuzzingclient(f"ws://127.0.0.1:{port}/v1/ws", None, excluded, concurrency=parallelism)
    except FailureError as failure:
        # kosoku raises when any case is not OK; the expectations decide here.
        return failure.results
    finally:
        server.close()
        # Connections kosoku dropped may still wait for the gateway's side.
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="record the observed verdicts in the expectations file")
    parser.add_argument("--parallelism", type=int, default=4, help="cases run at once")
    args = parser.parse_args()
    gateway_url = os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080")

    expected = Expectations.read(EXPECTED)
    results = asyncio.run(run_cases(gateway_url, list(expected.excluded), args.parallelism))
    observed = {r.case_id: (r.behavior.value.replace(" ", "_"), r.behavior_close.value.replace(" ", "_")) for r in results}
    if not observed:
        print("ws-conformance: no case ran", file=sys.stderr)
        return 1

    if args.write:
        cases = {}
        for case_id, (behavior, close) in observed.items():
            old = expected.cases.get(case_id)
            reason = old[2] if old and old[:2] == (behavior, close) else ("-" if (behavior, close) == ("OK", "OK") else "?")
            cases[case_id] = (behavior, close, reason)
        reasons = dict(expected.reasons)
        reasons.setdefault("-", "as the case requires")
        reasons.setdefault("?", "not yet explained")
        Expectations(reasons, expected.excluded, cases).write(EXPECTED, file_header(EXPECTED))
        print(f"ws-conformance: wrote {len(cases)} cases to {EXPECTED}")
        return 0

    differences = []
    matched = 0
    for case_id in sorted(set(observed) | set(expected.cases), key=case_order):
        want = expected.cases.get(case_id)
        got = observed.get(case_id)
        if want is None:
            differences.append(f"{case_id}: ran, but has no expectation (observed {got[0]} / {got[1]})")
        elif got is None:
            differences.append(f"{case_id}: expected {want[0]} / {want[1]}, but did not run")
        elif got != want[:2]:
            differences.append(
                f"{case_id}: expected {want[0]} / {want[1]} ({expected.reasons[want[2]]}), observed {got[0]} / {got[1]}"
            )
        else:
            matched += 1
    differences += [f"{case_id}: no reason given" for case_id, case in expected.cases.items() if case[2] == "?"]
    for line in differences:
        print(f"ws-conformance: {line}", file=sys.stderr)
    print(f"ws-conformance: {matched} passed, {len(differences)} failed")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
