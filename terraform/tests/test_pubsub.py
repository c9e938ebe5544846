"""Rows reach generate by OIDC-authenticated push, are retried, and end in the dead-letter path."""

import json
import re

import rust_env
import tf

M = tf.module


def subscription(name):
    return M().resource("google_pubsub_subscription", name)


def push(name):
    return tf.one(subscription(name)["push_config"])


def generate_route(path):
    handlers = (rust_env.FUNCTIONS["generate"] / "handlers.rs").read_text()
    assert f'path = "{path}"' in handlers, f"generate has no route {path}"
    return path


def test_push_carries_an_oidc_token_of_the_push_account_for_generates_audience():
    for name in ("rows", "dead_letter"):
        token = tf.one(push(name)["oidc_token"])
        assert tf.ref(token["service_account_email"]) == "local.sa.push"
        assert tf.ref(token["audience"]) == "local.push_audience"
    assert tf.ref(M().locals["push_audience"]) == "local.urls.generate"
    # generate accepts exactly that audience and that account
    env = tf.env_vars("generate")
    audience_var = "ASSETGEN_PUSH_AUDIENCE" if "ASSETGEN_PUSH_AUDIENCE" in env else "ASSETGEN_OIDC_AUDIENCE"
    assert tf.ref(env[audience_var]["value"]) == "local.push_audience"
    assert tf.ref(env["ASSETGEN_PUSH_SA"]["value"]) == "local.sa.push"
    assert env["ASSETGEN_AUTH"]["value"] == "oidc"


def test_push_endpoints_are_generates_routes():
    assert push("rows")["push_endpoint"] == "${local.urls.generate}" + generate_route("/pubsub/rows")
    assert push("dead_letter")["push_endpoint"] == "${local.urls.generate}" + generate_route("/pubsub/dead-letter")
    assert tf.ref(subscription("dead_letter")["topic"]) == "google_pubsub_topic.dead_letter.id"
    assert tf.ref(subscription("rows")["topic"]) == "google_pubsub_topic.rows.id"


def test_only_the_push_account_may_invoke_generate_and_generate_is_not_public():
    member = M().resource("google_cloud_run_v2_service_iam_member", "push_invokes_generate")
    assert tf.norm(member["name"]) == "google_cloud_run_v2_service.function.generate.name"
    assert member["role"] == "roles/run.invoker" and member["member"] == "serviceAccount:${local.sa.push}"
    assert tf.instance("google_cloud_run_v2_service", "function", "generate")["ingress"] == "INGRESS_TRAFFIC_INTERNAL_ONLY"


def test_dead_letter_policy_and_the_service_agent_may_use_it():
    policy = tf.one(subscription("rows")["dead_letter_policy"])
    assert tf.ref(policy["dead_letter_topic"]) == "google_pubsub_topic.dead_letter.id"
    assert tf.ref(policy["max_delivery_attempts"]) == "var.max_delivery_attempts"
    agent = M().locals["pubsub_service_agent"]
    assert agent == "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
    publisher = M().resource("google_pubsub_topic_iam_member", "dead_letter_publisher")
    assert (tf.ref(publisher["topic"]), publisher["role"]) == ("google_pubsub_topic.dead_letter.name", "roles/pubsub.publisher")
    assert tf.ref(publisher["member"]) == "local.pubsub_service_agent"
    subscriber = M().resource("google_pubsub_subscription_iam_member", "rows_dead_letter_subscriber")
    assert (tf.ref(subscriber["subscription"]), subscriber["role"]) == ("google_pubsub_subscription.rows.name", "roles/pubsub.subscriber")
    assert tf.ref(subscriber["member"]) == "local.pubsub_service_agent"


def test_retry_policy_backs_off():
    for name in ("rows", "dead_letter"):
        retry = tf.one(subscription(name)["retry_policy"])
        assert int(retry["minimum_backoff"].rstrip("s")) >= 10
        assert int(retry["maximum_backoff"].rstrip("s")) == 600


def longest_row_seconds():
    """From the code: refs fetched with their time-out and retries, then every variant's wait for
    its turn at the quota (the pacer's cap) and its model call."""
    gemini = (rust_env.COMMON / "model/gemini/mod.rs").read_text()
    call = int(re.search(r"call: Duration::from_secs\((\d+)\)", gemini).group(1))
    variants = int(re.search(r"pub const MAX: u8 = (\d+);", (rust_env.COMMON / "domain/variants.rs").read_text()).group(1))
    paced = (rust_env.COMMON / "model/paced.rs").read_text()
    max_wait = int(re.search(r"MAX_WAIT_CAP: Duration = Duration::from_secs\((\d+)\)", paced).group(1))
    fetch = (rust_env.COMMON / "refs/fetch.rs").read_text()
    timeout = int(re.search(r"timeout: Duration::from_secs\((\d+)\)", fetch).group(1))
    delays = [int(s) for s in re.findall(r"Duration::from_secs\((\d+)\)", re.search(r"retry_delays: vec!\[([^\]]*)\]", fetch).group(1))]
    return (len(delays) + 1) * timeout + sum(delays) + variants * (max_wait + call)


def test_ack_deadline_and_generates_timeout_are_above_the_longest_row():
    longest = longest_row_seconds()
    declared = eval(tf.ref(M().locals["longest_row_seconds"]))  # arithmetic only: 3 * 10 + ...
    assert declared >= longest, f"local.longest_row_seconds {declared} is below the code's {longest}"
    ack = M().locals["row_ack_deadline"]
    assert tf.ref(subscription("rows")["ack_deadline_seconds"]) == "local.row_ack_deadline"
    assert declared < ack <= 600, f"ack deadline {ack} must be above the longest row {declared} (Pub/Sub allows 600)"
    assert tf.run_template("generate")["timeout"] == "${local.row_ack_deadline}s"


def test_relay_streams_for_an_hour():
    assert tf.run_template("relay")["timeout"] == "3600s"


def test_submit_accepts_the_sheets_identity_tokens():
    audiences = tf.ref(M().locals["submit_audiences"])
    assert "var.apps_script_client_id" in audiences and "local.urls.submit" in audiences
    assert tf.ref(tf.env_vars("submit")["ASSETGEN_OIDC_AUDIENCE"]["value"]) == "local.submit_audiences"


def test_generate_is_sized_from_the_image_quota_by_the_sizing_rule():
    scaling = tf.one(tf.run_template("generate")["scaling"])
    assert tf.ref(scaling["max_instance_count"]) == "local.generate_max_instances"
    assert tf.ref(tf.run_template("generate")["max_instance_request_concurrency"]) == "local.generate_concurrency"
    locals_ = M().locals
    assert 'file("${path.module}/../../../deploy/sizing.json")' in locals_["sizing"]
    sizing = json.loads((tf.ROOT / "deploy" / "sizing.json").read_text())
    for name in ("generate_max_instances", "generate_share_ipm", "generate_concurrency"):
        used = set(re.findall(r"local\.sizing\.(\w+)", locals_[name]))
        assert used <= set(sizing["constants"]), f"{name} reads constants sizing.json lacks: {used - set(sizing['constants'])}"
    assert "var.gemini_images_per_minute" in locals_["generate_max_instances"]
    # generate and the job pace to the quota, shared by exactly generate's instances.
    for unit in ("generate", "generate-job"):
        env = tf.env_vars(unit)
        assert tf.ref(env[sizing["env"]["quota"]]["value"]) == "tostring(var.gemini_images_per_minute)", unit
        assert tf.ref(env[sizing["env"]["instances"]]["value"]) == "tostring(local.generate_max_instances)", unit
