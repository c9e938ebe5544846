"""Every service and the job run an image from the Artifact Registry repository Terraform makes."""

import pytest
import tf

M = tf.module


@pytest.mark.parametrize("unit", tf.UNITS)
def test_images_come_from_the_artifact_registry_repository(unit):
    function = {"generate-job": "generate"}.get(unit, unit)
    assert tf.norm(tf.container(unit)["image"]) == "local.images." + function
    registry = M().locals["registry"]
    assert "google_artifact_registry_repository.images.repository_id" in registry
    assert registry.startswith("${var.region}-docker.pkg.dev/${var.project_id}/")
    assert "${local.registry}/assetgen-${function}:${var.image_tag}" in M().locals["images"]
    assert M().resource("google_artifact_registry_repository", "images")["format"] == "DOCKER"


def test_the_job_is_generate_in_job_mode_on_a_schedule():
    assert tf.container("generate-job")["args"] == ["--job"]
    scheduler = M().resource("google_cloud_scheduler_job", "sweep")
    target = tf.one(scheduler["http_target"])
    assert target["uri"] == "https://run.googleapis.com/v2/${google_cloud_run_v2_job.generate.id}:run"
    runner = M().resource("google_cloud_run_v2_job_iam_member", "scheduler_runs_job")
    assert runner["member"] == "serviceAccount:${local.sa.scheduler}"


def test_the_images_are_named_as_make_images_builds_them():
    assert "\nimages:\n\ttools/images.sh\n" in (tf.ROOT / "Makefile").read_text()
    script = (tf.ROOT / "tools" / "images.sh").read_text()
    assert 'names+=("$registry/assetgen-$f:$tag")' in script
