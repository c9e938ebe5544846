# Secrets the services read from Secret Manager, never from Terraform variables or files:
# - the Gemini API key: its value is added by a person (make deploy asks for it once; see README);
# - the signing keys, generated here: capability_secret signs browsers' per-batch tokens, and
#   replacing it (terraform apply '-replace=module.assetgen.random_password.signing_key["capability_secret"]')
#   revokes every token and page link signed with the old one; link_secret signs image and
#   reference links, and replacing it (the same with ["link_secret"]) revokes every image and
#   reference link written into Sheets.

resource "google_secret_manager_secret" "gemini_api_key" {
  project   = var.project_id
  secret_id = "${var.name}-gemini-api-key"
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

locals {
  signing_keys = toset(["capability_secret", "link_secret"])
}

resource "google_secret_manager_secret" "signing_key" {
  for_each  = local.signing_keys
  project   = var.project_id
  secret_id = "${var.name}-${replace(each.key, "_", "-")}"
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

resource "random_password" "signing_key" {
  for_each = local.signing_keys
  length   = 48
  special  = false
}

resource "google_secret_manager_secret_version" "signing_key" {
  for_each    = local.signing_keys
  secret      = google_secret_manager_secret.signing_key[each.key].id
  secret_data = random_password.signing_key[each.key].result
}

locals {
  # Every secret by the name env entries (run.tf) and the readers below use.
  secrets = merge({ gemini_api_key = google_secret_manager_secret.gemini_api_key }, google_secret_manager_secret.signing_key)

  # Who reads which secret: exactly the workloads whose code reads the variable it feeds.
  secret_readers = {
    gemini_api_key    = ["submit", "generate", "job"]
    capability_secret = ["submit", "relay"]
    link_secret       = ["submit", "relay"]
  }
}

resource "google_secret_manager_secret_iam_member" "readers" {
  for_each = merge([
    for secret, readers in local.secret_readers : {
      for reader in readers : "${secret}/${reader}" => { secret = secret, reader = reader }
    }
  ]...)
  project   = var.project_id
  secret_id = local.secrets[each.value.secret].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${local.sa[each.value.reader]}"
}
