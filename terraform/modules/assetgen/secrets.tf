# Secrets the services read from Secret Manager, never from Terraform variables or files:
# - the Gemini API key: its value is added by a person (make deploy asks for it once; see README);
# - the signing key of browsers' per-batch tokens: generated here; replacing it
#   (terraform apply -replace=module.assetgen.random_password.capability_secret) revokes every
#   token and page link signed with the old one;
# - the signing key of image and reference links: generated here; replacing it
#   (terraform apply -replace=module.assetgen.random_password.link_secret) revokes every image
#   and reference link written into Sheets.

resource "google_secret_manager_secret" "gemini_api_key" {
  project   = var.project_id
  secret_id = "${var.name}-gemini-api-key"
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret" "capability_secret" {
  project   = var.project_id
  secret_id = "${var.name}-capability-secret"
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

resource "random_password" "capability_secret" {
  length  = 48
  special = false
}

resource "google_secret_manager_secret_version" "capability_secret" {
  secret      = google_secret_manager_secret.capability_secret.id
  secret_data = random_password.capability_secret.result
}

resource "google_secret_manager_secret" "link_secret" {
  project   = var.project_id
  secret_id = "${var.name}-link-secret"
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

resource "random_password" "link_secret" {
  length  = 48
  special = false
}

resource "google_secret_manager_secret_version" "link_secret" {
  secret      = google_secret_manager_secret.link_secret.id
  secret_data = random_password.link_secret.result
}

locals {
  # Who reads which secret: exactly the workloads whose code reads the variable it feeds.
  secret_readers = {
    gemini_api_key    = ["submit", "generate", "job"]
    capability_secret = ["submit", "relay"]
    link_secret       = ["submit", "relay"]
  }
  secret_ids = {
    gemini_api_key    = google_secret_manager_secret.gemini_api_key.id
    capability_secret = google_secret_manager_secret.capability_secret.id
    link_secret       = google_secret_manager_secret.link_secret.id
  }
}

resource "google_secret_manager_secret_iam_member" "readers" {
  for_each = merge([
    for secret, readers in local.secret_readers : {
      for reader in readers : "${secret}/${reader}" => { secret = secret, reader = reader }
    }
  ]...)
  project   = var.project_id
  secret_id = local.secret_ids[each.value.secret]
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${local.sa[each.value.reader]}"
}
