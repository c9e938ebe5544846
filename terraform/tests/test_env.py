"""Every variable a deployed unit's code reads is set in Terraform, and none it does not read.

The list comes from the Rust source (rust_env.py), so a variable added to the code later without
Terraform fails here. The only variables left unset are the ones below, each with its reason.
"""

import re
import shutil

import pytest
import rust_env
import tf

NOT_SET_IN_THE_CLOUD = {
    "PORT": "Cloud Run sets it (a reserved name Terraform may not set)",
    "CLOUD_RUN_TASK_INDEX": "Cloud Run sets it on a job's tasks; unset on a service, which is how generate knows its mode",
    "CLOUD_RUN_TASK_COUNT": "Cloud Run sets it on a job's tasks",
    "ASSETGEN_JOB_BATCH": "set for one execution of the job (a bulk re-run), never in its template",
    "STORAGE_EMULATOR_HOST": "tests only: points the GCS client at fake-gcs-server",
    "PUBSUB_EMULATOR_HOST": "tests only: points the Pub/Sub client at its emulator",
    "ASSETGEN_ALLOW_PRIVATE_REFS": "tests only: lets references reach loopback; the cloud keeps the SSRF guard",
    "GEMINI_BASE_URL": "tests and proxies only: the default is Google's endpoint",
    "ASSETGEN_OIDC_JWKS_URL": "tests only: the default is Google's key set, which signs the cloud's tokens",
    "ASSETGEN_LOG_FORMAT": "a terminal's override: the cloud functions log Cloud Logging's JSON by default",
    "ASSETGEN_DRAIN_SECS": "the default (7 s) is sized to Cloud Run's 10 s between SIGTERM and SIGKILL",
    "GOOGLE_APPLICATION_CREDENTIALS": "tests only: a key file that signs URLs for fake-gcs-server; Cloud Run's ADC signs in the cloud",
}

# Values that must come from Secret Manager, never a plain value.
SECRETS = {"GEMINI_API_KEY", "ASSETGEN_CAPABILITY_SECRET", "ASSETGEN_LINK_SECRET"}


@pytest.fixture(scope="module")
def read_by_unit():
    return rust_env.variables_by_service()


@pytest.mark.parametrize("unit", rust_env.SERVICES)
def test_every_variable_the_code_reads_is_set_and_nothing_else(unit, read_by_unit):
    needed = read_by_unit[unit] - NOT_SET_IN_THE_CLOUD.keys()
    set_ = set(tf.env_vars(unit))
    assert not needed - set_, f"{unit}'s code reads {sorted(needed - set_)}; set them in terraform/modules/assetgen"
    assert not set_ - needed, f"Terraform sets {sorted(set_ - needed)} on {unit}, whose code does not read them"


def test_variables_left_unset_are_still_read_and_never_set(read_by_unit):
    everything = rust_env.all_variables()
    stale = [v for v in NOT_SET_IN_THE_CLOUD if v not in everything]
    assert not stale, f"no code reads {stale} any more: drop them from NOT_SET_IN_THE_CLOUD"
    for unit in rust_env.SERVICES:
        assert not NOT_SET_IN_THE_CLOUD.keys() & set(tf.env_vars(unit)), unit


def secret_read(env_var: dict) -> str:
    """The secret an env block reads: `google_secret_manager_secret.NAME.secret_id`, or KEY of
    `google_secret_manager_secret.RESOURCE["KEY"].secret_id` (the names of local.secret_readers)."""
    key_ref = tf.one(tf.one(env_var["value_source"])["secret_key_ref"])
    assert key_ref["version"] == "latest", key_ref
    secret = tf.ref(key_ref["secret"])
    m = re.fullmatch(r'google_secret_manager_secret\.(\w+)(?:\["(\w+)"\])?\.secret_id', secret)
    assert m, f"not a Secret Manager secret's secret_id: {secret}"
    return m.group(2) or m.group(1)


@pytest.mark.parametrize("unit", rust_env.SERVICES)
def test_secrets_come_from_secret_manager_and_only_their_readers_may_read_them(unit):
    readers = tf.module().locals["secret_readers"]
    sa_key = {"generate-job": "job"}.get(unit, unit)
    for name, e in tf.env_vars(unit).items():
        is_secret = name in SECRETS or "SECRET" in name or name.endswith("_KEY")
        if not is_secret:
            assert "value_source" not in e, f"{unit}: {name} reads a secret but is not listed in SECRETS"
            continue
        assert "value" not in e, f"{unit}: {name} is a secret and must not have a plain value"
        secret_name = secret_read(e)
        assert sa_key in readers[secret_name], f"{unit} reads {name} but its service account may not read {secret_name}"
    for secret_name, who in readers.items():
        for reader in who:
            unit_name = {"job": "generate-job"}.get(reader, reader)
            reads = [secret_read(e) for e in tf.env_vars(unit_name).values() if "value_source" in e]
            assert secret_name in reads, f"{reader} may read {secret_name} but does not use it"


def test_the_readers_are_granted_the_secrets_the_env_reads():
    granted = tf.module().resource("google_secret_manager_secret_iam_member", "readers")
    assert granted["secret_id"] == "${local.secrets[each.value.secret].id}"
    assert granted["role"] == "roles/secretmanager.secretAccessor"
    assert tf.ref(granted["member"]) == "serviceAccount:${local.sa[each.value.reader]}"
    for secret_name in tf.module().locals["secret_readers"]:
        tf.secret_address(secret_name)  # each names a secret of local.secrets


def test_the_analysis_sees_a_variable_added_to_the_code(tmp_path, monkeypatch):
    """The check above can fail: a new config field read by submit shows up as submit's only."""
    for part in ("common/src", "functions/submit/src", "functions/generate/src", "functions/relay/src"):
        shutil.copytree(rust_env.ROOT / part, tmp_path / part)
    config = tmp_path / "common/src/config.rs"
    text = config.read_text()
    text = text.replace("        Ok(Self {", '        let new_thing = get("ASSETGEN_NEW_THING");\n        Ok(Self {\n            new_thing,', 1)
    config.write_text(text)
    main = tmp_path / "functions/submit/src/main.rs"
    main.write_text(main.read_text().replace("    let state = SubmitState {", "    let _n = config.new_thing.clone();\n    let state = SubmitState {", 1))
    monkeypatch.setattr(rust_env, "ROOT", tmp_path)
    monkeypatch.setattr(rust_env, "COMMON", tmp_path / "common/src")
    monkeypatch.setattr(rust_env, "FUNCTIONS", {f: tmp_path / "functions" / f / "src" for f in ("submit", "generate", "relay")})
    read = rust_env.variables_by_service()
    assert "ASSETGEN_NEW_THING" in read["submit"]
    assert all("ASSETGEN_NEW_THING" not in read[u] for u in ("generate", "relay", "generate-job"))


def test_an_unfollowable_read_fails_the_analysis(tmp_path, monkeypatch):
    shutil.copytree(rust_env.ROOT / "functions/relay/src", tmp_path / "functions/relay/src")
    main = tmp_path / "functions/relay/src/main.rs"
    main.write_text(main.read_text() + '\nfn sneaky(n: &str) -> Option<String> { std::env::var(n).ok() }\n')
    monkeypatch.setattr(rust_env, "ROOT", tmp_path)
    with pytest.raises(AssertionError, match="cannot follow"):
        rust_env.check_dynamic_reads(main)


def test_the_expansion_of_dynamic_env_refuses_what_it_does_not_model():
    """tf.expand_env models the module's one dynamic "env" shape; another shape, an entry with
    neither a value nor a secret, or a list it cannot evaluate fails instead of being misread."""
    body = tf.module().resource("google_cloud_run_v2_job", "generate")
    (dynamic,) = tf.one(tf.one(tf.one(body["template"])["template"])["containers"])["dynamic"]
    spec = dynamic["env"]
    assert [e["name"] for e in tf.expand_env(spec)][:2] == ["GOOGLE_CLOUD_PROJECT", "ASSETGEN_STORE"]
    with pytest.raises(AssertionError, match="changed shape"):
        tf.expand_env({**spec, "content": [{**spec["content"][0], "value": "${env.value.other}"}]})
    with pytest.raises(AssertionError, match="env entry"):
        tf.expand_env({**spec, "for_each": [{"name": "X"}]})
    with pytest.raises(AssertionError, match="cannot evaluate"):
        tf.expand_env({**spec, "for_each": "${setunion(local.env.common, local.env.oidc)}"})
    with pytest.raises(AssertionError, match="has no"):
        tf.secret_address("no_such_secret")
