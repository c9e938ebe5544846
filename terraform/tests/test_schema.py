"""Resource types, arguments, blocks and the attributes expressions read exist in the Google
provider's schema (npm @cdktf/provider-google's .jsii; Terraform cannot download the provider
here, so `terraform validate` cannot run)."""

import json
import re

import provider_schema
import pytest
import tf

# hashicorp/random is not in the Google provider's schema; its random_password arguments and
# attributes, from the provider's documentation (v3.6), so that nothing goes unchecked.
RANDOM_PASSWORD = {
    "args": {
        k: None
        for k in ("length", "special", "upper", "lower", "numeric", "number", "min_lower", "min_upper", "min_numeric", "min_special", "override_special", "keepers")
    },
    "attrs": ["id", "result", "bcrypt_hash"],
}
OTHER_PROVIDERS = {"random_password": RANDOM_PASSWORD}


@pytest.fixture(scope="module")
def schema():
    return provider_schema.load()


def block_of(schema, kind, type_):
    if type_ in OTHER_PROVIDERS and kind == "resource":
        return OTHER_PROVIDERS[type_]
    assert type_ in schema[kind], f"the Google provider has no {kind} {type_}"
    return schema[kind][type_]


DIRS = {"module": tf.MODULE, **tf.ENVS}


@pytest.mark.parametrize("where", DIRS)
def test_every_argument_and_block_exists(schema, where):
    d = tf.load(DIRS[where])
    problems = []
    for kind, items in (("resource", d.resources), ("data", d.data)):
        for (type_, name), body in items.items():
            problems += provider_schema.unknown_names(body, block_of(schema, kind, type_), f"{type_}.{name}")
    assert not problems, "\n".join(problems)


REFERENCE = re.compile(r"(?<![\w.])(data\.)?((?:google|random)_[a-z0-9_]+)\.([a-z0-9_]+)(?:\[[^\]]*\])?\.([a-z0-9_]+)")


def test_every_attribute_read_exists(schema):
    d = tf.module()
    text = json.dumps([d.resources.__repr__(), d.locals, d.outputs, {str(k): v for k, v in d.data.items()}])
    checked = 0
    for data, type_, name, attr in REFERENCE.findall(text):
        kind = "data" if data else "resource"
        declared = d.data if data else d.resources
        assert (type_, name) in declared, f"{data}{type_}.{name} is read but not declared"
        block = block_of(schema, kind, type_)
        assert attr in block["args"] or attr in block["attrs"] or attr == "id", f"{type_} has no attribute {attr}"
        checked += 1
    assert checked > 20, f"only {checked} references found: the pattern no longer matches"


# Attributes read off resource instances indirectly: `for k, s in google_x.name : ... s.attr`, and
# `local.secrets[...].attr` (local.secrets maps names to Secret Manager secrets, tf.secret_address).
FOR_OVER_RESOURCE = re.compile(r"for (\w+)\s*,\s*(\w+) in ((?:google|random)_[a-z0-9_]+)\.([a-z0-9_]+) :([^}]*)")
SECRETS_READ = re.compile(r"local\.secrets\[[^\]]*\]\.([a-z0-9_]+)")


def test_every_attribute_read_through_an_iteration_or_local_secrets_exists(schema):
    d = tf.module()
    text = json.dumps([d.resources.__repr__(), d.locals, d.outputs])
    checked = 0
    for _, item, type_, name, body in FOR_OVER_RESOURCE.findall(text):
        assert (type_, name) in d.resources, f"{type_}.{name} is iterated but not declared"
        for attr in re.findall(rf"(?<![\w.]){item}\.([a-z0-9_]+)", body):
            block = block_of(schema, "resource", type_)
            assert attr in block["args"] or attr in block["attrs"] or attr == "id", f"{type_} has no attribute {attr}"
            checked += 1
    types = {tf.secret_address(s).split(".")[0] for s in d.locals["secret_readers"]}
    for attr in SECRETS_READ.findall(text):
        for type_ in types:
            block = block_of(schema, "resource", type_)
            assert attr in block["args"] or attr in block["attrs"] or attr == "id", f"{type_} has no attribute {attr}"
            checked += 1
    assert checked >= 3, f"only {checked} indirect reads found: the patterns no longer match"


def test_a_misspelt_name_fails(schema):
    sub = schema["resource"]["google_pubsub_subscription"]
    assert provider_schema.unknown_names({"ack_deadline_seconds": 10}, sub, "ok") == []
    assert provider_schema.unknown_names({"ack_deadline_second": 10}, sub, "typo")
    assert provider_schema.unknown_names({"push_config": [{"oidc_token": [{"audiences": "x"}]}]}, sub, "nested typo")
    run = schema["resource"]["google_cloud_run_v2_service"]
    assert provider_schema.unknown_names({"dynamic": [{"trafic": {"for_each": [], "content": [{}]}}]}, run, "dynamic typo")
