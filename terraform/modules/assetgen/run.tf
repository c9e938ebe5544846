# The three functions as Cloud Run services. Every variable a service's code reads is set here,
# and nothing else (terraform/tests/test_env.py derives the list from the Rust source).

# submit: the Sheet's and the CLI's entry point.
resource "google_cloud_run_v2_service" "submit" {
  project             = var.project_id
  name                = local.service_names.submit
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = var.deletion_protection

  template {
    service_account                  = local.sa.submit
    timeout                          = "60s"
    max_instance_request_concurrency = 80
    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.submit_max_instances
    }
    containers {
      image = local.images.submit
      ports {
        container_port = 8080
      }
      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
        cpu_idle          = true
        startup_cpu_boost = true
      }
      startup_probe {
        http_get {
          path = "/healthz"
        }
      }
      liveness_probe {
        http_get {
          path = "/healthz"
        }
      }
      env {
        name  = "GOOGLE_CLOUD_PROJECT"
        value = var.project_id
      }
      env {
        name  = "ASSETGEN_STORE"
        value = local.store
      }
      env {
        name  = "ASSETGEN_AUTH"
        value = "oidc"
      }
      env {
        name  = "ASSETGEN_OIDC_AUDIENCE"
        value = local.submit_audiences
      }
      env {
        name  = "ASSETGEN_ALLOWED"
        value = local.allowed
      }
      env {
        name  = "ASSETGEN_ADMINS"
        value = local.admins
      }
      env {
        name  = "ASSETGEN_PUBLIC_URL"
        value = local.urls.relay
      }
      env {
        # The relay's page calls submit's batch routes (status, cancel, retry) from the relay's origin.
        name  = "ASSETGEN_CORS_ORIGINS"
        value = local.urls.relay
      }
      env {
        name = "ASSETGEN_CAPABILITY_SECRET"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.capability_secret.secret_id
            version = "latest"
          }
        }
      }
      env {
        name = "ASSETGEN_LINK_SECRET"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.link_secret.secret_id
            version = "latest"
          }
        }
      }
      env {
        name  = "ASSETGEN_QUEUE"
        value = local.queue
      }
      env {
        name  = "ASSETGEN_MAX_ROWS"
        value = tostring(var.max_rows)
      }
      env {
        name  = "ASSETGEN_DAILY_LIMIT_USD"
        value = var.daily_limit_usd
      }
      env {
        name  = "ASSETGEN_USER_LIMITS"
        value = local.user_limits
      }
      env {
        name  = "ASSETGEN_LEASE_TTL_SECS"
        value = tostring(var.lease_ttl_secs)
      }
      # The quota the model calls are paced to, shared by generate's instances (docs/sizing.md).
      env {
        name  = "ASSETGEN_GEMINI_IPM"
        value = tostring(var.gemini_images_per_minute)
      }
      env {
        name  = "ASSETGEN_GEMINI_INSTANCES"
        value = tostring(local.generate_max_instances)
      }
      env {
        name  = "GEMINI_BACKEND"
        value = var.gemini_backend
      }
      env {
        name  = "GEMINI_MODEL"
        value = var.gemini_model
      }
      env {
        name  = "GOOGLE_CLOUD_LOCATION"
        value = var.gemini_location
      }
      env {
        name = "GEMINI_API_KEY"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.gemini_api_key.secret_id
            version = "latest"
          }
        }
      }
    }
  }

  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = var.canary_percent
    tag     = local.canary_tag
  }
  dynamic "traffic" {
    for_each = local.canary_split ? [var.stable_revisions["submit"]] : []
    content {
      type     = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
      revision = traffic.value
      percent  = 100 - var.canary_percent
      tag      = "stable"
    }
  }

  lifecycle {
    precondition {
      condition     = !local.canary_split || try(var.stable_revisions["submit"], "") != ""
      error_message = "canary_percent < 100 needs stable_revisions[\"submit\"]: the revision that keeps the rest of the traffic (make deploy CANARY=N fills it in)."
    }
  }

  # A revision starts only once its secrets have a version its service account may read.
  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_version.capability_secret,
    google_secret_manager_secret_iam_member.readers,
  ]
}

# generate: Pub/Sub pushes rows here; only Pub/Sub (and the job) reach it.
resource "google_cloud_run_v2_service" "generate" {
  project             = var.project_id
  name                = local.service_names.generate
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  deletion_protection = var.deletion_protection

  template {
    service_account                  = local.sa.generate
    timeout                          = "${local.row_ack_deadline}s"
    max_instance_request_concurrency = local.generate_concurrency
    scaling {
      min_instance_count = var.min_instances
      max_instance_count = local.generate_max_instances
    }
    containers {
      image = local.images.generate
      ports {
        container_port = 8080
      }
      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
        cpu_idle          = true
        startup_cpu_boost = true
      }
      startup_probe {
        http_get {
          path = "/healthz"
        }
      }
      liveness_probe {
        http_get {
          path = "/healthz"
        }
      }
      env {
        name  = "GOOGLE_CLOUD_PROJECT"
        value = var.project_id
      }
      env {
        name  = "ASSETGEN_STORE"
        value = local.store
      }
      env {
        name  = "ASSETGEN_AUTH"
        value = "oidc"
      }
      env {
        name  = "ASSETGEN_PUSH_AUDIENCE"
        value = local.push_audience
      }
      env {
        name  = "ASSETGEN_PUSH_SA"
        value = local.sa.push
      }
      env {
        name  = "ASSETGEN_QUEUE"
        value = local.queue
      }
      env {
        name  = "ASSETGEN_MAX_ROWS"
        value = tostring(var.max_rows)
      }
      env {
        name  = "ASSETGEN_DAILY_LIMIT_USD"
        value = var.daily_limit_usd
      }
      env {
        name  = "ASSETGEN_USER_LIMITS"
        value = local.user_limits
      }
      env {
        name  = "ASSETGEN_LEASE_TTL_SECS"
        value = tostring(var.lease_ttl_secs)
      }
      # The quota the model calls are paced to, shared by generate's instances (docs/sizing.md).
      env {
        name  = "ASSETGEN_GEMINI_IPM"
        value = tostring(var.gemini_images_per_minute)
      }
      env {
        name  = "ASSETGEN_GEMINI_INSTANCES"
        value = tostring(local.generate_max_instances)
      }
      env {
        name  = "GEMINI_BACKEND"
        value = var.gemini_backend
      }
      env {
        name  = "GEMINI_MODEL"
        value = var.gemini_model
      }
      env {
        name  = "GOOGLE_CLOUD_LOCATION"
        value = var.gemini_location
      }
      env {
        name = "GEMINI_API_KEY"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.gemini_api_key.secret_id
            version = "latest"
          }
        }
      }
    }
  }

  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = var.canary_percent
    tag     = local.canary_tag
  }
  dynamic "traffic" {
    for_each = local.canary_split ? [var.stable_revisions["generate"]] : []
    content {
      type     = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
      revision = traffic.value
      percent  = 100 - var.canary_percent
      tag      = "stable"
    }
  }

  lifecycle {
    precondition {
      condition     = !local.canary_split || try(var.stable_revisions["generate"], "") != ""
      error_message = "canary_percent < 100 needs stable_revisions[\"generate\"]: the revision that keeps the rest of the traffic (make deploy CANARY=N fills it in)."
    }
  }

  # A revision starts only once its secrets have a version its service account may read.
  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_version.capability_secret,
    google_secret_manager_secret_iam_member.readers,
  ]
}

# relay: pages, live progress (SSE, hence the hour-long request timeout), image links, references.
resource "google_cloud_run_v2_service" "relay" {
  project             = var.project_id
  name                = local.service_names.relay
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = var.deletion_protection

  template {
    service_account                  = local.sa.relay
    timeout                          = "3600s"
    max_instance_request_concurrency = 1000
    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.relay_max_instances
    }
    containers {
      image = local.images.relay
      ports {
        container_port = 8080
      }
      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
        cpu_idle          = true
        startup_cpu_boost = true
      }
      startup_probe {
        http_get {
          path = "/healthz"
        }
      }
      liveness_probe {
        http_get {
          path = "/healthz"
        }
      }
      env {
        name  = "GOOGLE_CLOUD_PROJECT"
        value = var.project_id
      }
      env {
        name  = "ASSETGEN_STORE"
        value = local.store
      }
      env {
        name  = "ASSETGEN_AUTH"
        value = "oidc"
      }
      env {
        name  = "ASSETGEN_OIDC_AUDIENCE"
        value = local.relay_audiences
      }
      env {
        name  = "ASSETGEN_ALLOWED"
        value = local.allowed
      }
      env {
        name  = "ASSETGEN_ADMINS"
        value = local.admins
      }
      env {
        name  = "ASSETGEN_PUBLIC_URL"
        value = local.urls.relay
      }
      env {
        # Where the page finds submit's batch routes (submit allows the relay's origin by CORS).
        name  = "ASSETGEN_SUBMIT_URL"
        value = local.urls.submit
      }
      env {
        name = "ASSETGEN_CAPABILITY_SECRET"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.capability_secret.secret_id
            version = "latest"
          }
        }
      }
      env {
        name = "ASSETGEN_LINK_SECRET"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.link_secret.secret_id
            version = "latest"
          }
        }
      }
    }
  }

  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = var.canary_percent
    tag     = local.canary_tag
  }
  dynamic "traffic" {
    for_each = local.canary_split ? [var.stable_revisions["relay"]] : []
    content {
      type     = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
      revision = traffic.value
      percent  = 100 - var.canary_percent
      tag      = "stable"
    }
  }

  lifecycle {
    precondition {
      condition     = !local.canary_split || try(var.stable_revisions["relay"], "") != ""
      error_message = "canary_percent < 100 needs stable_revisions[\"relay\"]: the revision that keeps the rest of the traffic (make deploy CANARY=N fills it in)."
    }
  }

  # A revision starts only once its secrets have a version its service account may read.
  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_version.capability_secret,
    google_secret_manager_secret_iam_member.readers,
  ]
}

# Who may call what. submit and relay are open to allUsers at Cloud Run's door ON PURPOSE: the
# app verifies every caller itself (OIDC ID tokens checked against Google's keys, the audience
# and ASSETGEN_ALLOWED; capability tokens for browsers), and its callers cannot all carry a
# Cloud Run invoker token: the Sheet's identity token has the Apps Script client id as audience,
# and a browser opening a page, an SSE stream or an image link sends no Authorization header.
resource "google_cloud_run_v2_service_iam_member" "public" {
  for_each = toset(["submit", "relay"]) # allUsers: the app verifies tokens itself (see above)
  project  = var.project_id
  location = var.region
  name     = local.service_names[each.key]
  role     = "roles/run.invoker"
  member   = "allUsers"
  depends_on = [
    google_cloud_run_v2_service.submit,
    google_cloud_run_v2_service.relay,
  ]
}

# generate: Pub/Sub's push identity only; Cloud Run checks its token, and the app again.
resource "google_cloud_run_v2_service_iam_member" "push_invokes_generate" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.generate.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${local.sa.push}"
}
