output "bucket_name" {
  description = "Name of the bucket."
  value       = minio_s3_bucket.strata.bucket
}

output "object_store_url" {
  description = "The broker's object_store setting: the chart's objectStore.url."
  value       = var.prefix == "" ? "s3://${minio_s3_bucket.strata.bucket}" : "s3://${minio_s3_bucket.strata.bucket}/${var.prefix}"
}

output "access_key_id" {
  description = "The brokers' access key id (the user name): AWS_ACCESS_KEY_ID in the Secret the chart reads (objectStore.credentials.existingSecret)."
  value       = minio_iam_user.strata.id
}

output "secret_access_key" {
  description = "The brokers' secret key: AWS_SECRET_ACCESS_KEY in that Secret."
  value       = minio_iam_user.strata.secret
  sensitive   = true
}
