variable "bucket_name" {
  description = "Name of the MinIO bucket that holds the tiered segments."
  type        = string
}

variable "prefix" {
  description = "Key prefix inside the bucket for this cluster, without slashes at either end. Empty: the whole bucket. The user's policy grants access under this prefix only."
  type        = string
  default     = ""

  validation {
    condition     = !can(regex("^/|/$", var.prefix))
    error_message = "The prefix must not start or end with a slash."
  }
}

variable "user_name" {
  description = "Name of the MinIO user the brokers authenticate as (its access key id)."
  type        = string
  default     = "strata"
}

variable "force_destroy" {
  description = "Let terraform destroy delete a bucket that still holds objects."
  type        = bool
  default     = false
}
