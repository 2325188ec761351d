# The bucket Strata tiers segments to, the IAM policy its brokers need, and an IRSA role
# that gives that policy to the chart's service account.

locals {
  # Objects live under "<prefix>/" (or at the bucket's root without a prefix).
  object_prefix = var.prefix == "" ? "" : "${var.prefix}/"
  bucket_arn    = aws_s3_bucket.strata.arn
  objects_arn   = "${aws_s3_bucket.strata.arn}/${local.object_prefix}*"
  # The issuer without https://, as the trust policy's condition keys spell it.
  oidc_issuer = var.oidc_provider_arn == null ? null : element(split(":oidc-provider/", var.oidc_provider_arn), 1)
}

resource "aws_s3_bucket" "strata" {
  bucket        = var.bucket_name
  force_destroy = var.force_destroy
  tags          = var.tags
}

resource "aws_s3_bucket_ownership_controls" "strata" {
  bucket = aws_s3_bucket.strata.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "strata" {
  bucket = aws_s3_bucket.strata.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "strata" {
  bucket = aws_s3_bucket.strata.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    # With SSE-KMS, one KMS request per bucket-level data key instead of one per object.
    bucket_key_enabled = var.kms_key_arn != null
  }
}

# Versioning stays off: Strata never overwrites a key, and deleted segments would
# otherwise keep costing storage as noncurrent versions.

resource "aws_s3_bucket_lifecycle_configuration" "strata" {
  bucket = aws_s3_bucket.strata.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_upload_days
    }
  }
}

# Refuse plain-HTTP requests.
data "aws_iam_policy_document" "bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    resources = [local.bucket_arn, "${local.bucket_arn}/*"]
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "strata" {
  bucket = aws_s3_bucket.strata.id
  policy = data.aws_iam_policy_document.bucket.json

  depends_on = [aws_s3_bucket_public_access_block.strata]
}

# Exactly the S3 calls a broker makes (tiering/src/store.rs): PutObject (whole objects,
# and multipart: CreateMultipartUpload, UploadPart, CompleteMultipartUpload),
# AbortMultipartUpload after a failed multipart upload, GetObject (ranged reads),
# DeleteObject (retention, deleted topics, the scrubber) and ListObjectsV2 (the
# scrubber only). tests/test_terraform.py runs a broker against an S3 server and checks
# this list against the calls it sees.
data "aws_iam_policy_document" "broker" {
  statement {
    sid       = "Objects"
    effect    = "Allow"
    actions   = ["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = [local.objects_arn]
  }

  statement {
    sid       = "List"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]

    dynamic "condition" {
      for_each = var.prefix == "" ? [] : [var.prefix]
      content {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = ["${condition.value}/*"]
      }
    }
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "Kms"
      effect    = "Allow"
      actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_policy" "broker" {
  name        = var.name
  description = "Strata brokers: objects under s3://${var.bucket_name}/${local.object_prefix}"
  policy      = data.aws_iam_policy_document.broker.json
  tags        = var.tags

  lifecycle {
    # Before create_irsa_role, oidc_provider_arn alone made the role. A caller that still
    # sets only the ARN would see its role destroyed on the next apply (and its brokers
    # lose the bucket): refuse that instead. An ARN unknown while planning (the EKS
    # module's, on the first apply) passes; it is checked again at apply.
    precondition {
      condition     = var.create_irsa_role || var.oidc_provider_arn == null
      error_message = "oidc_provider_arn is set but create_irsa_role is false, so no IRSA role would be created (an existing one would be destroyed): set create_irsa_role = true, or drop oidc_provider_arn and attach policy_arn yourself."
    }
  }
}

# IRSA: pods running as the chart's service account assume this role with their
# projected service-account token. Whether to create it is create_irsa_role, known when
# planning: oidc_provider_arn usually comes from the EKS module and is unknown until
# that module is applied, so a count computed from it could not be planned.
data "aws_iam_policy_document" "irsa_trust" {
  count = var.create_irsa_role ? 1 : 0

  lifecycle {
    precondition {
      condition     = var.oidc_provider_arn != null
      error_message = "The IRSA role (create_irsa_role) needs oidc_provider_arn, the EKS cluster's IAM OIDC provider."
    }
  }

  statement {
    effect  = "Allow"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${var.service_account}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "broker" {
  count = var.create_irsa_role ? 1 : 0

  name               = var.name
  description        = "Strata brokers (service account ${var.namespace}/${var.service_account})"
  assume_role_policy = data.aws_iam_policy_document.irsa_trust[0].json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "broker" {
  count = var.create_irsa_role ? 1 : 0

  role       = aws_iam_role.broker[0].name
  policy_arn = aws_iam_policy.broker.arn
}
