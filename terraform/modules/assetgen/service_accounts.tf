# One service account per workload, each with only what its code does:
# - submit writes batches (manifest, row states, budget, ledger) and publishes rows;
# - generate works rows (row states, images, ledger, budget) and publishes nothing (it nacks);
# - the generate job sweeps (republishes rows, settles, compacts the ledger);
# - relay reads everything and writes only references (refs/), and signs image URLs as itself;
# - push is the identity of Pub/Sub's push requests; scheduler starts the job.

resource "google_service_account" "workload" {
  for_each     = toset(["submit", "generate", "job", "relay", "push", "scheduler"])
  project      = var.project_id
  account_id   = "${var.name}-${each.key}"
  display_name = "assetgen ${each.key}"
  depends_on   = [google_project_service.apis]
}

locals {
  sa = { for k, v in google_service_account.workload : k => v.email }
}

locals {
  bucket_writers = toset(["submit", "generate", "job"])
  publishers     = toset(["submit", "job"])
}

resource "google_storage_bucket_iam_member" "writers" {
  for_each = local.bucket_writers
  bucket   = google_storage_bucket.state.name
  role     = "roles/storage.objectUser"
  member   = "serviceAccount:${local.sa[each.key]}"
}

resource "google_storage_bucket_iam_member" "relay_reads" {
  bucket = google_storage_bucket.state.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${local.sa.relay}"
}

# The reference library: new references are created, the tagged set (refs/sets/) is replaced by
# compare-and-swap, which GCS counts as a delete.
resource "google_storage_bucket_iam_member" "relay_writes_references" {
  bucket = google_storage_bucket.state.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${local.sa.relay}"
  condition {
    title      = "references only"
    expression = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.state.name}/objects/refs/\")"
  }
}

# V4 signed URLs for images: on Cloud Run there is no key file, so relay signs through the IAM
# signBlob API as itself.
resource "google_service_account_iam_member" "relay_signs_as_itself" {
  service_account_id = google_service_account.workload["relay"].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${local.sa.relay}"
}

resource "google_pubsub_topic_iam_member" "publishers" {
  for_each = local.publishers
  project  = var.project_id
  topic    = google_pubsub_topic.rows.name
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${local.sa[each.key]}"
}

# Vertex AI only: the model is called with the workload's own credentials.
resource "google_project_iam_member" "vertex_users" {
  for_each = var.gemini_backend == "vertex" ? toset(["generate", "job"]) : toset([])
  project  = var.project_id
  role     = "roles/aiplatform.user"
  member   = "serviceAccount:${local.sa[each.key]}"
}
