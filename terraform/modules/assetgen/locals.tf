locals {
  # Cloud Run's deterministic URLs (https://SERVICE-PROJECT_NUMBER.REGION.run.app): known before
  # the services exist, so services can name each other (and themselves, as token audience)
  # without a dependency cycle.
  service_names = { for f in ["submit", "generate", "relay"] : f => "${var.name}-${f}" }
  urls          = { for f, n in local.service_names : f => "https://${n}-${data.google_project.this.number}.${var.region}.run.app" }

  # The aud Pub/Sub's push tokens carry, and generate expects.
  push_audience = local.urls.generate
  # Users' ID tokens: the Sheet's (aud = its Apps Script OAuth client id) and the CLI's (aud = the URL).
  submit_audiences = join(",", compact([local.urls.submit, var.apps_script_client_id]))
  relay_audiences  = join(",", compact([local.urls.relay, var.apps_script_client_id]))

  store = "gs://${google_storage_bucket.state.name}"
  queue = "pubsub://projects/${var.project_id}/topics/${google_pubsub_topic.rows.name}"

  # Sizing generate from the image quota by the rule of docs/sizing.md, with its constants from
  # deploy/sizing.json (a test in common keeps them equal to the code's). Rule 4: as few instances
  # as Cloud Run's concurrency cap allows (each paces to its share, ASSETGEN_GEMINI_INSTANCES of
  # the quota); rule 1: enough rows in flight per instance to keep its share busy (one call in
  # flight per row, a call planned at call_seconds). Rule 2's upper bound holds from ~12 IPM up.
  sizing                 = jsondecode(file("${path.module}/../../../deploy/sizing.json")).constants
  generate_max_instances = max(1, ceil(var.gemini_images_per_minute * local.sizing.headroom / 60 * local.sizing.call_seconds / local.sizing.cloud_run_max_concurrency))
  generate_share_ipm     = var.gemini_images_per_minute / local.generate_max_instances * local.sizing.headroom
  generate_concurrency   = min(local.sizing.cloud_run_max_concurrency, max(1, ceil(local.generate_share_ipm / 60 * local.sizing.call_seconds)))

  allowed     = join(",", var.allowed_users)
  admins      = join(",", var.admins)
  user_limits = join(",", [for user, usd in var.user_limits : "${user}=${usd}"])
}
