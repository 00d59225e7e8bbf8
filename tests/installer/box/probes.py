"""Clients run inside a box with its own python3 (the box has no network the host could use)."""

from __future__ import annotations

import json

from tests.installer.box.machine import Box

RELEASE_CLI = "/opt/sparkplane/current/controlplane-venv/bin/sparkplane"
CONFIG = "/etc/sparkplane/controlplane.env"

COMPLETION = """
import json, sys, urllib.request
port, key, model = sys.argv[1:4]
body = {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
request = urllib.request.Request(
    f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(),
    headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=60) as response:
    print(json.dumps({"status": response.status, "body": json.loads(response.read())}))
"""

# Opens a TCP connection to 127.0.0.1:port: "connected", or the error's name.
CONNECT = """
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10).close()
    print("connected")
except OSError as exc:
    print(type(exc).__name__)
"""

# A browser without JavaScript: sign in (double-submit CSRF cookie), change the one-time
# password (no other page opens before), then the dashboard and the System page.
CONSOLE = """
import http.cookiejar, json, re, sys, urllib.error, urllib.parse, urllib.request
port, user, password, new_password = sys.argv[1:5]
base = f"http://127.0.0.1:{port}/console"
class Stay(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirect is an answer to look at, not to follow
jar = http.cookiejar.CookieJar()
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), Stay())
def call(path, form=None):
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    try:
        with opener.open(base + path, data=data, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
def csrf(html):
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
statuses = {}
_, page = call("/signin")
statuses["signin"], _ = call("/signin", {"username": user, "password": password,
                                         "csrf_token": csrf(page)})
_, page = call("/password")
statuses["password"], _ = call("/password", {"current_password": password,
    "new_password": new_password, "repeat_password": new_password, "csrf_token": csrf(page)})
statuses["dashboard"], dashboard = call("/")
statuses["system"], system = call("/system")
print(json.dumps({"statuses": statuses, "system": system, "dashboard": dashboard}))
"""


READY = """
import sys, time, urllib.request
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=5) as r:
            if r.status == 200:
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(f"the control plane on port {sys.argv[1]} is not ready")
    time.sleep(0.5)
"""


def wait_ready(box: Box, port: int, timeout: float = 120) -> None:
    """Until the control plane (and through it the engine) answers /readyz."""
    box.python(READY, str(port), str(timeout))


def release_cli(box: Box, *args: str) -> str:
    """The installed release's own CLI, as the service user, with the service's settings."""
    return box.exec(RELEASE_CLI, *args, "--config", CONFIG, user="sparkplane").stdout


def complete(box: Box, port: int, key: str, model: str) -> dict[str, object]:
    answer = json.loads(box.python(COMPLETION, str(port), key, model))
    assert isinstance(answer, dict)
    return answer


def connect_as(box: Box, user: str, port: int) -> str:
    """What a program of local account `user` gets when it connects to `port` on loopback."""
    return box.python(CONNECT, str(port), user=user).strip()


def console_pages(box: Box, port: int, user: str, password: str, new: str) -> dict[str, object]:
    answer = json.loads(box.python(CONSOLE, str(port), user, password, new))
    assert isinstance(answer, dict)
    return answer
