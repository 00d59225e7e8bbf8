"""Which inventory variables a site may set (`--vars`, an inventory's host and group vars).

The site settings are docs/installer.md's table; every other name of group_vars/all.yml is
derived from them, decided by the installer or given by an option, and refused.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from installer.provision.apply import OPTION_VARS, InstallError, site_vars_of

REPO = Path(__file__).resolve().parents[3]
PLAYBOOKS = REPO / "playbooks"
GROUP_VARS = yaml.safe_load((PLAYBOOKS / "group_vars" / "all.yml").read_text())


def documented_site_settings() -> list[str]:
    """The names in the first column of docs/installer.md's table of inventory variables
    (`sparkplane_controlplane_ldap_*` stands for every group_vars name it matches)."""
    text = (REPO / "docs" / "installer.md").read_text()
    table = text.split("| variable | default | what |", 1)[1].split("\n\n", 1)[0]
    names = []
    for row in table.splitlines()[2:]:
        for pattern in re.findall(r"`(sparkplane_[\w*]+)`", row.split("|")[1]):
            prefix = pattern.removesuffix("*")
            names += [name for name in GROUP_VARS if name == pattern or
                      (pattern.endswith("*") and name.startswith(prefix))]  # fmt: skip
    return names


def refusals(**given: object) -> dict[str, str]:
    """Each refused name and why, as the install reports them."""
    try:
        site_vars_of(given, PLAYBOOKS)
    except InstallError as exc:
        return dict(detail.split(": ", 1) for detail in exc.details)
    return {}


def test_every_documented_site_setting_is_accepted() -> None:
    settings = [name for name in documented_site_settings() if name not in OPTION_VARS]
    assert len(settings) > 40 and "sparkplane_user" in settings
    assert refusals(**{name: GROUP_VARS[name] for name in settings}) == {}


def test_every_derived_variable_is_refused_naming_why() -> None:
    derived = [name for name, value in GROUP_VARS.items() if "{{" in str(value)]
    refused = refusals(**dict.fromkeys(derived, "/x"))
    allowed = set(derived) - set(refused)
    assert allowed == {"sparkplane_python", "sparkplane_engine_urls", "sparkplane_secrets_dir",
                       "sparkplane_container_bin"}  # fmt: skip
    assert allowed <= set(documented_site_settings())
    template = "{{ sparkplane_prefix }}/etc/sparkplane"
    why = f"derived in group_vars/all.yml ({template}), not a site setting"
    assert refused["sparkplane_etc_dir"] == why


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("sparkplane_manage_system", "true only with --systemd on --root /"),
        ("sparkplane_model_source_dir", "the verified bundle's model"),
        ("sparkplane_draft_model_dir", "the draft model's place in the model store"),
        ("sparkplane_draft_model_source_dir", "the verified bundle's draft model"),
        ("sparkplane_container_archive", "the verified bundle's OCI archive"),
        ("sparkplane_engine_profile", "comes from the bundle and the plan"),
        ("sparkplane_controlplane_environment", "comes from the bundle and the plan"),
        ("sparkplane_engine_port", "give it with --engine-port"),
        ("sparkplane_firewal_ssh_port", "not a variable of the playbooks"),
    ],
)
def test_guards_and_installer_decisions_are_refused(name: str, why: str) -> None:
    assert why in refusals(**{name: True})[name]
