# State in a GCS bucket made once by hand (README "Deploying to Google Cloud"): a backend block
# cannot read variables, so make deploy passes the bucket at init:
#   terraform init -backend-config=bucket=TF_STATE_BUCKET
terraform {
  backend "gcs" {
    prefix = "assetgen/dev"
  }
}
