#!/usr/bin/env bash
# make deploy | promote | rollback: one environment of terraform/envs/ (README "Deploying to
# Google Cloud"). Needs gcloud (logged in), a terraform >= 1.5 that can download providers
# (TERRAFORM=path to pick one), TF_STATE_BUCKET (a bucket made once for Terraform's state) and
# terraform/envs/ENV/terraform.tfvars.
#
#   tools/deploy.sh deploy ENV [CANARY]  build and push the images, then apply; CANARY=N (1-99) gives
#                                        the new revisions N % of traffic, tagged canary, and
#                                        leaves the rest on the stable revisions
#   tools/deploy.sh promote ENV          the newest revisions take 100 %
#   tools/deploy.sh rollback ENV         the stable revisions take 100 % back
set -euo pipefail

command="${1:?usage: tools/deploy.sh deploy|promote|rollback ENV [CANARY]}"
env="${2:-dev}"
canary="${3:-}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/terraform/envs/$env"
terraform="${TERRAFORM:-terraform}"

[[ -d "$dir" ]] || { echo "no environment $env under terraform/envs" >&2; exit 1; }
[[ -f "$dir/terraform.tfvars" ]] || {
  echo "copy terraform/envs/$env/terraform.tfvars.example to terraform.tfvars and fill it in" >&2
  exit 1
}
: "${TF_STATE_BUCKET:?set TF_STATE_BUCKET to the bucket that holds Terraform state (README)}"
command -v gcloud >/dev/null || { echo "gcloud is needed (Google Cloud SDK), logged in: gcloud auth login" >&2; exit 1; }

tf() { "$terraform" -chdir="$dir" "$@"; }
# One value of the configuration (tfvars and defaults), without applying anything.
tf_eval() { echo "$1" | tf console -var "image_tag=${tag:-unset}" | tr -d '"'; }
approve=()
[[ "${AUTO_APPROVE:-}" == 1 ]] && approve=(-auto-approve)

tf init -input=false -backend-config="bucket=$TF_STATE_BUCKET" >&2

case "$command" in
  deploy)
    case "${canary:-100}" in
      100) split=() ;;
      [1-9] | [1-9][0-9])
        # The revisions serving now keep the rest of the traffic.
        split=(-var "stable_revisions=$(tf output -json stable_revisions)")
        ;;
      *) echo "CANARY is a percentage from 1 to 99 (or unset for a plain rollout)" >&2; exit 1 ;;
    esac
    tag="${IMAGE_TAG:-$(git -C "$root" rev-parse --short=12 HEAD)}"
    [[ -z "$(git -C "$root" status --porcelain)" ]] || tag="$tag-dirty-$(date -u +%Y%m%d%H%M%S)"
    project="$(tf_eval var.project_id)"
    registry="$(tf_eval '"${var.region}-docker.pkg.dev/${var.project_id}/${var.name}"')"
    secret="$(tf_eval '"${var.name}-gemini-api-key"')"

    # First the image repository and the key's secret: the images and the key need a place. Only
    # on the first deploy: once both exist the full apply below keeps them, and a targeted apply
    # is refused while a `moved` block (terraform/modules/assetgen/moved.tf) is pending.
    first=(module.assetgen.google_artifact_registry_repository.images
      module.assetgen.google_secret_manager_secret.gemini_api_key)
    if [[ "$( (tf state list "${first[@]}" 2>/dev/null || true) | wc -l)" -lt "${#first[@]}" ]]; then
      tf apply -input=false "${approve[@]}" -var "image_tag=$tag" "${first[@]/#/-target=}"
    fi
    # The services read GEMINI_API_KEY from the secret's latest version, so it needs one; with
    # Vertex AI the key is unused and a placeholder will do.
    if [[ -z "$(gcloud secrets versions list "$secret" --project "$project" --filter=state=enabled --limit 1 --format='value(name)')" ]]; then
      key="${GEMINI_API_KEY:-}"
      [[ "$(tf_eval var.gemini_backend)" == developer ]] || key="${key:-unused-with-vertex}"
      [[ -n "$key" ]] || {
        echo "the secret $secret has no Gemini API key yet: run again with GEMINI_API_KEY=… in the environment" >&2
        exit 1
      }
      printf %s "$key" | gcloud secrets versions add "$secret" --project "$project" --data-file=- >&2
    fi

    gcloud auth configure-docker "${registry%%/*}" --quiet >&2
    make -C "$root" --no-print-directory images IMAGE_REGISTRY="$registry" IMAGE_TAG="$tag" PUSH=1

    tf apply -input=false "${approve[@]}" -var "image_tag=$tag" -var "canary_percent=${canary:-100}" "${split[@]}"
    ;;
  promote)
    tf apply -input=false "${approve[@]}" -var "image_tag=$(tf output -raw image_tag)" -var canary_percent=100
    ;;
  rollback)
    tf apply -input=false "${approve[@]}" -var "image_tag=$(tf output -raw image_tag)" -var canary_percent=0 \
      -var "stable_revisions=$(tf output -json stable_revisions)"
    ;;
  *)
    echo "usage: tools/deploy.sh deploy|promote|rollback ENV [CANARY]" >&2
    exit 1
    ;;
esac
tf output
