#!/usr/bin/env bash
# Fuzzes the gateway's HTTP API, as docs/openapi.yaml describes it, with
# schemathesis against a running gateway (GATEWAY_URL), signed in as a freshly
# registered user who owns a group with another member and a message (the
# calls on a conversation use those ids, tests/suites/http_fuzz.toml; random
# ids would stop at 404). Fails on any 5xx, any status the description does not list
# for the call, and any answer whose body or headers do not match it.
#
#   GATEWAY_URL=http://127.0.0.1:8080 tests/suites/http_fuzz.sh
#   HTTP_FUZZ_EXAMPLES=200 HTTP_FUZZ_SEED=7 ...   # a longer or another run
#
# Left out, on purpose:
# - logout and revoking a device: either revokes the fuzzer's own token, and
#   every later call would test only the 401 path;
# - the checks positive_data_acceptance and negative_data_rejection: the
#   protocol's rules reach beyond a schema (members must be registered users,
#   a direct conversation names exactly one, push URLs must be https, a body
#   is bounded in bytes and over the bound answers 413), so they report where
#   a schema is less precise than the protocol, not faults of the gateway;
# - the check ensure_resource_availability ("a resource just created answers
#   404"): it cannot tell the fixed ids of http_fuzz.toml from ids taken from
#   the creating call's answer. Once an earlier phase or scenario has removed
#   the fixture's member (a 204 it does not see from there), a successful
#   POST followed by a role change for that member is reported, though 404
#   is the right answer. The system tests read every created conversation and
#   member back.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
: "${GATEWAY_URL:?GATEWAY_URL must name a running gateway}"
venv="$root/.tools/venv/bin"

read -r token conversation member message < <("$venv/python" tests/suites/gateway_client.py)
export HTTP_FUZZ_CONVERSATION="$conversation" HTTP_FUZZ_MEMBER="$member" HTTP_FUZZ_MESSAGE="$message"
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance
checks+=,response_schema_conformance,missing_required_header,unsupported_method,allow_header_conformance
checks+=,use_after_free,ignored_auth

exec "$venv/schemathesis" --config-file tests/suites/http_fuzz.toml run docs/openapi.yaml \
  --url "$GATEWAY_URL" \
  --header "Authorization: Bearer $token" \
  --checks "$checks" \
  --exclude-operation-id logout \
  --exclude-operation-id revokeDevice \
  --max-examples "${HTTP_FUZZ_EXAMPLES:-25}" \
  --seed "${HTTP_FUZZ_SEED:-1}" \
  --max-time "${HTTP_FUZZ_MAX_SECONDS:-90}" \
  --request-timeout 20 \
  --no-color
