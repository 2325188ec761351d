output "cluster_name" {
  description = "Name of the EKS cluster (for aws eks update-kubeconfig)."
  value       = module.eks.cluster_name
}

output "ecr_repository_url" {
  description = "Where to push the broker image (docker push <url>:<image_tag>)."
  value       = aws_ecr_repository.strata.repository_url
}

output "object_store_url" {
  description = "The brokers' object_store setting."
  value       = module.bucket.object_store_url
}

output "broker_role_arn" {
  description = "The IRSA role the brokers assume."
  value       = module.bucket.role_arn
}

output "bootstrap" {
  description = "Kafka bootstrap address inside the cluster."
  value       = "${local.release}.${var.namespace}.svc.cluster.local:9092"
}
