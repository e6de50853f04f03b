"""The few calls of the gateway's HTTP API that the suites need to start: a
registered user with a logged-in device."""

from __future__ import annotations

import json
import secrets
import urllib.request

PASSWORD = "correct horse battery"


def call(gateway_url: str, path: str, body: dict, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        gateway_url.rstrip("/") + path, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def sign_up(gateway_url: str, prefix: str) -> dict:
    """Registers a fresh user and logs in: the login answer (token, user and device ids)."""
    username = f"{prefix}-{secrets.token_hex(4)}"
    call(gateway_url, "/v1/auth/register", {"username": username, "password": PASSWORD})
    return call(gateway_url, "/v1/auth/login", {"username": username, "password": PASSWORD})


def register_user(gateway_url: str, prefix: str) -> str:
    """Registers a fresh user, logs in, and returns the device's access token."""
    return sign_up(gateway_url, prefix)["access_token"]


def group_with_a_message(gateway_url: str) -> list[str]:
    """A user who owns a group with one other member and one message in it,
    so calls on a conversation reach past "not found": the owner's token, the
    group's id, the other member's id and the message's id."""
    owner = sign_up(gateway_url, "owner")
    member = sign_up(gateway_url, "member")
    token = owner["access_token"]
    group = call(
        gateway_url, "/v1/conversations", {"kind": "group", "title": "fuzz", "members": [member["user_id"]]}, token
    )
    conversation_id = group["conversation_id"]
    message = call(
        gateway_url, f"/v1/conversations/{conversation_id}/messages", {"client_msg_id": "fuzz-1", "body": "hi"}, token
    )
    return [token, conversation_id, member["user_id"], message["message_id"]]


if __name__ == "__main__":
    import os
    import sys

    # For tools run from shell scripts (schemathesis): space-separated values.
    print(*group_with_a_message(os.environ["GATEWAY_URL"]))
