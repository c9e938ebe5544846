# The settings of one environment (envs/prod/variables.tf is this same file). Copy
# terraform.tfvars.example to terraform.tfvars and fill in the first block.

variable "project_id" {
  description = "GCP project id to deploy into (it must exist and have billing enabled)."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id is a GCP project id: 6 to 30 lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "region" {
  description = "Region of the services, the job, the scheduler and the image repository, e.g. europe-west1."
  type        = string
  default     = "europe-west1"
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region is a Cloud Run region such as europe-west1 or us-central1."
  }
}

variable "name" {
  description = "Prefix of every resource name; change it to run two copies in one project."
  type        = string
  default     = "assetgen"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,18}$", var.name))
    error_message = "name is 3 to 19 lowercase letters, digits and hyphens, starting with a letter (service account ids are capped at 30 characters)."
  }
}

variable "bucket_name" {
  description = "Name of the state bucket; empty: PROJECT_ID-NAME."
  type        = string
  default     = ""
  validation {
    condition     = var.bucket_name == "" || can(regex("^[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name is empty or a valid GCS bucket name (3 to 63 lowercase letters, digits, -, _ and .)."
  }
}

variable "bucket_location" {
  description = "Location of the state bucket: a region (e.g. europe-west1) or a multi-region (EU, US)."
  type        = string
  default     = "EU"
  validation {
    condition     = can(regex("^([A-Z]+[0-9]*|[a-z]+-[a-z]+[0-9])$", var.bucket_location))
    error_message = "bucket_location is a GCS location such as EU, US or europe-west1."
  }
}

variable "image_tag" {
  description = "Tag of the images to run; make deploy sets it to the git commit it built and pushed."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag))
    error_message = "image_tag is a container image tag (letters, digits, _, . and -, at most 128)."
  }
}

variable "apps_script_client_id" {
  description = "OAuth client id of the Sheet's Apps Script project (the aud of the identity tokens the Sheet sends to submit): Apps Script > Project Settings > Google Cloud Platform project."
  type        = string
  validation {
    condition     = can(regex("^[0-9]+-[a-z0-9]+\\.apps\\.googleusercontent\\.com$", var.apps_script_client_id))
    error_message = "apps_script_client_id looks like 1234567890-abc123.apps.googleusercontent.com."
  }
}

variable "allowed_users" {
  description = "Who may submit and watch batches: emails (lead@studio.com) and whole domains (@studio.com)."
  type        = list(string)
  validation {
    condition     = length(var.allowed_users) > 0 && alltrue([for u in var.allowed_users : can(regex("^([^@\\s,]+@|@)[a-z0-9.-]+\\.[a-z]+$", lower(u)))])
    error_message = "allowed_users lists at least one email or @domain; nobody could use the deployment otherwise."
  }
}

variable "admins" {
  description = "Emails that may read and cancel anyone's batch (not retry it: a retry spends its owner's budget)."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for u in var.admins : can(regex("^[^@\\s,]+@[a-z0-9.-]+\\.[a-z]+$", lower(u)))])
    error_message = "admins lists email addresses only (no @domain: an admin is one person)."
  }
}

variable "gemini_backend" {
  description = "How generate calls Gemini: developer (an API key kept in Secret Manager) or vertex (Vertex AI with the service accounts' own credentials)."
  type        = string
  default     = "developer"
  validation {
    condition     = contains(["developer", "vertex"], var.gemini_backend)
    error_message = "gemini_backend is developer or vertex."
  }
}

variable "gemini_model" {
  description = "Default image model of a batch that names none."
  type        = string
  default     = "gemini-2.5-flash-image"
  validation {
    condition     = can(regex("^gemini-[a-z0-9.-]+$", var.gemini_model))
    error_message = "gemini_model is a Gemini model id such as gemini-2.5-flash-image."
  }
}

variable "gemini_location" {
  description = "Vertex AI location when gemini_backend = vertex."
  type        = string
  default     = "global"
  validation {
    condition     = can(regex("^(global|[a-z]+-[a-z]+[0-9])$", var.gemini_location))
    error_message = "gemini_location is global or a region such as europe-west1."
  }
}

variable "gemini_images_per_minute" {
  description = "The project's Gemini image quota per minute (Cloud console > Quotas). generate paces its model calls to it and its instances are sized from it."
  type        = number
  default     = 10
  validation {
    condition     = var.gemini_images_per_minute >= 1 && var.gemini_images_per_minute <= 10000 && floor(var.gemini_images_per_minute) == var.gemini_images_per_minute
    error_message = "gemini_images_per_minute is a whole number from 1 to 10000."
  }
}



variable "max_rows" {
  description = "Most rows one batch may have."
  type        = number
  default     = 10
  validation {
    condition     = var.max_rows >= 1 && var.max_rows <= 1000
    error_message = "max_rows is from 1 to 1000 (what the code accepts)."
  }
}

variable "daily_limit_usd" {
  description = "Each user's daily budget in dollars, e.g. \"10\" or \"7.50\"."
  type        = string
  default     = "10"
  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]{1,6})?$", var.daily_limit_usd))
    error_message = "daily_limit_usd is an amount of dollars such as 10 or 7.50."
  }
}

variable "user_limits" {
  description = "Users whose daily budget differs: email => dollars, e.g. { \"lead@studio.com\" = \"25\" }."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for user, usd in var.user_limits : can(regex("^[^@\\s,=]+@[^@\\s,=]+$", user)) && can(regex("^[0-9]+(\\.[0-9]{1,6})?$", usd))])
    error_message = "user_limits maps emails to amounts of dollars such as \"25\"."
  }
}

variable "lease_ttl_secs" {
  description = "How long a row's lease holds without renewal before another delivery may take the row over."
  type        = number
  default     = 180
  validation {
    condition     = var.lease_ttl_secs >= 30 && var.lease_ttl_secs <= 3600
    error_message = "lease_ttl_secs is from 30 to 3600."
  }
}

variable "max_delivery_attempts" {
  description = "Deliveries of a row before Pub/Sub dead-letters it (the row then fails and its money is released)."
  type        = number
  default     = 5
  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts is from 5 to 100 (Pub/Sub's bounds)."
  }
}

variable "sweep_schedule" {
  description = "Cron schedule (UTC) of the generate job (sweep, ledger compaction)."
  type        = string
  default     = "*/10 * * * *"
  validation {
    condition     = length(split(" ", var.sweep_schedule)) == 5
    error_message = "sweep_schedule is a five-field cron expression such as */10 * * * *."
  }
}

variable "image_retention_days" {
  description = "Days generated images are kept; the Sheet's links stop working after that."
  type        = number
  default     = 365
  validation {
    condition     = var.image_retention_days >= 1
    error_message = "image_retention_days is at least 1."
  }
}

variable "reference_retention_days" {
  description = "Days uploaded references are kept."
  type        = number
  default     = 365
  validation {
    condition     = var.reference_retention_days >= 1
    error_message = "reference_retention_days is at least 1."
  }
}

variable "submit_max_instances" {
  description = "Upper bound on submit instances."
  type        = number
  default     = 5
  validation {
    condition     = var.submit_max_instances >= 1 && var.submit_max_instances <= 100
    error_message = "submit_max_instances is from 1 to 100."
  }
}

variable "relay_max_instances" {
  description = "Upper bound on relay instances (each holds up to 1000 live progress streams)."
  type        = number
  default     = 5
  validation {
    condition     = var.relay_max_instances >= 1 && var.relay_max_instances <= 100
    error_message = "relay_max_instances is from 1 to 100."
  }
}

variable "min_instances" {
  description = "Instances each service keeps warm; 0 scales to zero (a cold start is about a second)."
  type        = number
  default     = 0
  validation {
    condition     = var.min_instances >= 0 && var.min_instances <= 5
    error_message = "min_instances is from 0 to 5."
  }
}

variable "deletion_protection" {
  description = "Refuse terraform destroy of the services and the job."
  type        = bool
  default     = true
}

variable "canary_percent" {
  description = "Share of each service's traffic for the revisions this apply creates, tagged canary: 100 is a plain rollout (make deploy, make promote), 1 to 99 a canary (make deploy CANARY=10), 0 a rollback to stable_revisions (make rollback)."
  type        = number
  default     = 100
  validation {
    condition     = var.canary_percent >= 0 && var.canary_percent <= 100 && floor(var.canary_percent) == var.canary_percent
    error_message = "canary_percent is a whole number from 0 to 100."
  }
}

variable "stable_revisions" {
  description = "Per service (submit, generate, relay), the revision that keeps the rest of the traffic while canary_percent < 100; make deploy CANARY=N and make rollback fill it in from the stable_revisions output."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for k in keys(var.stable_revisions) : contains(["submit", "generate", "relay"], k)])
    error_message = "stable_revisions keys are submit, generate and relay."
  }
}
