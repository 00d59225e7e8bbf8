"""A real box for the installer's tests: Debian with systemd as PID 1, in a podman container.

The root file system comes from Debian's packages (`mmdebstrap --variant=minbase`, cached under
~/.cache/sparkplane/box/), is imported into podman once per session, and each box runs it with
`--systemd=always` on runc (crun fails on this machine's cgroups). A box has no network of its
own (`--network none`: only its loopback, so its firewall rules and services never touch the
host's); SSH reaches its sshd through `podman exec ... nc 127.0.0.1 22` as a ProxyCommand, so
Ansible talks real SSH to it. `podman restart` is a reboot: systemd starts again as PID 1 and
the network namespace (with its nftables rules) is new.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"  # Python 3.11, like the bundles' platform
PACKAGES = ",".join(
    ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "openssh-server", "nftables",
     "netbase", "netcat-openbsd", "procps")  # netbase: /etc/protocols, which nft's rules name
)  # fmt: skip
CACHE = Path.home() / ".cache" / "sparkplane" / "box"


def podman_env(conf_dir: Path) -> dict[str, str]:
    """podman's environment: runc's default ulimits do not apply on this machine."""
    conf = conf_dir / "containers.conf"
    if not conf.is_file():
        conf.write_text("[containers]\ndefault_ulimits = []\n")
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def rootfs_tarball() -> Path:
    """The box's root file system (built once per package list, then reused)."""
    key = hashlib.sha256(f"{SUITE} {PACKAGES}".encode()).hexdigest()[:16]
    tarball = CACHE / f"rootfs-{SUITE}-{key}.tar"
    if tarball.is_file():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_name(f"partial-{os.getpid()}-{tarball.name}")
    command = ["mmdebstrap", "--variant=minbase", "--format=tar", f"--include={PACKAGES}"]
    command += [SUITE, str(partial)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"mmdebstrap failed: {done.stderr[-2000:]}")
    partial.replace(tarball)
    return tarball


@dataclass
class Box:
    """One running box; `exec` runs a command in it as root (or as `user`)."""

    name: str
    env: dict[str, str]

    @classmethod
    def start(
        cls, name: str, image: str, env: dict[str, str], mounts: list[Path], ssh_key: Path
    ) -> Box:
        volumes = [arg for path in mounts for arg in ("--volume", f"{path}:{path}:ro")]
        command = ["podman", "run", "--detach", "--name", name, "--hostname", name]
        command += ["--runtime", "runc", "--systemd=always", "--network", "none"]
        command += ["--cap-add", "NET_ADMIN", *volumes, image, "/sbin/init"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"podman run {name}: {done.stderr.strip()}")
        box = cls(name, env)
        try:
            box.wait_booted()
            box.exec("install", "-d", "-m", "0700", "/root/.ssh")
            key = Path(f"{ssh_key}.pub").read_text()
            box.write("/root/.ssh/authorized_keys", key, mode="0600")
        except BaseException:
            box.remove()  # a box that did not come up is not left running
            raise
        return box

    def exec(
        self, *argv: str, user: str | None = None, check: bool = True, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", user, "--"] if user else []
        command = ["podman", "exec", self.name, *prefix, *argv]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(
                f"{shlex.join(argv)} in {self.name} exited {done.returncode}:\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done

    def write(self, path: str, text: str, mode: str = "0644") -> None:
        command = ["podman", "exec", "-i", self.name, "sh", "-c",
                   f"cat > {shlex.quote(path)} && chmod {mode} {shlex.quote(path)}"]  # fmt: skip
        subprocess.run(command, env=self.env, input=text, text=True, check=True, timeout=60)

    def python(self, code: str, *args: str, user: str | None = None) -> str:
        """Run `code` with the box's own python3 (stdlib only); returns its stdout."""
        prefix = ["runuser", "-u", user, "--"] if user else []
        command = ["podman", "exec", "-i", self.name, *prefix, "python3", "-", *args]
        done = subprocess.run(command, env=self.env, input=code, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        if done.returncode != 0:
            raise AssertionError(f"python in {self.name} exited {done.returncode}:\n{done.stderr}")
        return done.stdout

    def wait_booted(self, timeout: float = 120) -> None:
        """Until systemd says the boot is over (`running`; `degraded` names the failed units)."""
        deadline = time.monotonic() + timeout
        while True:
            done = subprocess.run(
                ["podman", "exec", self.name, "systemctl", "is-system-running", "--wait"],
                env=self.env, capture_output=True, text=True, timeout=timeout,
            )  # fmt: skip
            state = done.stdout.strip()
            if state == "running":
                return
            if state == "degraded":
                failed = self.exec("systemctl", "--failed", "--no-legend", check=False).stdout
                raise AssertionError(f"{self.name} booted degraded: {failed}")
            assert time.monotonic() < deadline, f"{self.name} did not boot: {state!r}"
            time.sleep(0.5)

    def reboot(self) -> None:
        subprocess.run(["podman", "restart", "--time", "30", self.name], env=self.env,
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        self.wait_booted()

    def unit(self, unit: str, *properties: str) -> dict[str, str]:
        """`systemctl show` of a unit: {property: value}."""
        args = [f"--property={name}" for name in properties]
        shown = self.exec("systemctl", "show", *args, unit).stdout
        return dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)

    def ssh_vars(self, key: Path) -> dict[str, str]:
        """Inventory variables that reach this box over SSH (through podman exec, no network)."""
        proxy = f"podman exec -i {self.name} nc 127.0.0.1 22"
        options = [f"-o ProxyCommand={shlex.quote(proxy)}", "-o StrictHostKeyChecking=no",
                   "-o UserKnownHostsFile=/dev/null", "-o LogLevel=ERROR"]  # fmt: skip
        return {
            "ansible_connection": "ssh",
            "ansible_host": self.name,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(key),
            "ansible_ssh_common_args": " ".join(options),
            "ansible_python_interpreter": "/usr/bin/python3",
        }

    def remove(self) -> None:
        subprocess.run(["podman", "rm", "--force", "--time", "10", self.name], env=self.env,
                       capture_output=True, timeout=120)  # fmt: skip


def import_image(tarball: Path, tag: str, env: dict[str, str]) -> str:
    done = subprocess.run(["podman", "import", str(tarball), tag], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"podman import {tarball}: {done.stderr.strip()}")
    return tag


def remove_image(tag: str, env: dict[str, str]) -> None:
    subprocess.run(["podman", "rmi", "--force", tag], env=env, capture_output=True, timeout=120)


def tools_missing() -> list[str]:
    return [tool for tool in ("podman", "runc", "mmdebstrap", "ssh") if shutil.which(tool) is None]
