# One environment: the whole system in one GCP project (envs/prod links this file; only
# backend.tf and terraform.tfvars differ between environments). The Terraform and provider
# versions are the module's (modules/assetgen/versions.tf): Terraform holds the whole
# configuration to every module's required_version and required_providers.

provider "google" {
  project = var.project_id
  region  = var.region
}

module "assetgen" {
  source = "../../modules/assetgen"

  project_id               = var.project_id
  region                   = var.region
  name                     = var.name
  bucket_name              = var.bucket_name
  bucket_location          = var.bucket_location
  image_tag                = var.image_tag
  apps_script_client_id    = var.apps_script_client_id
  allowed_users            = var.allowed_users
  admins                   = var.admins
  gemini_backend           = var.gemini_backend
  gemini_model             = var.gemini_model
  gemini_location          = var.gemini_location
  gemini_images_per_minute = var.gemini_images_per_minute
  max_rows                 = var.max_rows
  daily_limit_usd          = var.daily_limit_usd
  user_limits              = var.user_limits
  lease_ttl_secs           = var.lease_ttl_secs
  max_delivery_attempts    = var.max_delivery_attempts
  sweep_schedule           = var.sweep_schedule
  image_retention_days     = var.image_retention_days
  reference_retention_days = var.reference_retention_days
  submit_max_instances     = var.submit_max_instances
  relay_max_instances      = var.relay_max_instances
  min_instances            = var.min_instances
  deletion_protection      = var.deletion_protection
  canary_percent           = var.canary_percent
  stable_revisions         = var.stable_revisions
}
