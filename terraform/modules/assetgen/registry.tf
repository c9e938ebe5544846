# Where `make images` pushes the three images; every Cloud Run service and the job run from here.
resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:The images hold the open-source binaries only (no secrets, no data); Google-managed encryption applies.
  project       = var.project_id
  location      = var.region
  repository_id = var.name
  description   = "assetgen's container images (submit, generate, relay), pushed by make deploy"
  format        = "DOCKER"

  # Old images go, the last ones stay: what a rollback may need is always there.
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 20
    }
  }
  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "${90 * 24 * 3600}s"
    }
  }

  depends_on = [google_project_service.apis]
}

locals {
  registry = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
  # One image per function, built from the one Containerfile (`make images`).
  images = {
    for function in ["submit", "generate", "relay"] :
    function => "${local.registry}/assetgen-${function}:${var.image_tag}"
  }
}
