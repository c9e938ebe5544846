# Releases by revision traffic (README "Canary releases"): every apply creates new revisions (the
# image tag changes); they get var.canary_percent of each service's traffic, tagged `canary`
# (reachable on their own at https://canary---SERVICE-….run.app), and the revisions named in
# var.stable_revisions keep the rest, tagged `stable`. 100 is a plain rollout (make deploy,
# make promote); 0 sends everything back to the stable revisions (make rollback).
locals {
  canary_split = var.canary_percent < 100
  canary_tag   = local.canary_split ? "canary" : null
  # Each service's newest ready revision: what a rollout or a promotion leaves as the stable one.
  latest_revisions = { for f, service in google_cloud_run_v2_service.function : f => service.latest_ready_revision }
}
