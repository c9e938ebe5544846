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
  relay_audiences  = local.urls.relay

  store = "gs://${google_storage_bucket.state.name}"
  queue = "pubsub://projects/${var.project_id}/topics/${google_pubsub_topic.rows.name}"

  # Sizing generate from the image quota: every row in flight has one model call in flight (its
  # variants go one after another), so keeping the quota busy takes
  # images_per_minute × seconds_per_image / 60 rows in flight, spread over instances of
  # generate_concurrency rows each. The pacer in the code spreads the quota over that many
  # instances, so more rows than the quota can serve wait in Pub/Sub, not on the model.
  generate_rows_in_flight = max(1, ceil(var.gemini_images_per_minute * var.gemini_seconds_per_image / 60))
  generate_max_instances  = max(1, ceil(local.generate_rows_in_flight / var.generate_concurrency))

  allowed     = join(",", var.allowed_users)
  user_limits = join(",", [for user, usd in var.user_limits : "${user}=${usd}"])
}
