# Where resources declared one by one moved when they became one resource with for_each: an
# existing deployment's state follows on its next apply, with nothing destroyed or created
# (terraform/tests/test_moved.py checks every old address has its block). Keep these until every
# deployment has applied this configuration once; removing one early plans a destroy and create.
# That first apply must be untargeted: Terraform refuses a -target plan while a move is pending,
# so make deploy (tools/deploy.sh) makes its targeted first step only on a first deploy.

moved {
  from = google_cloud_run_v2_service.submit
  to   = google_cloud_run_v2_service.function["submit"]
}

moved {
  from = google_cloud_run_v2_service.generate
  to   = google_cloud_run_v2_service.function["generate"]
}

moved {
  from = google_cloud_run_v2_service.relay
  to   = google_cloud_run_v2_service.function["relay"]
}

moved {
  from = google_secret_manager_secret.capability_secret
  to   = google_secret_manager_secret.signing_key["capability_secret"]
}

moved {
  from = google_secret_manager_secret.link_secret
  to   = google_secret_manager_secret.signing_key["link_secret"]
}

moved {
  from = random_password.capability_secret
  to   = random_password.signing_key["capability_secret"]
}

moved {
  from = random_password.link_secret
  to   = random_password.signing_key["link_secret"]
}

moved {
  from = google_secret_manager_secret_version.capability_secret
  to   = google_secret_manager_secret_version.signing_key["capability_secret"]
}

moved {
  from = google_secret_manager_secret_version.link_secret
  to   = google_secret_manager_secret_version.signing_key["link_secret"]
}
