output "urls" {
  description = "The services' URLs."
  value       = module.assetgen.urls
}

output "bucket" {
  description = "The state bucket."
  value       = module.assetgen.bucket
}

output "rows_topic" {
  description = "The Pub/Sub topic rows are published to."
  value       = module.assetgen.rows_topic
}

output "registry" {
  description = "Where make images pushes: REGISTRY/assetgen-FUNCTION:TAG."
  value       = module.assetgen.registry
}

output "image_tag" {
  description = "The image tag the newest revisions run."
  value       = module.assetgen.image_tag
}

output "latest_revisions" {
  description = "Each service's newest ready revision."
  value       = module.assetgen.latest_revisions
}

output "stable_revisions" {
  description = "What a canary is measured against and make rollback returns to."
  value       = module.assetgen.stable_revisions
}

output "canary_percent" {
  description = "Share of traffic on the newest revisions."
  value       = module.assetgen.canary_percent
}

output "sheet_settings" {
  description = "What to fill in in the Sheet's Assets > Settings dialog."
  value       = module.assetgen.sheet_settings
}

output "gemini_api_key_secret" {
  description = "The secret whose latest version must hold the Gemini API key."
  value       = module.assetgen.gemini_api_key_secret
}
