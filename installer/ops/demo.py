"""`sparkplane demo`: a whole appliance on this machine, in the foreground.

Staging side (keys, demo bundle) lives under ROOT/staging; the appliance is installed into ROOT
itself, then the installed engine and control plane run exactly as their systemd units would.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from rich.console import Console

from controlplane.appliance.layout import Layout, controlplane_command, engine_command
from controlplane.core import signing
from controlplane.core.envfile import read_env_file
from controlplane.core.security import write_private_file
from installer.bundle.trust import TrustStore
from installer.ops.processes import ManagedProcess, wait_http_ok
from installer.provision.install import InstallResult, install
from installer.provision.release_cli import FIRST_ADMIN, ReleaseCliError, run_release_cli

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_SPEC = REPO_ROOT / "offline-bundle" / "demo.yaml"
DEMO_TENANT = "demo"

UNIX_SOCKET_PATH_MAX = 107
WILDCARD_ADDRESSES = ("0.0.0.0", "::")  # noqa: S104 (only compared, never bound)

console = Console(stderr=True)


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and why."""


def ensure_bundle(staging: Path, spec: Path) -> tuple[Path, Path]:
    """Make the signing key and the demo bundle unless they exist (install verifies it)."""
    from installer.bundle.build import build_bundle

    keys_dir = staging / "keys"
    if not (keys_dir / "bundle.key").exists():
        signing.generate_keypair(keys_dir)
    bundle = staging / "bundle"
    if not (bundle / "manifest.json").exists():
        console.print(f"[bold]Building the demo bundle[/] from {spec} (first run downloads wheels)")
        build_bundle(spec, keys_dir / "bundle.key", bundle)
    return bundle, keys_dir / "bundle.pub"


def start_engine(root: Path, log_dir: Path) -> ManagedProcess:
    """Start the installed engine exactly as its systemd unit would."""
    argv, env = engine_command(Layout.at(root))
    if "TMPDIR" in env:
        tmpdir = Path(env["TMPDIR"])
        # vLLM binds unix sockets named TMPDIR/<uuid>; sun_path holds 107 bytes.
        if len(str(tmpdir)) + 37 > UNIX_SOCKET_PATH_MAX:
            raise DemoError(
                f"the engine's socket directory {tmpdir} is too long for unix sockets "
                f"(at most {UNIX_SOCKET_PATH_MAX - 37} characters): use a shorter --root"
            )
        tmpdir.mkdir(parents=True, exist_ok=True)
    return ManagedProcess.start("engine", argv, env, log_dir / "engine.log")


def start_controlplane(root: Path, log_dir: Path) -> ManagedProcess:
    """Start the installed control plane exactly as its systemd unit would."""
    argv = controlplane_command(Layout.at(root))
    return ManagedProcess.start("controlplane", argv, {}, log_dir / "controlplane.log")


def provision_demo_identities(root: Path, result: InstallResult) -> dict[str, str]:
    """Create the demo tenant and its key through the installed CLI; find the admin's password."""
    layout = Layout.at(root)
    listing = run_release_cli(layout, "tenants", "list").stdout
    if DEMO_TENANT not in {line.split("\t", 1)[0] for line in listing.splitlines()}:
        # The only tenant may use the whole engine: its batch and what may wait in it.
        settings = read_env_file(layout.controlplane_env)
        engine = int(settings["SPARKPLANE_ENGINE_CAPACITY"]) + int(
            settings.get("SPARKPLANE_ENGINE_QUEUE", "0")
        )
        run_release_cli(layout, "tenants", "create", DEMO_TENANT, "--max-concurrency", str(engine))
    api_key = run_release_cli(layout, "keys", "create", "--tenant", DEMO_TENANT).stdout
    if result.first_admin is not None:
        password = result.first_admin.password
    else:
        # A re-run: the one-time password was shown before; issue a new one and store it again.
        reset = run_release_cli(
            layout, "admins", "create", FIRST_ADMIN, "--role", "admin", "--reset"
        )
        password = reset.stdout.strip().splitlines()[-1]
        write_private_file(layout.etc / "initial-admin-password", (password + "\n").encode())
    return {"api_key": api_key.strip().splitlines()[-1], "admin_password": password}


def run_demo(root: Path, host: str, port: int, spec: Path, bundle: Path | None) -> None:
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    (root / "demo.json").unlink(missing_ok=True)
    started = time.monotonic()
    if bundle is None:
        bundle, pubkey = ensure_bundle(root / "staging", spec)
        trusted = [signing.load_public_key(pubkey)]
    else:
        # A bundle brought by hand is trusted only through keys the appliance already trusts.
        trusted = TrustStore(Layout.at(root).trust).keys()
        if not trusted:
            raise DemoError(f"no trusted signing key under {Layout.at(root).trust}: install first")
    result = install(
        bundle, root, trusted, profile="demo", controlplane_port=port, controlplane_bind=host
    )
    log_dir = root / "var" / "log" / "sparkplane"
    log_dir.mkdir(parents=True, exist_ok=True)
    processes: list[ManagedProcess] = []

    def stop_all(*_: object) -> None:
        for process in reversed(processes):
            process.stop()

    # SIGTERM takes the same path as Ctrl-C, so both leave nothing running; SIGINT is set
    # explicitly because a shell starts background jobs with it ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        console.print("[bold]Starting the engine[/] (real vLLM on CPU, loopback only)")
        engine = start_engine(root, log_dir)
        processes.append(engine)
        wait_http_ok(f"http://127.0.0.1:{result.engine_port}/health", 600, engine)
        console.print("[bold]Starting the control plane[/]")
        controlplane = start_controlplane(root, log_dir)
        processes.append(controlplane)
        base = f"http://{'127.0.0.1' if host in WILDCARD_ADDRESSES else host}:{port}"
        wait_http_ok(base + "/readyz", 120, controlplane)
        identities = provision_demo_identities(root, result)
        demo = {
            "url": base + "/v1",
            "model": result.served_model_name,
            "api_key": identities["api_key"],
            "console_url": base + "/console/",
            "admin_user": FIRST_ADMIN,
            "admin_password": identities["admin_password"],
        }
        demo_file = root / "demo.json"
        demo_file.write_text(json.dumps(demo, indent=2) + "\n")
        os.chmod(demo_file, 0o600)
        print_ready(demo, time.monotonic() - started, log_dir)
        while all(p.alive() for p in processes):
            time.sleep(0.5)
        dead = [p.name for p in processes if not p.alive()]
        raise DemoError(f"{', '.join(dead)} exited unexpectedly; see {log_dir}")
    except KeyboardInterrupt:
        console.print("\nStopping the demo…")
    except (RuntimeError, TimeoutError, ReleaseCliError) as exc:
        raise DemoError(str(exc)) from exc
    finally:
        stop_all()
        (root / "demo.json").unlink(missing_ok=True)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def print_ready(demo: dict[str, str], elapsed: float, log_dir: Path) -> None:
    curl = (
        f"curl -s {demo['url']}/chat/completions -H 'Authorization: Bearer {demo['api_key']}' "
        f'-H \'Content-Type: application/json\' -d \'{{"model": "{demo["model"]}", '
        f'"messages": [{{"role": "user", "content": "Hello"}}], "max_tokens": 16}}\''
    )
    console.print(f"\n[bold green]Sparkplane demo is up[/] in {elapsed:.0f} s")
    console.print(
        f"  console : {demo['console_url']}  (user {demo['admin_user']}, "
        f"password {demo['admin_password']})"
    )
    console.print(f"  API     : {demo['url']}  model {demo['model']}")
    console.print(f"  key     : {demo['api_key']}")
    console.print(f"  logs    : {log_dir}")
    console.print("  try     :")
    print(curl, flush=True)
    console.print("Press Ctrl-C to stop everything.")
