# The generate binary in job mode (`--job`; Cloud Run also sets CLOUD_RUN_TASK_INDEX): the sweep
# publishes again rows no message will finish, settles ended batches, frees orphan holds and
# compacts the ledger. Cloud Scheduler starts it on var.sweep_schedule. A bulk re-run of one batch
# is the same job executed with ASSETGEN_JOB_BATCH set for that execution only:
#   gcloud run jobs execute NAME-generate-job --update-env-vars ASSETGEN_JOB_BATCH=<id> --tasks 4
resource "google_cloud_run_v2_job" "generate" {
  project             = var.project_id
  name                = "${var.name}-generate-job"
  location            = var.region
  deletion_protection = var.deletion_protection

  template {
    task_count = 1
    template {
      service_account = local.sa.job
      timeout         = "1800s"
      max_retries     = 1
      containers {
        image = local.images.generate
        args  = ["--job"]
        resources {
          limits = {
            cpu    = "1"
            memory = "512Mi"
          }
        }
        # What the sweep reads: the common variables and generation's (run.tf).
        dynamic "env" {
          for_each = concat(local.env.common, local.env.generation)
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
  }

  # A revision starts only once its secrets have a version its service account may read.
  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_version.signing_key,
    google_secret_manager_secret_iam_member.readers,
  ]
}

resource "google_cloud_run_v2_job_iam_member" "scheduler_runs_job" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_job.generate.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${local.sa.scheduler}"
}

resource "google_cloud_scheduler_job" "sweep" {
  project          = var.project_id
  region           = var.region
  name             = "${var.name}-sweep"
  description      = "Runs the generate job: sweep and ledger compaction"
  schedule         = var.sweep_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "320s"

  retry_config {
    retry_count = 1
  }

  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/${google_cloud_run_v2_job.generate.id}:run"
    oauth_token {
      service_account_email = local.sa.scheduler
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_cloud_run_v2_job_iam_member.scheduler_runs_job]
}
