"""templates/ rendered with Jinja2 the way Ansible's template module does, then checked exactly.

The container unit is checked here by the exact
command line it would execute; nftables rules are checked by `nft -c`; units by systemd-analyze.
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest

from controlplane.core.config import read_config_file
from controlplane.core.envfile import read_env_file
from tests.e2e.netns import NetworkNamespace
from tests.installer.box.probes import CONNECT
from tests.installer.fixtures.templates import DRAFT, MODEL, SPEC, STATE, exec_start, render

ENGINE_TAIL = [
    "-m",
    "vllm.entrypoints.openai.api_server",
    "--model",
    MODEL,
    "--served-model-name",
    "gemma",
    "--host",
    "0.0.0.0",
    "--port",
    "8000",
    "--max-model-len",
    "32768",
    "--speculative-config",
    SPEC,
    "--allowed-media-domains",
    "no-remote-media/",
]


def test_podman_engine_command_line_is_exact() -> None:
    unit = render("sparkplane-engine.service.j2", sparkplane_engine_runtime="container")
    assert exec_start(unit) == [
        "/usr/bin/podman",
        "run",
        "--rm",
        "--pull",
        "never",
        "--name",
        "sparkplane-engine",
        "--device",
        "nvidia.com/gpu=all",
        "--shm-size",
        "16g",
        "--ulimit",
        "memlock=-1",
        "--ulimit",
        "stack=67108864",
        "--publish",
        "127.0.0.1:8000:8000",
        "--env-file",
        "/etc/sparkplane/engine.env",
        "--volume",
        f"{MODEL}:{MODEL}:ro",
        "--volume",
        f"{DRAFT}:{DRAFT}:ro",
        "--volume",
        f"{STATE}:{STATE}",
        "--entrypoint",
        "python3",
        "nvcr.io/nvidia/vllm:26.01-py3",
        *ENGINE_TAIL,
    ]
    assert "ExecStartPre=-/usr/bin/podman rm --force sparkplane-engine" in unit
    assert "ExecStop=/usr/bin/podman stop --time 30 sparkplane-engine" in unit


def test_docker_uses_gpus_all_and_the_same_engine_arguments() -> None:
    unit = render(
        "sparkplane-engine.service.j2",
        sparkplane_engine_runtime="container",
        sparkplane_container_engine="docker",
        sparkplane_container_bin="/usr/bin/docker",
    )
    argv = exec_start(unit)
    assert argv[:9] == [
        "/usr/bin/docker",
        "run",
        "--rm",
        "--pull",
        "never",
        "--name",
        "sparkplane-engine",
        "--gpus",
        "all",
    ]
    assert argv[-len(ENGINE_TAIL) :] == ENGINE_TAIL


def test_wheelhouse_unit_and_args_file_carry_the_same_arguments() -> None:
    unit = render("sparkplane-engine.service.j2")
    args_file = [line for line in render("engine.args.j2").splitlines() if not line.startswith("#")]
    argv = exec_start(unit)
    assert argv[:3] == [
        "/opt/sparkplane/current/engine-venv/bin/python",
        "-m",
        "vllm.entrypoints.openai.api_server",
    ]
    assert argv[3:] == args_file
    assert args_file[args_file.index("--host") + 1] == "127.0.0.1"
    assert json.loads(args_file[args_file.index("--speculative-config") + 1]) == {
        "model": DRAFT,
        "num_speculative_tokens": 3,
    }


def test_no_draft_no_speculative_config_and_no_draft_volume() -> None:
    for runtime in ("wheelhouse", "container"):
        unit = render(
            "sparkplane-engine.service.j2",
            sparkplane_engine_runtime=runtime,
            sparkplane_engine_speculative_tokens=0,
        )
        assert "--speculative-config" not in exec_start(unit)
        assert f"{DRAFT}:{DRAFT}:ro" not in exec_start(unit)


def test_media_urls_are_refused_unless_the_site_allows_hosts() -> None:
    args = render("engine.args.j2").splitlines()
    assert args[args.index("--allowed-media-domains") + 1 :] == ["no-remote-media/"]
    allowed = render("engine.args.j2", sparkplane_engine_media_domains=["media.site.lan"])
    lines = allowed.splitlines()
    assert lines[lines.index("--allowed-media-domains") + 1 :] == ["media.site.lan"]
    assert "VLLM_MEDIA_URL_ALLOW_REDIRECTS=0" in render("engine.env.j2").splitlines()


def test_percent_and_dollar_are_escaped_for_systemd() -> None:
    unit = render(
        "sparkplane-engine.service.j2",
        sparkplane_engine_profile_args=["--chat-template-kwargs", "100%$HOME"],
    )
    assert "'100%%$$HOME'" in unit


def test_engine_unit_is_hardened_and_cannot_reach_the_network() -> None:
    unit = render("sparkplane-engine.service.j2")
    for directive in (
        "User=sparkplane",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ReadWritePaths={STATE}",
        "PrivateTmp=yes",
        "IPAddressDeny=any",
        "IPAddressAllow=localhost",
    ):
        assert directive in unit.splitlines(), directive


def test_controlplane_unit_is_hardened() -> None:
    unit = render("sparkplane-controlplane.service.j2")
    lines = unit.splitlines()
    for directive in (
        "User=sparkplane",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/sparkplane/controlplane",
        "PrivateTmp=yes",
    ):
        assert directive in lines, directive


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    current = tmp_path / "current"
    for venv, program in (("engine-venv", "python"), ("controlplane-venv", "sparkplane")):
        (current / venv / "bin").mkdir(parents=True)
        (current / venv / "bin" / program).symlink_to(shutil.which("true") or "/bin/true")
    paths = []
    units = ("sparkplane-engine.service", "sparkplane-controlplane.service")
    for name in (*units, "sparkplane-firewall.service"):
        path = tmp_path / name
        path.write_text(render(f"{name}.j2", sparkplane_current_dir=str(current)))
        paths.append(str(path))
    done = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(Path(paths[0]).read_text().replace("ProtectSystem=strict", "ProtectSystem=x"))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(broken)], capture_output=True, text=True
    )
    assert "protect system" in done.stderr.lower()  # verify really reads the directives


def test_engine_env_has_the_air_gap_variables() -> None:
    lines = render("engine.env.j2").splitlines()
    for line in (
        "HF_HUB_OFFLINE=1",
        "TRANSFORMERS_OFFLINE=1",
        "VLLM_NO_USAGE_STATS=1",
        "VLLM_DO_NOT_TRACK=1",
        "DO_NOT_TRACK=1",
        "VLLM_HOST_IP=127.0.0.1",
        f"VLLM_CACHE_ROOT={STATE}/cache",
        f"TMPDIR={STATE}/tmp",
        "VLLM_NVFP4_GEMM_BACKEND=marlin",
    ):
        assert line in lines, line
    with_cubins = render("engine.env.j2", sparkplane_flashinfer_cubin_dir="/opt/fi/cubins")
    assert "FLASHINFER_CUBIN_DIR=/opt/fi/cubins" in with_cubins.splitlines()


def test_container_engine_unit_keeps_the_hardening_a_root_runtime_allows() -> None:
    unit = render("sparkplane-engine.service.j2", sparkplane_engine_runtime="container")
    lines = unit.splitlines()
    for directive in ("NoNewPrivileges=yes", "ProtectHome=yes", "PrivateTmp=yes",
                      "ProtectKernelModules=yes", "ProtectKernelLogs=yes", "ProtectClock=yes",
                      "RestrictRealtime=yes", "LimitMEMLOCK=infinity"):  # fmt: skip
        assert directive in lines, directive
    # As docs/installer.md says: an IP filter on the unit would not reach the container's own
    # cgroup scope, so the unit does not claim one; 127.0.0.1 publishing confines the port.
    assert not [line for line in lines if line.startswith(("IPAddress", "User="))]
    published = lines[lines.index("  '--publish' \\") + 1]
    assert published.startswith("  '127.0.0.1:"), published


def test_firewall_unit_loads_at_boot_and_unloads_on_stop() -> None:
    lines = render("sparkplane-firewall.service.j2").splitlines()
    assert "ExecStart=/usr/sbin/nft --file /etc/sparkplane/nftables.conf" in lines
    assert "ExecStop=/usr/sbin/nft delete table inet sparkplane" in lines
    assert "Before=network-pre.target shutdown.target" in lines
    assert "WantedBy=sysinit.target" in lines and "RemainAfterExit=yes" in lines


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft not installed")
@pytest.mark.parametrize("deny_egress", [False, True, "false"])
def test_nftables_rules_parse_and_open_only_ssh_and_the_control_plane(
    tmp_path, deny_egress
) -> None:
    text = render(
        "nftables.conf.j2",
        sparkplane_firewall_deny_egress=deny_egress,
        sparkplane_firewall_egress_allow=["10.20.0.0/16", "fd00:20::/48", "2001:db8::1"],
        sparkplane_user="daemon",  # nft refuses a user name this machine does not have
    )
    rules = tmp_path / "nftables.conf"
    rules.write_text(text)
    done = subprocess.run(["nft", "-c", "-f", str(rules)], capture_output=True, text=True)
    if "Operation not permitted" in done.stderr:
        pytest.skip("nft -c needs CAP_NET_ADMIN here")
    assert done.returncode == 0, done.stderr
    accepted = [line.split()[2] for line in map(str.strip, text.splitlines())
                if line.startswith("tcp dport") and line.endswith(" accept")]  # fmt: skip
    assert accepted == ["22", "443"]
    guard = [line.strip() for line in text.splitlines() if "skuid" in line]
    assert guard == [
        'oif "lo" tcp dport 8000 tcp flags & (syn | ack) == syn'
        ' meta skuid != { 0, "daemon" } counter reject with tcp reset'
    ]
    assert "policy drop" in text
    assert ("chain output" in text) is (deny_egress is True)  # "false" from an INI inventory
    if deny_egress is True:  # each address family in its own match: nft -c refuses a mix
        allowed = [line.strip() for line in text.splitlines() if "daddr" in line]
        assert allowed == ["ip daddr 10.20.0.0/16 accept", "ip6 daddr fd00:20::/48 accept",
                           "ip6 daddr 2001:db8::1 accept"]  # fmt: skip
    rules.write_text(text.replace("policy drop", "policy maybe"))
    assert subprocess.run(["nft", "-c", "-f", str(rules)], capture_output=True).returncode != 0


# Listens on the ports given, in the namespace, until killed.
LISTEN = """
import socket, sys, time
servers = [socket.create_server(("127.0.0.1", int(port))) for port in sys.argv[1:]]
print("listening", flush=True)
time.sleep(600)
"""
SYSTEM_PYTHON = "/usr/bin/python3"  # not the venv's: other accounts cannot read /root


# A container runtime publishing the engine's port: loopback connections to it are rewritten
# (DNAT, at the nat priority) to where the engine really listens, as root podman's rules do.
PUBLISHED = """
table ip published
delete table ip published
table ip published {{
  chain output {{
    type nat hook output priority -100; policy accept;
    ip daddr 127.0.0.1 tcp dport {published} dnat to 127.0.0.1:{listening}
  }}
}}
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not all(map(shutil.which, ("ip", "nft", "setpriv", SYSTEM_PYTHON))),
    reason="needs root, ip, nft, setpriv and /usr/bin/python3",
)
@pytest.mark.parametrize("runtime", ["wheelhouse", "container"])
def test_only_root_and_the_service_user_may_connect_to_the_engine_port(tmp_path, runtime) -> None:
    """The rules on a real kernel, in a network namespace of their own. Another local account is
    refused at the engine's port, where it would use the model without a key, limits or audit;
    the control plane's port stays open to it. In a container the engine's port is published
    by a DNAT rule, which the guard runs before."""
    engine_port, controlplane_port = 18000, 18080
    listening = engine_port + 1 if runtime == "container" else engine_port
    rules = tmp_path / "nftables.conf"
    rules.write_text(render("nftables.conf.j2", sparkplane_user="daemon",
                            sparkplane_engine_port=engine_port,
                            sparkplane_controlplane_port=controlplane_port))  # fmt: skip
    with NetworkNamespace.create("firewall") as namespace:
        loaded = namespace.run(["nft", "-f", str(rules)])
        assert loaded.returncode == 0, loaded.stderr
        if runtime == "container":
            published = tmp_path / "published.nft"
            published.write_text(PUBLISHED.format(published=engine_port, listening=listening))
            loaded = namespace.run(["nft", "-f", str(published)])
            assert loaded.returncode == 0, loaded.stderr
        listener = namespace.popen([SYSTEM_PYTHON, "-c", LISTEN, str(listening),
                                    str(controlplane_port)], stdout=subprocess.PIPE)  # fmt: skip
        try:
            assert listener.stdout is not None and listener.stdout.readline() == "listening\n"

            def connect(user: str, port: int) -> str:
                account = pwd.getpwnam(user)
                run_as = ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}",
                          "--clear-groups"]  # fmt: skip
                done = namespace.run([*run_as, SYSTEM_PYTHON, "-c", CONNECT, str(port)])
                assert done.returncode == 0, done.stderr
                return done.stdout.strip()

            assert connect("root", engine_port) == "connected"
            assert connect("daemon", engine_port) == "connected"
            assert connect("nobody", engine_port) == "ConnectionRefusedError"
            assert connect("nobody", controlplane_port) == "connected"
            counted = namespace.run(["nft", "list", "chain", "inet", "sparkplane", "engine_guard"])
            assert "counter packets 1 " in counted.stdout, counted.stdout
        finally:
            listener.kill()
            listener.wait()


def test_container_mounts_the_bundled_flashinfer_kernels_read_only() -> None:
    cubins = "/opt/sparkplane/current/flashinfer-cache"
    unit = render(
        "sparkplane-engine.service.j2",
        sparkplane_engine_runtime="container",
        sparkplane_flashinfer_cubin_dir=cubins,
    )
    argv = exec_start(unit)
    mount = argv.index(f"{cubins}:{cubins}:ro")
    assert argv[mount - 1] == "--volume" and argv[mount + 1] == "--entrypoint"


# Values an operator or a bundle could give: each must reach the service as it is. Plain ones
# are written as they are; the others need the double quotes of templates/_env.j2.
PLAIN = [
    "/srv/with space/sparkplane",
    'it\'s a "quote" inside',
    "a#b",
    "#first",
    "x=y=z",
    "$HOME ${HOME} %h `tick`",
    "tab\there",
    "ünïcødé",
    "",
]
NOT_PLAIN = [
    "  padded  ",
    '"quoted"',
    "'single'",
    "back\\slash\\\\double",
    "hash # comment-like",
    "two\nlines",
    "CN=Doe\\, John,OU=x",  # an LDAP DN with an escaped comma
    "Corp SSO #1",
]
AWKWARD = PLAIN + NOT_PLAIN
# The site's directory settings (docs/console.md, "Directory sign-in"): each one set to the value,
# except the URL and issuer that switch a method on, which must not be empty.
DIRECTORY_SETTINGS = {
    "sparkplane_controlplane_ldap_bind_dn": "SPARKPLANE_LDAP_BIND_DN",
    "sparkplane_controlplane_ldap_ca_file": "SPARKPLANE_LDAP_CA_FILE",
    "sparkplane_controlplane_ldap_user_base_dn": "SPARKPLANE_LDAP_USER_BASE_DN",
    "sparkplane_controlplane_ldap_user_filter": "SPARKPLANE_LDAP_USER_FILTER",
    "sparkplane_controlplane_ldap_group_base_dn": "SPARKPLANE_LDAP_GROUP_BASE_DN",
    "sparkplane_controlplane_ldap_group_filter": "SPARKPLANE_LDAP_GROUP_FILTER",
    "sparkplane_controlplane_oidc_client_id": "SPARKPLANE_OIDC_CLIENT_ID",
    "sparkplane_controlplane_oidc_ca_file": "SPARKPLANE_OIDC_CA_FILE",
    "sparkplane_controlplane_oidc_scopes": "SPARKPLANE_OIDC_SCOPES",
    "sparkplane_controlplane_oidc_username_claim": "SPARKPLANE_OIDC_USERNAME_CLAIM",
    "sparkplane_controlplane_oidc_groups_claim": "SPARKPLANE_OIDC_GROUPS_CLAIM",
    "sparkplane_controlplane_oidc_display_name": "SPARKPLANE_OIDC_DISPLAY_NAME",
}
DIRECTORY_GROUPS = {
    "sparkplane_controlplane_ldap_admin_groups": "SPARKPLANE_LDAP_ADMIN_GROUPS",
    "sparkplane_controlplane_ldap_auditor_groups": "SPARKPLANE_LDAP_AUDITOR_GROUPS",
    "sparkplane_controlplane_oidc_admin_groups": "SPARKPLANE_OIDC_ADMIN_GROUPS",
    "sparkplane_controlplane_oidc_auditor_groups": "SPARKPLANE_OIDC_AUDITOR_GROUPS",
}


def systemd_env(path: Path) -> dict[str, str]:
    """The file as systemd's EnvironmentFile= reads it: systemd's own parser, load_env_file()."""
    found = glob.glob("/usr/lib/*/systemd/libsystemd-shared-*.so")
    found += glob.glob("/usr/lib/systemd/libsystemd-shared-*.so")
    assert found, "systemd's shared library is missing: `make host-tools` installs systemd"
    load = ctypes.CDLL(found[0]).load_env_file
    load.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    entries = ctypes.POINTER(ctypes.c_char_p)()
    assert load(None, str(path).encode(), ctypes.byref(entries)) == 0
    pairs = []
    while entries[len(pairs)] is not None:
        pairs.append(entries[len(pairs)].decode().split("=", 1))
    return dict(pairs)


def container_env(text: str) -> dict[str, str]:
    """The file as podman and docker `--env-file` read it: the text after the first '='."""
    lines = [line.lstrip() for line in text.splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


@pytest.mark.parametrize("value", AWKWARD)
def test_controlplane_env_reads_the_same_in_systemd_and_the_control_plane(
    value: str, tmp_path: Path
) -> None:
    path = tmp_path / "controlplane.env"
    path.write_text(
        render(
            "controlplane.env.j2",
            sparkplane_root=value,
            sparkplane_data_dir=value,
            sparkplane_engine_urls=[value, "http://127.0.0.1:8000/v1"],
            sparkplane_activate_tls_enabled=True,
            sparkplane_tls_dir=value,
            sparkplane_secrets_dir=value,
            sparkplane_controlplane_public_url=f"https://console.lan/{value}",
            sparkplane_controlplane_ldap_url=f"ldaps://dc1.lan/{value}",
            sparkplane_controlplane_oidc_issuer=f"https://idp.lan/{value}",
            sparkplane_controlplane_oidc_client_secret="set",
            **dict.fromkeys(DIRECTORY_SETTINGS, value or "x"),  # "" would leave a line out
            **{name: [value, "cn=b"] for name in DIRECTORY_GROUPS},
        )
    )
    read = read_env_file(path)
    assert read == systemd_env(path)
    assert read["SPARKPLANE_DATA_DIR"] == read["SPARKPLANE_APPLIANCE_ROOT"] == value
    assert read["SPARKPLANE_ENGINE_URLS"] == f"{value},http://127.0.0.1:8000/v1"
    assert read["SPARKPLANE_TLS_KEY"] == f"{value}/server.key"
    assert read["SPARKPLANE_CONSOLE_PUBLIC_URL"] == f"https://console.lan/{value}"
    assert read["SPARKPLANE_LDAP_URL"] == f"ldaps://dc1.lan/{value}"
    assert read["SPARKPLANE_OIDC_ISSUER"] == f"https://idp.lan/{value}"
    assert read["SPARKPLANE_LDAP_BIND_PASSWORD_FILE"] == f"{value}/ldap-bind-password"
    assert read["SPARKPLANE_OIDC_CLIENT_SECRET_FILE"] == f"{value}/oidc-client-secret"
    assert {read[key] for key in DIRECTORY_SETTINGS.values()} == {value or "x"}
    assert {read[key] for key in DIRECTORY_GROUPS.values()} == {f"{value};cn=b"}
    assert read_config_file(path)["data_dir"] == value  # what `sparkplane --config` reads


def test_engine_env_is_read_the_same_by_systemd_podman_and_the_installer(tmp_path: Path) -> None:
    profile_env = {f"V{n}": value for n, value in enumerate(PLAIN)}
    text = render(
        "engine.env.j2",
        sparkplane_engine_state_dir="/srv/with space/engine",
        sparkplane_engine_profile_env=profile_env,
    )
    path = tmp_path / "engine.env"
    path.write_text(text)
    read = read_env_file(path)
    assert read == systemd_env(path) == container_env(text)
    assert {key: read[key] for key in profile_env} == profile_env
    assert read["TMPDIR"] == "/srv/with space/engine/tmp"
    for value in NOT_PLAIN:
        with pytest.raises(jinja2.UndefinedError, match=r"V0 in engine\.env must be a plain value"):
            render("engine.env.j2", sparkplane_engine_profile_env={"V0": value})


def test_controlplane_env_configures_retention_and_the_siem_feed(tmp_path: Path) -> None:
    from controlplane.core.config import load_settings

    tls = {"sparkplane_controlplane_siem_tls_ca": "/etc/sparkplane/siem-ca.crt",
           "sparkplane_controlplane_siem_tls_cert": "/etc/sparkplane/siem-client.crt",
           "sparkplane_controlplane_siem_tls_key": "/etc/sparkplane/siem-client.key"}  # fmt: skip
    rendered = render(
        "controlplane.env.j2", sparkplane_controlplane_siem_target="tls://siem.site.lan:6514",
        sparkplane_controlplane_audit_retention_interval_hours=12, sparkplane_root="/", **tls,
    )  # fmt: skip
    env_file = tmp_path / "controlplane.env"
    env_file.write_text(rendered.replace("SPARKPLANE_ENVIRONMENT=production", ""))
    settings = load_settings(env_file, data_dir=tmp_path)
    assert settings.siem_target == "tls://siem.site.lan:6514"
    assert settings.audit_retention_interval_hours == 12 and settings.audit_retention_days == 730
    assert str(settings.siem_tls_ca) == tls["sparkplane_controlplane_siem_tls_ca"]
    assert str(settings.siem_tls_key) == tls["sparkplane_controlplane_siem_tls_key"]
    assert "SPARKPLANE_SIEM" not in render("controlplane.env.j2", sparkplane_root="/")
