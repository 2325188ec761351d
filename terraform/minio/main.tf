# A MinIO bucket for Strata, a user for the brokers and a policy with exactly the S3
# calls a broker makes (the same actions as terraform/aws). MinIO removes the parts of
# multipart uploads that never completed by itself (its api stale_uploads_expiry,
# 24 h by default), so no lifecycle rule is needed for them.

locals {
  object_prefix = var.prefix == "" ? "" : "${var.prefix}/"
}

resource "minio_s3_bucket" "strata" {
  bucket        = var.bucket_name
  acl           = "private"
  force_destroy = var.force_destroy
}

resource "minio_iam_user" "strata" {
  name          = var.user_name
  force_destroy = true
}

resource "minio_iam_policy" "strata" {
  name = "${var.user_name}-strata"
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "Objects"
        Effect   = "Allow"
        Action   = ["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
        Resource = ["arn:aws:s3:::${minio_s3_bucket.strata.bucket}/${local.object_prefix}*"]
      },
      merge(
        {
          Sid      = "List"
          Effect   = "Allow"
          Action   = ["s3:ListBucket"]
          Resource = ["arn:aws:s3:::${minio_s3_bucket.strata.bucket}"]
        },
        var.prefix == "" ? {} : { Condition = { StringLike = { "s3:prefix" = ["${var.prefix}/*"] } } },
      ),
    ]
  })
}

resource "minio_iam_user_policy_attachment" "strata" {
  user_name   = minio_iam_user.strata.id
  policy_name = minio_iam_policy.strata.id
}
