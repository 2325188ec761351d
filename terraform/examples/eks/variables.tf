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
  description = "Kubernetes minor version of the EKS cluster. Pick the newest one EKS lists under standard support (`aws eks describe-cluster-versions --region REGION` shows each version's status, as does the \"Kubernetes versions\" page of the EKS user guide): a version is in standard support for 14 months after EKS releases it, then costs extra per cluster hour for 12 more (extended support). 1.35 is in standard support until March 2027."
  type        = string
  default     = "1.35"
}

variable "node_ami_type" {
  description = "AMI type of the broker nodes: AL2023_x86_64_STANDARD (amd64, e.g. m6i/m7i instances) or AL2023_ARM_64_STANDARD (arm64 Graviton, e.g. m7g instances). It must match instance_type's architecture and the image's (docker build --platform linux/amd64 or linux/arm64)."
  type        = string
  default     = "AL2023_x86_64_STANDARD"

  validation {
    condition     = contains(["AL2023_x86_64_STANDARD", "AL2023_ARM_64_STANDARD"], var.node_ami_type)
    error_message = "The node_ami_type must be AL2023_x86_64_STANDARD or AL2023_ARM_64_STANDARD."
  }
}

variable "instance_type" {
  description = "EC2 instance type of the broker nodes, of node_ami_type's architecture (m6i.xlarge for amd64, m7g.xlarge for Graviton). The brokers' data volumes are gp3 EBS volumes here; see docs/deploy.md for local NVMe."
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

variable "gp3_iops" {
  description = "Provisioned IOPS of each broker volume (the gp3 storage class; etcd's volumes have their own class, gp3-etcd, at the baseline). 3000 is gp3's baseline, included in its price; each IOPS above it is billed per month. At most 80000, and at most 500 per GiB of broker_volume_size. docs/deploy.md, \"Sizing the data volume and the cache\", says when to raise it."
  type        = number
  default     = 3000

  validation {
    condition     = var.gp3_iops >= 3000 && var.gp3_iops <= 80000 && var.gp3_iops % 1 == 0
    error_message = "The gp3_iops must be a whole number from 3000 (gp3's baseline) to 80000 (gp3's maximum)."
  }
}

variable "gp3_throughput" {
  description = "Provisioned throughput of each broker volume in MiB/s (etcd's stay at the baseline). 125 is gp3's baseline, included in its price; at most 2000, and at most gp3_iops / 4. A broker writes about its produce rate × the replication factor, and reads each sealed segment once more to upload it (docs/deploy.md, \"Sizing the data volume and the cache\")."
  type        = number
  default     = 125

  validation {
    condition     = var.gp3_throughput >= 125 && var.gp3_throughput <= 2000 && var.gp3_throughput % 1 == 0
    error_message = "The gp3_throughput must be a whole number of MiB/s from 125 (gp3's baseline) to 2000 (gp3's maximum)."
  }
}

variable "force_destroy_bucket" {
  description = "Let terraform destroy delete the bucket with the segments still in it (terraform/aws's force_destroy). False: destroy fails on a non-empty bucket; empty it first as docs/deploy.md, \"Tearing down\", shows. The bucket is the only copy of tiered history: leave false for a cluster whose data matters."
  type        = bool
  default     = false
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
    error_message = "The sasl_mechanism must be SCRAM-SHA-256 or SCRAM-SHA-512."
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

variable "etcd_storage_class" {
  description = "Storage class of the chart's etcd volumes: gp3-etcd (gp3's baseline, 3000 IOPS and 125 MiB/s, whatever gp3_iops and gp3_throughput give the brokers) or gp3 (the brokers' class). An install made before gp3-etcd existed keeps \"gp3\": the class is part of etcd's volumeClaimTemplates, which Kubernetes cannot change, so helm upgrade would fail (docs/upgrading.md, \"Terraform example\"). With gp3, keep gp3_iops at most 4000 (500 per GiB of etcd's 8Gi) or a new etcd claim stays Pending."
  type        = string
  default     = "gp3-etcd"

  validation {
    condition     = contains(["gp3-etcd", "gp3"], var.etcd_storage_class)
    error_message = "The etcd_storage_class must be gp3-etcd or gp3."
  }
}

variable "extra_chart_values" {
  description = "More values for the Helm release, as one YAML document applied after the example's own (it overrides them), e.g. file(\"strata-values.yaml\") with an externalAccess section. Set the chart's values here rather than with helm upgrade --set: the next terraform apply would undo those. Empty: none."
  type        = string
  default     = ""

  validation {
    condition     = var.extra_chart_values == "" || can(keys(yamldecode(var.extra_chart_values)))
    error_message = "The extra_chart_values must be a YAML mapping of the chart's values (the text of a values file)."
  }
}
