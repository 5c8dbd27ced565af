"""A newcomer's first hour (issue 23): defaults valid in the default mode, placeholders named, versions
checked, the minimal stack of the README planned."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stacks.checks import config_warnings
from config.support import CATALOG_READ
from config.compat import KUBERNETES_CATALOG_READ, KUBERNETES_NEWEST
from config.models import StackConfig
from config.errors import ConfigError
from tools import plan

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = ROOT / "tests" / "fixtures" / "minimal"


def _config(text: str, tmp_path: Path):
    (tmp_path / "Pulumi.t.yaml").write_text(text)
    values, secrets = plan.plan_config(plan.load_stack_file("t", tmp_path), "t")
    plan.check_plan_config(values, secrets, "t")
    return plan.stack_config(values, secrets)


def test_minimal_stack_plans_and_is_the_one_in_the_readme(tmp_path):
    result = plan.run_plan("minimal", tmp_path, MINIMAL)
    assert result.violations == []
    text = (MINIMAL / "Pulumi.minimal.yaml").read_text()
    body = text.split("\n", 1)[1]  # the README shows it without the fixture's first comment line
    assert body in (ROOT / "README.md").read_text()


def test_default_node_taints_follow_the_mode(tmp_path):
    text = (MINIMAL / "Pulumi.minimal.yaml").read_text()
    assert "nodeTaints" not in text
    assert _config(text, tmp_path).kubernetes.node_taints == ()
    joined = StackConfig.model_validate({"kubernetes": {"version": "1.32.4", "mode": "join"}})
    assert [(t.key, t.effect) for t in joined.kubernetes.node_taints] == [("nvidia.com/gpu", "NoSchedule")]


def test_plan_names_every_placeholder_secret(tmp_path):
    summary = plan.run_plan("minimal", tmp_path, MINIMAL).summary
    lines = [line for line in summary.splitlines() if "placeholder;" in line]
    assert lines == [
        "  secret gpu-stack:grafanaAdminPassword: not set, planned with a placeholder; `pulumi up` refuses the stack until "
        "`pulumi config set --secret gpu-stack:grafanaAdminPassword`",
        "  secret gpu-stack:sshPrivateKey: not set, planned with a placeholder; `pulumi up` refuses the stack until "
        "`pulumi config set --secret gpu-stack:sshPrivateKey < ~/.ssh/id_ed25519`",
    ]


@pytest.mark.parametrize("written", ['"570.172"', "570.172"])
def test_two_part_driver_version_is_refused(tmp_path, written):
    text = (MINIMAL / "Pulumi.minimal.yaml").read_text().replace("driverVersion: 580.173.02", f"driverVersion: {written}")
    with pytest.raises(ConfigError) as e:
        _config(text, tmp_path)
    [issue] = e.value.issues
    assert issue.path == "guest.nvidia.driverVersion" and "570.172" in issue.message and "'570.172.08'" in issue.message


def test_kubernetes_newer_than_the_catalog_is_a_warning():
    cfg = StackConfig.model_validate({"kubernetes": {"version": "1.99.0"}})
    [warning] = config_warnings(cfg, CATALOG_READ)
    assert warning.path == "kubernetes.version"
    assert KUBERNETES_NEWEST in warning.message and KUBERNETES_CATALOG_READ in warning.message
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", KUBERNETES_CATALOG_READ)
    assert config_warnings(StackConfig.model_validate({"kubernetes": {"version": KUBERNETES_NEWEST}}), CATALOG_READ) == []
