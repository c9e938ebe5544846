# The module's inputs. envs/dev and envs/prod pass them on from their own variables, which carry
# the descriptions and validation a person filling in terraform.tfvars sees.

variable "project_id" {
  description = "GCP project id everything is created in."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Run services, the job, the scheduler and the image repository."
  type        = string
}

variable "name" {
  description = "Prefix of every resource name (services, topics, service accounts, repository)."
  type        = string
}

variable "bucket_name" {
  description = "State bucket name; empty: PROJECT_ID-NAME."
  type        = string
}

variable "bucket_location" {
  description = "Location of the state bucket (a region, or a multi-region such as EU)."
  type        = string
}

variable "image_tag" {
  description = "Tag of the three images in the repository (make deploy uses the git commit)."
  type        = string
}

variable "apps_script_client_id" {
  description = "OAuth client id of the Sheet's Apps Script project: the aud of its identity tokens."
  type        = string
}

variable "allowed_users" {
  description = "Who may submit and watch: emails and @domains."
  type        = list(string)
}

variable "admins" {
  description = "Emails that may read and cancel anyone's batch (ASSETGEN_ADMINS); never retry, which spends the owner's budget."
  type        = list(string)
}

variable "gemini_backend" {
  description = "developer (an API key from Secret Manager) or vertex (the service accounts' credentials)."
  type        = string
}

variable "gemini_model" {
  description = "Default image model."
  type        = string
}

variable "gemini_location" {
  description = "Vertex AI location (used with gemini_backend = vertex)."
  type        = string
}

variable "gemini_images_per_minute" {
  description = "The project's Gemini image quota per minute: generate is paced to it and sized from it."
  type        = number
}



variable "max_rows" {
  description = "Rows per batch."
  type        = number
}

variable "daily_limit_usd" {
  description = "Each user's daily budget in dollars."
  type        = string
}

variable "user_limits" {
  description = "Per-user daily budgets that differ from daily_limit_usd: email => dollars."
  type        = map(string)
}

variable "lease_ttl_secs" {
  description = "How long a row's lease holds without renewal."
  type        = number
}

variable "max_delivery_attempts" {
  description = "Deliveries of a row message before it is dead-lettered."
  type        = number
}

variable "sweep_schedule" {
  description = "Cron schedule (UTC) of the generate job: sweep and ledger compaction."
  type        = string
}

variable "image_retention_days" {
  description = "Days generated images are kept in the bucket."
  type        = number
}

variable "reference_retention_days" {
  description = "Days uploaded references are kept in the bucket."
  type        = number
}

variable "submit_max_instances" {
  description = "Upper bound on submit instances."
  type        = number
}

variable "relay_max_instances" {
  description = "Upper bound on relay instances."
  type        = number
}

variable "min_instances" {
  description = "Instances each service keeps warm (0: scale to zero)."
  type        = number
}

variable "deletion_protection" {
  description = "Refuse to destroy the services and the job."
  type        = bool
}

variable "canary_percent" {
  description = "Share of traffic for the revisions this apply creates (tagged canary); 100 = a plain rollout or a promotion, 0 = a rollback to stable_revisions."
  type        = number
}

variable "stable_revisions" {
  description = "Per service (submit, generate, relay), the revision that keeps the rest of the traffic while canary_percent < 100."
  type        = map(string)
}
