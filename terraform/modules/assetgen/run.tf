# The three functions as Cloud Run services, one resource for the three: local.functions says
# what differs between them. Every variable a service's code reads is set, and nothing else
# (terraform/tests/test_env.py derives the list from the Rust source).

locals {
  # The workloads' environment variables, in the groups they share: each service's list is in
  # local.functions below, the job's in job.tf. An entry has a value, or names the secret of
  # local.secrets (secrets.tf) it is read from, which the workload's service account may read
  # (local.secret_readers). Cloud Run keeps env as an ordered list and a new order is a change to
  # apply, so the lists keep the order the services have always been deployed with.
  env = {
    # Every workload: the project its Google clients work in, and where all state lives.
    common = [
      { name = "GOOGLE_CLOUD_PROJECT", value = var.project_id },
      { name = "ASSETGEN_STORE", value = local.store },
    ]
    # The services check each caller's ID token themselves.
    oidc = [
      { name = "ASSETGEN_AUTH", value = "oidc" },
    ]
    # The services people call (submit, relay): who may, who may act on anyone's batch, and the
    # pages' own URL, which links point to.
    people = [
      { name = "ASSETGEN_ALLOWED", value = local.allowed },
      { name = "ASSETGEN_ADMINS", value = local.admins },
      { name = "ASSETGEN_PUBLIC_URL", value = local.urls.relay },
    ]
    # The keys that sign browsers' per-batch tokens and image and reference links.
    links = [
      { name = "ASSETGEN_CAPABILITY_SECRET", secret = "capability_secret" },
      { name = "ASSETGEN_LINK_SECRET", secret = "link_secret" },
    ]
    # Rows and money: the queue, the limits, the model (submit prices a batch, generate and the job make it).
    generation = [
      { name = "ASSETGEN_QUEUE", value = local.queue },
      { name = "ASSETGEN_MAX_ROWS", value = tostring(var.max_rows) },
      { name = "ASSETGEN_DAILY_LIMIT_USD", value = var.daily_limit_usd },
      { name = "ASSETGEN_USER_LIMITS", value = local.user_limits },
      { name = "ASSETGEN_LEASE_TTL_SECS", value = tostring(var.lease_ttl_secs) },
      # The quota the model calls are paced to, shared by generate's instances (docs/sizing.md).
      { name = "ASSETGEN_GEMINI_IPM", value = tostring(var.gemini_images_per_minute) },
      { name = "ASSETGEN_GEMINI_INSTANCES", value = tostring(local.generate_max_instances) },
      { name = "GEMINI_BACKEND", value = var.gemini_backend },
      { name = "GEMINI_MODEL", value = var.gemini_model },
      { name = "GOOGLE_CLOUD_LOCATION", value = var.gemini_location },
      { name = "GEMINI_API_KEY", secret = "gemini_api_key" },
    ]
  }

  # What differs between the services; the rest is the resource below.
  functions = {
    # submit: the Sheet's and the CLI's entry point.
    submit = {
      ingress       = "INGRESS_TRAFFIC_ALL"
      timeout       = "60s"
      concurrency   = 80
      max_instances = var.submit_max_instances
      env = concat(
        local.env.common,
        local.env.oidc,
        [{ name = "ASSETGEN_OIDC_AUDIENCE", value = local.submit_audiences }],
        local.env.people,
        # The relay's page calls submit's batch routes (status, cancel, retry) from the relay's origin.
        [{ name = "ASSETGEN_CORS_ORIGINS", value = local.urls.relay }],
        local.env.links,
        local.env.generation,
      )
    }
    # generate: Pub/Sub pushes rows here; only Pub/Sub (and the job) reach it.
    generate = {
      ingress       = "INGRESS_TRAFFIC_INTERNAL_ONLY"
      timeout       = "${local.row_ack_deadline}s"
      concurrency   = local.generate_concurrency
      max_instances = local.generate_max_instances
      env = concat(
        local.env.common,
        local.env.oidc,
        [
          { name = "ASSETGEN_PUSH_AUDIENCE", value = local.push_audience },
          { name = "ASSETGEN_PUSH_SA", value = local.sa.push },
        ],
        local.env.generation,
      )
    }
    # relay: pages, live progress (SSE, hence the hour-long request timeout), image links, references.
    relay = {
      ingress       = "INGRESS_TRAFFIC_ALL"
      timeout       = "3600s"
      concurrency   = 1000
      max_instances = var.relay_max_instances
      env = concat(
        local.env.common,
        local.env.oidc,
        [{ name = "ASSETGEN_OIDC_AUDIENCE", value = local.relay_audiences }],
        local.env.people,
        # Where the page finds submit's batch routes (submit allows the relay's origin by CORS).
        [{ name = "ASSETGEN_SUBMIT_URL", value = local.urls.submit }],
        local.env.links,
      )
    }
  }
}

resource "google_cloud_run_v2_service" "function" {
  for_each            = local.functions
  project             = var.project_id
  name                = local.service_names[each.key]
  location            = var.region
  ingress             = each.value.ingress
  deletion_protection = var.deletion_protection

  template {
    service_account                  = local.sa[each.key]
    timeout                          = each.value.timeout
    max_instance_request_concurrency = each.value.concurrency
    scaling {
      min_instance_count = var.min_instances
      max_instance_count = each.value.max_instances
    }
    containers {
      image = local.images[each.key]
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
      dynamic "env" {
        for_each = each.value.env
        content {
          name  = env.value.name
          value = try(env.value.value, null)
          dynamic "value_source" {
            for_each = try([env.value.secret], [])
            content {
              secret_key_ref {
                secret  = local.secrets[value_source.value].secret_id
                version = "latest"
              }
            }
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
    for_each = local.canary_split ? [var.stable_revisions[each.key]] : []
    content {
      type     = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
      revision = traffic.value
      percent  = 100 - var.canary_percent
      tag      = "stable"
    }
  }

  lifecycle {
    precondition {
      condition     = !local.canary_split || try(var.stable_revisions[each.key], "") != ""
      error_message = "canary_percent < 100 needs stable_revisions[\"${each.key}\"]: the revision that keeps the rest of the traffic (make deploy CANARY=N fills it in)."
    }
  }

  # A revision starts only once its secrets have a version its service account may read.
  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_version.signing_key,
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
  name     = google_cloud_run_v2_service.function[each.key].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# generate: Pub/Sub's push identity only; Cloud Run checks its token, and the app again.
resource "google_cloud_run_v2_service_iam_member" "push_invokes_generate" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.function["generate"].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${local.sa.push}"
}
