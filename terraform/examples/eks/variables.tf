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
