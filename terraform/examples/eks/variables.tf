variable "region" {
  description = "AWS region for the VPC, the EKS cluster, the bucket and the image repository."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Name of the EKS cluster, and prefix of the other resources' names."
  type        = string
  default     = "strata"
}

variable "bucket_name" {
  description = "Name of the S3 bucket for tiered segments (globally unique)."
  type        = string
}

variable "kubernetes_version" {
  description = "Kubernetes version of the EKS cluster."
  type        = string
  default     = "1.33"
}

variable "instance_type" {
  description = "EC2 instance type of the broker nodes. The brokers' data volumes are gp3 EBS volumes here; see docs/deploy.md for local NVMe."
  type        = string
  default     = "m6i.xlarge"
}

variable "nodes" {
  description = "Worker nodes: at least the brokers plus room for etcd (3 brokers, 3 etcd members, one of each per node)."
  type        = number
  default     = 3
}

variable "brokers" {
  description = "Brokers in the StatefulSet (the chart's replicas)."
  type        = number
  default     = 3
}

variable "broker_volume_size" {
  description = "Size of each broker's data volume (the chart's storage.size)."
  type        = string
  default     = "100Gi"
}

variable "namespace" {
  description = "Kubernetes namespace of the Helm release."
  type        = string
  default     = "strata"
}

variable "image_tag" {
  description = "Tag of the broker image pushed to the ECR repository this example creates (docs/deploy.md shows the push)."
  type        = string
  default     = "0.1.0"
}

variable "install_chart" {
  description = "Install the Helm release. Set to false for a first apply that only creates the cluster and the image repository, before the image is pushed."
  type        = bool
  default     = true
}

variable "tls_issuer" {
  description = "cert-manager issuer that signs the brokers' certificate, e.g. { name = \"strata-ca\", kind = \"ClusterIssuer\" }. Set, it turns on the chart's security: clients on SASL_SSL, mutual TLS between brokers, the ACL authorizer and the admin API's token. The issuer must write ca.crt into the Secret (a CA issuer); cert-manager is not installed by this example. Null: no security (a PLAINTEXT listener)."
  type = object({
    name = string
    kind = optional(string, "ClusterIssuer")
  })
  default = null
}

variable "sasl_mechanism" {
  description = "SASL mechanism clients use with tls_issuer set: SCRAM-SHA-512 or SCRAM-SHA-256 (the brokers also accept the other SCRAM one)."
  type        = string
  default     = "SCRAM-SHA-512"

  validation {
    condition     = contains(["SCRAM-SHA-256", "SCRAM-SHA-512"], var.sasl_mechanism)
    error_message = "sasl_mechanism must be SCRAM-SHA-256 or SCRAM-SHA-512."
  }
}

variable "sasl_users_secret" {
  description = "With tls_issuer: an existing Secret in the namespace whose key `users` holds the first users, one NAME:MECHANISM:PASSWORD line each (docs/operations.md, \"Security on Kubernetes\"). Terraform never sees the passwords."
  type        = string
  default     = "strata-sasl-users"
}

variable "admin_token_secret" {
  description = "With tls_issuer: an existing Secret in the namespace whose key `token` holds the admin API's bearer token."
  type        = string
  default     = "strata-admin-token"
}

variable "super_users" {
  description = "With tls_issuer: principals the ACL authorizer allows everything (the chart's security.authorization.superUsers), e.g. [\"User:admin\"]. Give applications ACLs instead."
  type        = list(string)
  default     = ["User:admin"]
}
