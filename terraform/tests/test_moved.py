"""Resources that became instances of one resource with for_each keep their state: every address
they had has a `moved` block to its instance, so the next apply of an existing deployment moves
state instead of destroying and creating (a destroyed secret or password would revoke every link
signed with it; a destroyed service would drop its URL's traffic)."""

import re

import pytest
import tf

M = tf.module

# The addresses the module declared one by one until they were collapsed (main at 438544f), and
# the instance each one is now.
FORMER = {
    "google_cloud_run_v2_service.submit": 'google_cloud_run_v2_service.function["submit"]',
    "google_cloud_run_v2_service.generate": 'google_cloud_run_v2_service.function["generate"]',
    "google_cloud_run_v2_service.relay": 'google_cloud_run_v2_service.function["relay"]',
    "google_secret_manager_secret.capability_secret": 'google_secret_manager_secret.signing_key["capability_secret"]',
    "google_secret_manager_secret.link_secret": 'google_secret_manager_secret.signing_key["link_secret"]',
    "random_password.capability_secret": 'random_password.signing_key["capability_secret"]',
    "random_password.link_secret": 'random_password.signing_key["link_secret"]',
    "google_secret_manager_secret_version.capability_secret": 'google_secret_manager_secret_version.signing_key["capability_secret"]',
    "google_secret_manager_secret_version.link_secret": 'google_secret_manager_secret_version.signing_key["link_secret"]',
}

INSTANCE = re.compile(r'(\w+)\.(\w+)\["([\w-]+)"\]')


def check_move(moved_from: str, moved_to: str) -> None:
    """What Terraform needs of a move into a for_each instance: the old address is gone, the new
    one is a declared instance of a resource of the same type."""
    from_type, from_name = moved_from.split(".")
    assert (from_type, from_name) not in M().resources, f"{moved_from} is still declared: the move would conflict"
    m = INSTANCE.fullmatch(moved_to)
    assert m, f"{moved_to} is not an instance address TYPE.NAME[\"KEY\"]"
    to_type, to_name, key = m.groups()
    assert to_type == from_type, f"moved cannot change a resource's type: {moved_from} -> {moved_to}"
    keys = tf.for_each_keys(M().resource(to_type, to_name))
    assert key in keys, f"{to_type}.{to_name} has no instance {key!r} (its for_each keys: {keys})"


@pytest.mark.parametrize("former", FORMER)
def test_every_former_address_moves_to_its_instance(former):
    assert former in M().moved, f"no moved block from {former}: an apply would destroy and create it"
    assert M().moved[former] == FORMER[former]
    check_move(former, M().moved[former])


def test_every_moved_block_lands_on_a_declared_instance():
    assert M().moved
    for moved_from, moved_to in M().moved.items():
        check_move(moved_from, moved_to)


def test_the_check_refuses_a_move_to_a_missing_instance_or_from_a_declared_resource():
    with pytest.raises(AssertionError, match="no instance"):
        check_move("random_password.capability_secret", 'random_password.signing_key["capabilty_secret"]')
    with pytest.raises(AssertionError, match="still declared"):
        check_move("google_secret_manager_secret.gemini_api_key", 'google_secret_manager_secret.signing_key["link_secret"]')
    with pytest.raises(AssertionError, match="type"):
        check_move("random_password.link_secret", 'google_secret_manager_secret.signing_key["link_secret"]')


def test_the_module_asks_for_a_terraform_that_moves_into_for_each():
    """moved blocks exist from Terraform 1.1; the module's floor must be at least that."""
    (required,) = [t["required_version"] for t in M().terraform if "required_version" in t]
    m = re.fullmatch(r">=\s*(\d+)\.(\d+)(?:\.\d+)?", required)
    assert m and (int(m.group(1)), int(m.group(2))) >= (1, 1), required


@pytest.mark.parametrize("env", tf.ENVS)
def test_the_environments_call_the_module_that_holds_the_moves(env):
    """moved blocks in a module apply to every call of it: both environments call it once."""
    (call,) = tf.env(env).modules.values()
    assert call["source"] == "../../modules/assetgen"


def test_make_deploys_targets_are_declared_and_the_readme_says_how_to_resolve_pending_moves():
    """make deploy's first apply is targeted: its targets must still exist, and since Terraform
    refuses a targeted plan while a move is pending, it is made only when they are not in the
    state yet (a first deploy, which has nothing to move)."""
    script = (tf.ROOT / "tools" / "deploy.sh").read_text()
    first = re.search(r"first=\(([^)]*)\)", script)
    assert first, "make deploy no longer lists its first apply's targets in first=(…)"
    targets = re.findall(r"module\.assetgen\.(\w+)\.(\w+)", first.group(1))
    assert 'tf state list "${first[@]}"' in script, "the targeted apply must be skipped once its targets exist"
    assert '"${first[@]/#/-target=}"' in script
    assert targets, "make deploy no longer targets its first apply: drop this test's second half"
    for type_, name in targets:
        M().resource(type_, name)
        assert f"{type_}.{name}" not in M().moved, f"make deploy targets {type_}.{name}, which moved"
    readme = " ".join((tf.ROOT / "README.md").read_text().split())
    assert "Moved resource instances excluded by targeting" in readme
    assert "terraform/modules/assetgen/moved.tf" in readme
