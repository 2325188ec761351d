output "bucket_name" {
  description = "Name of the bucket."
  value       = aws_s3_bucket.strata.id
}

output "bucket_arn" {
  description = "ARN of the bucket."
  value       = aws_s3_bucket.strata.arn
}

output "bucket_region" {
  description = "Region of the bucket: the chart's objectStore.s3.region."
  value       = aws_s3_bucket.strata.region
}

output "object_store_url" {
  description = "The broker's object_store setting: the chart's objectStore.url."
  value       = var.prefix == "" ? "s3://${aws_s3_bucket.strata.id}" : "s3://${aws_s3_bucket.strata.id}/${var.prefix}"
}

output "policy_arn" {
  description = "ARN of the IAM policy with exactly the S3 calls a broker makes."
  value       = aws_iam_policy.broker.arn
}

output "role_arn" {
  description = "ARN of the IRSA role for the chart's serviceAccount.annotations (eks.amazonaws.com/role-arn); null when create_irsa_role is false."
  value       = one(aws_iam_role.broker[*].arn)
}
