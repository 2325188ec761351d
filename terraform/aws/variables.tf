variable "bucket_name" {
  description = "Name of the S3 bucket that holds the tiered segments (globally unique)."
  type        = string
}

variable "prefix" {
  description = "Key prefix inside the bucket for this cluster, without slashes at either end (e.g. \"prod\"). Empty: the whole bucket. The IAM policy grants access under this prefix only."
  type        = string
  default     = ""

  validation {
    condition     = !can(regex("^/|/$", var.prefix))
    error_message = "The prefix must not start or end with a slash."
  }
}

variable "force_destroy" {
  description = "Let terraform destroy delete a bucket that still holds objects. Leave false in production: the bucket is the durable copy of all history."
  type        = bool
  default     = false
}

variable "kms_key_arn" {
  description = "KMS key for SSE-KMS encryption of the bucket. Null: SSE-S3 (AES-256, no KMS request costs). With a key, the broker's policy also gets kms:GenerateDataKey and kms:Decrypt on it."
  type        = string
  default     = null
}

variable "abort_incomplete_multipart_upload_days" {
  description = "Days after which the bucket deletes the parts of multipart uploads that never completed (the broker aborts failed uploads itself; this catches crashes)."
  type        = number
  default     = 1
}

variable "create_irsa_role" {
  description = "Create the IRSA role that gives the policy to the chart's service account (needs oidc_provider_arn). A plain boolean, known when planning, unlike an OIDC provider ARN that another module creates in the same apply. False: no role; attach the policy (policy_arn) to the brokers' identity yourself."
  type        = bool
  default     = false
}

variable "oidc_provider_arn" {
  description = "ARN of the EKS cluster's IAM OIDC provider (the oidc_provider_arn output of the terraform-aws-modules/eks module), trusted by the IRSA role. Required with create_irsa_role, and refused without it (a plan that sets only this ARN fails rather than create no role); may be unknown until apply."
  type        = string
  default     = null
}

variable "namespace" {
  description = "Kubernetes namespace of the Helm release; the IRSA role trusts the service account in this namespace only."
  type        = string
  default     = "strata"
}

variable "service_account" {
  description = "Name of the brokers' Kubernetes service account: the chart's full name (the release name when it contains \"strata\", e.g. \"strata\") unless serviceAccount.name is set."
  type        = string
  default     = "strata"
}

variable "name" {
  description = "Name of the IAM policy and role."
  type        = string
  default     = "strata"
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
