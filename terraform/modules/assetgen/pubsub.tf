# Rows: submit publishes one message per row; Pub/Sub pushes each to generate with an OIDC token
# of its own service account, retries with backoff, and after max_delivery_attempts moves the
# message to the dead-letter topic, whose subscription pushes it to generate's dead-letter
# endpoint (the row is failed there and its money released).

locals {
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  # The longest a row can take (docs/sizing.md, rule 3): up to 3 variants one after another,
  # each waiting at most 60 s for its turn at the quota (the pacer's max_wait cap) and then a
  # model call of at most 120 s (GeminiTimeouts::default), plus 40 s for references (4 at a time,
  # 10 s, retried after 1 s and 2 s) and writes. The ack deadline and generate's request timeout
  # must both be above it, or Pub/Sub redelivers a row that is still being made.
  longest_row_seconds = 3 * (60 + 120) + 40
  row_ack_deadline    = 600 # Pub/Sub's maximum; above local.longest_row_seconds (checked in tests)
}

resource "google_pubsub_topic" "rows" {
  #checkov:skip=CKV_GCP_83:Messages are row ids (batch, row number), no content worth a customer-managed key; Google-managed encryption applies.
  project = var.project_id
  name    = "${var.name}-rows"
  # Unacknowledged rows survive a day-long outage of generate.
  message_retention_duration = "86400s"
  depends_on                 = [google_project_service.apis]
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Messages are row ids (batch, row number), no content worth a customer-managed key; Google-managed encryption applies.
  project                    = var.project_id
  name                       = "${var.name}-rows-dead-letter"
  message_retention_duration = "604800s"
  depends_on                 = [google_project_service.apis]
}

resource "google_pubsub_subscription" "rows" {
  project              = var.project_id
  name                 = "${var.name}-rows-push"
  topic                = google_pubsub_topic.rows.id
  ack_deadline_seconds = local.row_ack_deadline

  push_config {
    push_endpoint = "${local.urls.generate}/pubsub/rows"
    oidc_token {
      service_account_email = local.sa.push
      audience              = local.push_audience
    }
  }

  # 429 and 5xx from the model nack the row: come back later, not at once.
  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  # Never expire for inactivity: a quiet week must not delete the pipeline.
  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "dead_letter" {
  project              = var.project_id
  name                 = "${var.name}-rows-dead-letter-push"
  topic                = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds = 60

  push_config {
    push_endpoint = "${local.urls.generate}/pubsub/dead-letter"
    oidc_token {
      service_account_email = local.sa.push
      audience              = local.push_audience
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  expiration_policy {
    ttl = ""
  }
}

# The Pub/Sub service agent moves undeliverable rows: it publishes to the dead-letter topic and
# acknowledges the forwarded message on the source subscription.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "rows_dead_letter_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.rows.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# The service agent mints the push tokens of the push service account (needed in projects made
# before April 2021; harmless in newer ones).
resource "google_service_account_iam_member" "pubsub_mints_push_tokens" {
  service_account_id = google_service_account.workload["push"].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}
