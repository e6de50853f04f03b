#!/usr/bin/env bash
# Static checks of the docker compose deployment in deploy/, without a Docker
# engine (CI has none): the compose file, the Dockerfile and the files they
# reference. Prints "deploy files OK", or every problem found and exits 1.
#
# Needs python3; PyYAML goes into the project-local venv .tools/venv.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.tools/venv"

if [ ! -x "$venv/bin/python" ]; then
  echo "check-deploy: creating $venv"
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import yaml' >/dev/null 2>&1; then
  echo "check-deploy: installing PyYAML into .tools/venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check pyyaml
fi

exec "$venv/bin/python" - "$root" <<'PY'
import fnmatch
import glob
import os
import re
import subprocess
import sys
from urllib.parse import urlsplit

import yaml

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

ROOT = sys.argv[1]
DEPLOY = os.path.join(ROOT, "deploy")
COMPOSE = os.path.join(DEPLOY, "docker-compose.yml")

INFRA = {"nats", "postgres", "jaeger"}
APPS = {"auth", "history", "presence", "notification", "gateway"}
# Workspace binaries that are developer tools, not services: never deployed.
TOOLS = {"chat-bench"}

# Per binary: the variable it binds to (must be 0.0.0.0 in a container) and the
# variables that name other services, whose 127.0.0.1 defaults are wrong in a
# container and so must be set.
LISTEN_VAR = {
    "auth": "AUTH_GRPC_ADDR",
    "history": "HISTORY_GRPC_ADDR",
    "presence": "PRESENCE_GRPC_ADDR",
    "notification": "NOTIFICATION_GRPC_ADDR",
    "gateway": "GATEWAY_HTTP_ADDR",
}
REQUIRED_PEERS = {
    "auth": ["NATS_URL"],
    "history": ["NATS_URL"],
    "presence": ["NATS_URL", "HISTORY_GRPC_URL"],
    "notification": ["NATS_URL", "AUTH_GRPC_URL", "HISTORY_GRPC_URL"],
    "gateway": ["AUTH_GRPC_URL", "HISTORY_GRPC_URL", "PRESENCE_GRPC_URL", "NOTIFICATION_GRPC_URL", "NATS_URL"],
}
# Variables that hold another service's address, and the service they must name.
ADDRESS_VAR = {
    "AUTH_GRPC_URL": "auth",
    "HISTORY_GRPC_URL": "history",
    "PRESENCE_GRPC_URL": "presence",
    "NOTIFICATION_GRPC_URL": "notification",
    "NATS_URL": "nats",
    "AUTH_DATABASE_URL": "postgres",
    "HISTORY_DATABASE_URL": "postgres",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "jaeger",
}
INFRA_PORT = {"nats": 4222, "postgres": 5432, "jaeger": 4317}
SCHEME_PORT = {"http": 80, "https": 443, "nats": 4222, "postgres": 5432, "postgresql": 5432}
GRPC_BINARIES = {"auth", "history", "presence", "notification"}

errors = []


def fail(msg):
    errors.append(msg)


def rel(path):
    return os.path.relpath(path, ROOT)


def interpolate(value):
    """Compose variable substitution, using the defaults written in the file."""
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        op, default = m.group(3), m.group(4)
        return default if op in (":-", "-") else ""
    return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)((:?[-?])(.*?))?\}", sub, value)


def env_of(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        env = dict(pairs)
    return {str(k): interpolate("" if v is None else str(v)) for k, v in env.items()}


def command_of(svc):
    cmd = svc.get("command")
    if cmd is None:
        return []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def split_image(image):
    """(repository, tag or None, digest or None)."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    tag = None
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        image, tag = image[:colon], image[colon + 1:]
    return image, tag, digest


def check_pinned(image, where):
    if "$" in image:
        fail(f"{where}: image '{image}' uses a variable; pin it literally")
        return
    _, tag, digest = split_image(image)
    if tag is None and digest is None:
        fail(f"{where}: image '{image}' has no tag (would mean 'latest'); pin a version")
    elif tag == "latest":
        fail(f"{where}: image '{image}' uses the 'latest' tag; pin a version")


def host_port(value):
    """(host, port) of a URL or host:port address; port may be None."""
    parts = urlsplit(value if "://" in value else "tcp://" + value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is None:
        port = SCHEME_PORT.get(parts.scheme)
    return parts.hostname, port


ENV_READ = re.compile(r'(?:config::(?:string|parse|list)|std::env::var(?:_os)?)\(\s*"([A-Z][A-Z0-9_]*)"')
# Read by every service's telemetry start-up (EnvFilter reads RUST_LOG, the
# OpenTelemetry SDK the sampler variables).
TELEMETRY_VARS = {"RUST_LOG", "LOG_FORMAT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"}


def env_vars_in(path):
    """Variables read in a Rust file, or in every Rust file under a folder."""
    paths = [path] if os.path.isfile(path) else [
        os.path.join(base, f) for base, _, files in os.walk(path) for f in files if f.endswith(".rs")
    ]
    found = set()
    for p in paths:
        with open(p, encoding="utf-8") as handle:
            found |= set(ENV_READ.findall(handle.read()))
    return found


def env_read_by(binary):
    """Environment variables the service's code reads (its crate, plus the
    shared stream settings when its configuration uses them)."""
    crate = os.path.join(ROOT, "services", binary, "src")
    found = env_vars_in(crate) | TELEMETRY_VARS
    with open(os.path.join(crate, "config.rs"), encoding="utf-8") as handle:
        if "StreamSettings::from_env" in handle.read():
            found |= env_vars_in(os.path.join(ROOT, "services", "common", "src", "nats.rs"))
    return found


def workspace_binaries():
    """Binary target names of the workspace members, from their manifests."""
    def load(path):
        with open(path, "rb") as f:
            data = f.read()
        if tomllib is not None:
            return tomllib.loads(data.decode())
        # Minimal fallback: members, package name, [[bin]] names.
        text = data.decode()
        members = re.search(r"members\s*=\s*\[(.*?)\]", text, re.S)
        pkg = re.search(r'^\[package\][^\[]*?^name\s*=\s*"([^"]+)"', text, re.S | re.M)
        bins = re.findall(r'^\[\[bin\]\][^\[]*?^name\s*=\s*"([^"]+)"', text, re.S | re.M)
        out = {"bin": [{"name": b} for b in bins]}
        if members:
            out["workspace"] = {"members": re.findall(r'"([^"]+)"', members.group(1))}
        if pkg:
            out["package"] = {"name": pkg.group(1)}
        return out

    root_manifest = load(os.path.join(ROOT, "Cargo.toml"))
    members = root_manifest.get("workspace", {}).get("members", [])
    bins = set()
    for member in members:
        manifest = os.path.join(ROOT, member, "Cargo.toml")
        if not os.path.isfile(manifest):
            fail(f"workspace member {member}: {rel(manifest)} is missing")
            continue
        data = load(manifest)
        explicit = [b["name"] for b in data.get("bin", [])]
        bins.update(explicit)
        if not explicit and os.path.isfile(os.path.join(ROOT, member, "src", "main.rs")):
            bins.add(data.get("package", {}).get("name", ""))
    return members, bins


def nats_version():
    path = os.path.join(ROOT, "scripts", "install-tools.sh")
    try:
        text = open(path).read()
    except OSError:
        fail(f"{rel(path)} is missing; it pins NATS_SERVER_VERSION")
        return None
    m = re.search(r'^NATS_SERVER_VERSION="([^"]+)"', text, re.M)
    if not m:
        fail(f'{rel(path)} has no line NATS_SERVER_VERSION="..."')
        return None
    return m.group(1)


def volume_entries(svc):
    """(source, target, is_bind) for each volume of a service."""
    out = []
    for v in svc.get("volumes") or []:
        if isinstance(v, dict):
            src, dst = v.get("source"), v.get("target")
            out.append((src, dst, v.get("type") == "bind"))
            continue
        parts = str(v).split(":")
        if len(parts) == 1:
            out.append((None, parts[0], False))  # anonymous volume
        else:
            src, dst = parts[0], parts[1]
            out.append((src, dst, src.startswith((".", "/", "~"))))
    return out


def published_ports(svc):
    """(host_ip, host_port, container_port) for each published port."""
    out = []
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            out.append((p.get("host_ip", ""), str(p.get("published", "")), str(p.get("target"))))
            continue
        spec = str(p).split("/", 1)[0]
        parts = spec.rsplit(":", 2)
        if len(parts) == 3:
            out.append((parts[0].strip("[]"), parts[1], parts[2]))
        elif len(parts) == 2:
            out.append(("", parts[0], parts[1]))
        else:
            out.append(("", "", parts[0]))
    return out


def dockerfile_lines(path):
    """Instructions with continuations joined and comments dropped."""
    lines, buf = [], ""
    for raw in open(path).read().splitlines():
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment inside a continued instruction
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        lines.append(buf + stripped)
        buf = ""
    if buf:
        lines.append(buf)
    return lines


def check_dockerfile(path, context, binaries, members):
    where = rel(path)
    stages = []  # dicts: name, image, lines
    for line in dockerfile_lines(path):
        word = line.split(None, 1)[0].upper()
        if word == "FROM":
            args = [a for a in line.split()[1:] if not a.startswith("--")]
            image = args[0] if args else ""
            name = args[2] if len(args) >= 3 and args[1].upper() == "AS" else None
            stages.append({"name": name, "image": image, "lines": []})
        elif stages:
            stages[-1]["lines"].append(line)
    if not stages:
        fail(f"{where}: no FROM line")
        return
    names = [s["name"] for s in stages if s["name"]]
    for s in stages:
        if s["image"] in names or s["image"] == "scratch":
            continue
        check_pinned(s["image"], f"{where}: FROM")

    # Build stages: what they COPY from the context must exist and not be
    # dockerignored, and must include every workspace member's manifest.
    ignore = []
    for candidate in (path + ".dockerignore", os.path.join(context, ".dockerignore")):
        if os.path.isfile(candidate):
            ignore = [l.strip().rstrip("/") for l in open(candidate)
                      if l.strip() and not l.startswith("#") and not l.startswith("!")]
            break
    copied = []
    for s in stages[:-1]:
        for line in s["lines"]:
            tokens = line.split()
            if tokens[0].upper() not in ("COPY", "ADD") or any(t.startswith("--from") for t in tokens):
                continue
            for src in [t for t in tokens[1:] if not t.startswith("--")][:-1]:
                norm = os.path.normpath(src)
                copied.append(norm)
                if not os.path.exists(os.path.join(context, norm)):
                    fail(f"{where}: COPY source '{src}' does not exist in the build context {rel(context) or '.'}")
                for pat in ignore:
                    if fnmatch.fnmatch(norm, pat) or fnmatch.fnmatch(norm.split(os.sep)[0], pat):
                        fail(f"{where}: COPY source '{src}' is excluded by the dockerignore pattern '{pat}'")
    for manifest in ["Cargo.toml", "Cargo.lock"] + [os.path.join(m, "Cargo.toml") for m in members]:
        manifest = os.path.normpath(manifest)
        if not any(manifest == c or manifest.startswith(c + os.sep) for c in copied):
            fail(f"{where}: the build stage does not copy {manifest} (needed by cargo --locked)")

    # Runtime stage: every binary compose runs is copied in; not root.
    runtime = stages[-1]
    copied_bins = set()
    for line in runtime["lines"]:
        tokens = line.split()
        if tokens[0].upper() != "COPY":
            continue
        froms = [t.split("=", 1)[1] for t in tokens if t.startswith("--from=")]
        if not froms:
            continue
        if froms[0] not in names and not froms[0].isdigit() and ":" not in froms[0]:
            fail(f"{where}: COPY --from={froms[0]} names no build stage")
        srcs = [t for t in tokens[1:] if not t.startswith("--")][:-1]
        copied_bins.update(os.path.basename(s.rstrip("/")) for s in srcs)
    for b in sorted(binaries):
        if b not in copied_bins:
            fail(f"{where}: the runtime stage does not COPY the binary '{b}' that compose runs")
    users = [l.split(None, 1)[1].strip() for l in runtime["lines"] if l.split()[0].upper() == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        fail(f"{where}: the runtime stage must switch to a non-root USER")


def main():
    members, cargo_bins = workspace_binaries()
    cargo_bins = cargo_bins - TOOLS
    pinned_nats = nats_version()

    try:
        compose = yaml.safe_load(open(COMPOSE))
    except (OSError, yaml.YAMLError) as e:
        fail(f"cannot parse {rel(COMPOSE)}: {e}")
        return
    services = compose.get("services") or {}
    declared_volumes = set((compose.get("volumes") or {}).keys())

    for name in sorted((INFRA | APPS) - set(services)):
        fail(f"compose: service '{name}' is missing")

    # Images and builds.
    dockerfiles = {}
    for name, svc in services.items():
        if "image" not in svc and "build" not in svc:
            fail(f"compose: service '{name}' has neither image nor build")
        if "image" in svc:
            check_pinned(str(svc["image"]), f"compose: service '{name}'")
        build = svc.get("build")
        if build is not None:
            if isinstance(build, str):
                build = {"context": build}
            context = os.path.normpath(os.path.join(DEPLOY, build.get("context", ".")))
            dockerfile = os.path.normpath(os.path.join(context, build.get("dockerfile", "Dockerfile")))
            if not os.path.isdir(context):
                fail(f"compose: service '{name}': build context {rel(context)} does not exist")
            if not os.path.isfile(dockerfile):
                fail(f"compose: service '{name}': Dockerfile {rel(dockerfile)} does not exist")
            else:
                dockerfiles.setdefault((dockerfile, context), set())

    # The nats image is the version the project pins everywhere.
    nats = services.get("nats", {})
    if "image" in nats and pinned_nats:
        repo, tag, _ = split_image(str(nats["image"]))
        version = (tag or "").split("-", 1)[0]
        if repo not in ("nats", "library/nats", "docker.io/library/nats"):
            fail(f"compose: nats image '{nats['image']}' is not the official nats image")
        if version != pinned_nats:
            fail(f"compose: nats image tag '{tag}' is not {pinned_nats} "
                 f"(NATS_SERVER_VERSION in scripts/install-tools.sh)")
        if nats.get("healthcheck") and "alpine" not in (tag or ""):
            fail("compose: nats has a healthcheck, but the default nats image is scratch-based "
                 "(no shell, no wget); use the -alpine variant")

    # Commands: each app service runs one workspace binary; all are run.
    run_by = {}
    for name in sorted(APPS & set(services)):
        cmd = command_of(services[name])
        if not cmd:
            fail(f"compose: service '{name}' has no command naming its binary")
            continue
        binary = os.path.basename(cmd[0])
        if binary not in cargo_bins:
            fail(f"compose: service '{name}' runs '{cmd[0]}', not one of the workspace binaries "
                 f"{sorted(cargo_bins)}")
            continue
        if binary in run_by.values():
            fail(f"compose: binary '{binary}' is run by more than one service")
        run_by[name] = binary
    for b in sorted(cargo_bins - set(run_by.values())):
        fail(f"compose: no service runs the workspace binary '{b}'")
    if cargo_bins != APPS:
        fail(f"Cargo workspace binaries {sorted(cargo_bins)} differ from the expected {sorted(APPS)}")

    # Listen addresses, then every address variable names an existing service and its port.
    listen_port = {}
    for name, binary in run_by.items():
        env = env_of(services[name])
        var = LISTEN_VAR[binary]
        value = env.get(var)
        if not value:
            fail(f"compose: service '{name}' does not set {var} (the default binds 127.0.0.1, "
                 "unreachable from other containers)")
            continue
        host, port = host_port(value)
        if host not in ("0.0.0.0", "::"):
            fail(f"compose: service '{name}': {var}={value} must bind 0.0.0.0 in a container")
        listen_port[name] = port
        for peer in REQUIRED_PEERS[binary]:
            if not env.get(peer):
                fail(f"compose: service '{name}' does not set {peer} (the default points at 127.0.0.1)")
    for name, svc in services.items():
        env = env_of(svc)
        for var, value in env.items():
            if var not in ADDRESS_VAR or not value:
                continue
            host, port = host_port(value)
            if host not in services:
                fail(f"compose: service '{name}': {var}={value} names host '{host}', "
                     "which is not a compose service")
                continue
            if host != ADDRESS_VAR[var]:
                fail(f"compose: service '{name}': {var} points at '{host}', expected '{ADDRESS_VAR[var]}'")
            expected = listen_port.get(host, INFRA_PORT.get(host))
            if expected is not None and port != expected:
                fail(f"compose: service '{name}': {var}={value} uses port {port}, "
                     f"but '{host}' listens on {expected}")

    # Every environment variable a service reads is set explicitly, so the
    # compose file shows the whole configuration.
    for name, binary in sorted(run_by.items()):
        env = env_of(services[name])
        for var in sorted(env_read_by(binary) - set(env)):
            fail(f"compose: service '{name}' does not set {var}, which {binary} reads")

    # Auth and gateway agree on the JWT issuer and audience.
    by_binary = {b: env_of(services[n]) for n, b in run_by.items()}
    if "auth" in by_binary and "gateway" in by_binary:
        for var, default in (("JWT_ISSUER", "chat-auth"), ("JWT_AUDIENCE", "chat")):
            a = by_binary["auth"].get(var) or default
            g = by_binary["gateway"].get(var) or default
            if a != g:
                fail(f"compose: {var} differs between auth ({a}) and gateway ({g})")

    # Published ports reach what the service listens on; gRPC ports on host loopback.
    for name, binary in run_by.items():
        ports = published_ports(services[name])
        for host_ip, host_port_, target in ports:
            if name in listen_port and target != str(listen_port[name]):
                fail(f"compose: service '{name}' publishes container port {target}, "
                     f"but listens on {listen_port[name]}")
        if binary in GRPC_BINARIES and name in listen_port:
            p = str(listen_port[name])
            if not any(ip == "127.0.0.1" and hp == p and t == p for ip, hp, t in ports):
                fail(f"compose: service '{name}' should publish 127.0.0.1:{p}:{p} for grpcurl")

    # depends_on targets exist; service_healthy targets have a healthcheck.
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            if dep not in services:
                fail(f"compose: service '{name}' depends on '{dep}', which does not exist")
                continue
            condition = (spec or {}).get("condition", "service_started")
            hc = services[dep].get("healthcheck") or {}
            if condition == "service_healthy" and (not hc.get("test") or hc.get("disable")):
                fail(f"compose: service '{name}' waits for '{dep}' to be healthy, "
                     f"but '{dep}' has no healthcheck")

    # Volumes: bind sources exist, named volumes are declared.
    for name, svc in services.items():
        for src, dst, is_bind in volume_entries(svc):
            if is_bind:
                path = os.path.normpath(os.path.join(DEPLOY, os.path.expanduser(src)))
                if not os.path.exists(path):
                    fail(f"compose: service '{name}' mounts {src}, but {rel(path)} does not exist")
            elif src and src not in declared_volumes:
                fail(f"compose: service '{name}' uses volume '{src}', not declared under top-level volumes")

    # nats: its config is mounted where the command reads it, with JetStream on a volume.
    if nats:
        cmd = command_of(nats)
        conf_target = "/etc/nats/nats-server.conf"  # the alpine image's default
        for flag in ("--config", "-c"):
            if flag in cmd and cmd.index(flag) + 1 < len(cmd):
                conf_target = cmd[cmd.index(flag) + 1]
        vols = volume_entries(nats)
        conf_src = next((s for s, d, b in vols if b and d == conf_target), None)
        if conf_src is None:
            fail(f"compose: nats reads {conf_target}, but nothing is mounted there")
        elif os.path.isfile(os.path.join(DEPLOY, conf_src)):  # a missing file is reported above
            conf_path = os.path.normpath(os.path.join(DEPLOY, conf_src))
            conf = open(conf_path).read()
            conf_src = rel(conf_path)
            # The pinned nats-server itself parses the file (`-t`: test the configuration).
            server = os.path.join(ROOT, ".tools/bin/nats-server")
            if os.path.exists(server):
                tested = subprocess.run([server, "-t", "-c", conf_path], capture_output=True, text=True)
                if tested.returncode != 0:
                    fail(f"{conf_src}: nats-server refuses it: {(tested.stderr or tested.stdout).strip()}")
            # The durability docs/operations.md promises: an fsync before every ack.
            if not re.search(r"^\s*sync_interval\s*[:=]\s*always\b", conf, re.M):
                fail(f"{conf_src}: JetStream must set sync_interval: always (docs/operations.md, durability)")
            m = re.search(r"jetstream\s*[:=]?\s*\{[^}]*store_dir\s*[:=]\s*\"?([^\s\"}]+)", conf)
            if not m:
                fail(f"{conf_src}: needs a jetstream {{ store_dir: ... }} block")
            else:
                store = m.group(1)
                if not any(not b and (store == d or store.startswith(d.rstrip("/") + "/"))
                           for s, d, b in vols):
                    fail(f"{conf_src}: JetStream store_dir {store} is not on a volume")
            if not re.search(r"^\s*http\s*[:=]\s*\S*8222", conf, re.M):
                fail(f"{conf_src}: HTTP monitoring on 8222 (used by the healthcheck) is not enabled")

    # postgres: the init script is mounted into docker-entrypoint-initdb.d.
    pg = services.get("postgres", {})
    if pg and not any(b and d.startswith("/docker-entrypoint-initdb.d") for s, d, b in volume_entries(pg)):
        fail("compose: postgres mounts no init script into /docker-entrypoint-initdb.d "
             "(the history database would not exist)")

    for (dockerfile, context) in dockerfiles:
        check_dockerfile(dockerfile, context, set(run_by.values()), members)


main()
if errors:
    print("check-deploy: FAILED", file=sys.stderr)
    for e in errors:
        print(f"  - {e}", file=sys.stderr)
    sys.exit(1)
print("deploy files OK")
PY
