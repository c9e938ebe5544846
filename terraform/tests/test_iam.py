"""Least privilege: one service account per workload; nothing public except where the app checks
tokens itself, and that is written beside it."""

import re

import tf

M = tf.module


def test_all_users_only_where_the_app_verifies_tokens_itself_with_the_reason_beside_it():
    for d in [tf.module(), tf.env("dev"), tf.env("prod")]:
        for name, text in d.text.items():
            for m in re.finditer(r"allUsers|allAuthenticatedUsers", text):
                line = text[text.rfind("\n", 0, m.start()) + 1 : text.find("\n", m.end())]
                if "member" not in line:
                    continue  # prose in a comment
                assert name == "run.tf", f"{name}: {line.strip()}"
                assert "the app verifies tokens itself" in text[max(0, m.start() - 1200) : m.end()], line
    public = M().resource("google_cloud_run_v2_service_iam_member", "public")
    assert public["member"] == "allUsers" and public["role"] == "roles/run.invoker"
    assert "the app verifies tokens itself" in M().text["run.tf"]
    assert sorted(tf.toset_items(public["for_each"])) == ["relay", "submit"]
    members = [r.get("member") for (t, _), r in M().resources.items() if t.endswith("_iam_member")]
    assert members.count("allUsers") == 1


def test_each_workload_runs_as_its_own_service_account():
    accounts = {u: tf.norm(tf.run_template(u)["service_account"]) for u in tf.UNITS}
    assert accounts == {"submit": "local.sa.submit", "generate": "local.sa.generate", "relay": "local.sa.relay", "generate-job": "local.sa.job"}
    scheduler = tf.one(tf.one(M().resource("google_cloud_scheduler_job", "sweep")["http_target"])["oauth_token"])
    assert tf.ref(scheduler["service_account_email"]) == "local.sa.scheduler"


def test_no_broad_project_roles():
    for name, r in M().of_type("google_project_iam_member").items():
        assert r["role"] == "roles/aiplatform.user", f"project-wide {r['role']} for {name}"
        assert "var.gemini_backend == \"vertex\"" in r["for_each"]
    for type_ in ("google_project_iam_binding", "google_project_iam_policy"):
        assert not M().of_type(type_), type_


def test_relay_writes_only_references():
    writes = M().resource("google_storage_bucket_iam_member", "relay_writes_references")
    assert "/objects/refs/" in tf.one(writes["condition"])["expression"]
    writers = tf.toset_items(M().locals["bucket_writers"])
    assert "relay" not in writers


def test_the_bucket_is_private_versioned_and_ages_out_images_and_references():
    bucket = M().resource("google_storage_bucket", "state")
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert tf.one(bucket["versioning"])["enabled"] is True
    prefixes = [tf.one(tf.one(rule["condition"]).get("matches_prefix", [[]])) if tf.one(rule["condition"]).get("matches_prefix") else None for rule in bucket["lifecycle_rule"]]
    assert "images/" in prefixes and "refs/" in prefixes
