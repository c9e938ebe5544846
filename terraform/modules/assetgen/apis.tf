# The APIs an empty project needs turned on before anything else can be created.
locals {
  apis = [
    "artifactregistry.googleapis.com",
    "cloudscheduler.googleapis.com",
    "iam.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
    # Gemini: the Developer API (key) or Vertex AI (the service accounts' own credentials).
    var.gemini_backend == "vertex" ? "aiplatform.googleapis.com" : "generativelanguage.googleapis.com",
  ]
}

resource "google_project_service" "apis" {
  for_each = toset(local.apis)
  project  = var.project_id
  service  = each.value
  # Turning an API off when this stack is destroyed could break other things in the project.
  disable_on_destroy = false
}

data "google_project" "this" {
  project_id = var.project_id
}
