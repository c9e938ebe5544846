output "urls" {
  description = "The services' URLs."
  value       = local.urls
}

output "bucket" {
  description = "The state bucket."
  value       = google_storage_bucket.state.name
}

output "rows_topic" {
  description = "The Pub/Sub topic rows are published to."
  value       = google_pubsub_topic.rows.id
}

output "registry" {
  description = "Where make images pushes: REGISTRY/assetgen-FUNCTION:TAG."
  value       = local.registry
}

output "image_tag" {
  description = "The image tag the services' latest revisions run."
  value       = var.image_tag
}

output "latest_revisions" {
  description = "Each service's newest ready revision."
  value       = local.latest_revisions
}

output "stable_revisions" {
  description = "The revisions a canary is measured against and a rollback returns to: during a canary the ones it was given, otherwise the latest."
  value       = local.canary_split ? var.stable_revisions : local.latest_revisions
}

output "canary_percent" {
  description = "Share of traffic on the newest revisions."
  value       = var.canary_percent
}

output "sheet_settings" {
  description = "What to fill in in the Sheet's Assets > Settings dialog."
  value = {
    "Service URL"           = local.urls.submit
    "Reference manager URL" = "${local.urls.relay}/refs"
    "Max rows"              = var.max_rows
  }
}

output "gemini_api_key_secret" {
  description = "The secret whose latest version must hold the Gemini API key."
  value       = google_secret_manager_secret.gemini_api_key.secret_id
}
