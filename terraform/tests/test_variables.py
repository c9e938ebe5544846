"""Environments: a GCS backend, every variable described and validated, dev and prod alike."""

import re

import hcl2
import pytest
import tf


@pytest.mark.parametrize("env", tf.ENVS)
def test_gcs_backend(env):
    backends = [b for t in tf.env(env).terraform for b in t.get("backend", [])]
    assert len(backends) == 1 and list(backends[0]) == ["gcs"]
    assert backends[0]["gcs"]["prefix"] == f"assetgen/{env}"


@pytest.mark.parametrize("env", tf.ENVS)
def test_every_variable_is_described_and_validated(env):
    variables = tf.env(env).variables
    assert variables
    for name, v in variables.items():
        assert v.get("description"), f"{name} has no description"
        if v.get("type") not in ("bool", "${bool}"):  # a bool has nothing to validate
            assert v.get("validation"), f"{name} has no validation block"
            for rule in v["validation"]:
                assert rule.get("error_message", "").startswith(name), f"{name}: say which variable is wrong"


def test_prod_is_dev_but_for_its_backend_and_values():
    for f in ("main.tf", "variables.tf", "outputs.tf"):
        assert (tf.ENVS["prod"] / f).resolve() == (tf.ENVS["dev"] / f).resolve(), f


@pytest.mark.parametrize("env", tf.ENVS)
def test_every_module_variable_is_passed_and_every_env_variable_used(env):
    (call,) = tf.env(env).modules.values()
    passed = {k for k in call if k != "source"}
    assert passed == set(tf.module().variables), passed ^ set(tf.module().variables)
    assert passed == set(tf.env(env).variables)
    for k in passed:
        assert call[k] == "${var." + k + "}", k


@pytest.mark.parametrize("env", tf.ENVS)
def test_the_example_sets_only_declared_variables(env):
    text = (tf.ENVS[env] / "terraform.tfvars.example").read_text()
    example = hcl2.loads(text)
    assert example, "the example sets nothing"
    assert set(example) <= set(tf.env(env).variables)
    commented = set(re.findall(r"^# ?([a-z_]+)\s+=", text, re.M))
    assert commented <= set(tf.env(env).variables), commented - set(tf.env(env).variables)
    required = {n for n, v in tf.env(env).variables.items() if "default" not in v} - {"image_tag"}
    assert required <= set(example), f"the example leaves out required {required - set(example)}"


@pytest.mark.parametrize("env", tf.ENVS)
def test_outputs_pass_on_the_modules(env):
    assert set(tf.env(env).outputs) == set(tf.module().outputs)
    assert {"urls", "bucket", "rows_topic", "sheet_settings"} <= set(tf.module().outputs)
