# The bucket holds every byte of state (DESIGN.md "State in the object store").
resource "google_storage_bucket" "state" {
  #checkov:skip=CKV_GCP_62:Access logs would go to a second bucket; Cloud Audit Logs (data access) cover who read what.
  project                     = var.project_id
  name                        = local.bucket
  location                    = var.bucket_location
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  # A bad write or delete can be undone: the previous generation stays until the rules below.
  versioning {
    enabled = true
  }

  # Generated images and references are kept for var.image_retention_days, then deleted;
  # a noncurrent (overwritten or deleted) object of any kind goes after 30 days.
  lifecycle_rule {
    condition {
      age            = var.image_retention_days
      matches_prefix = ["images/"]
    }
    action {
      type = "Delete"
    }
  }
  lifecycle_rule {
    condition {
      age            = var.reference_retention_days
      matches_prefix = ["refs/"]
    }
    action {
      type = "Delete"
    }
  }
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

locals {
  bucket = coalesce(var.bucket_name, "${var.project_id}-${var.name}")
}
