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
  value       = local.client_properties["bootstrap.servers"]
}

output "security_protocol" {
  description = "The security.protocol clients use: SASL_SSL with tls_issuer set, else PLAINTEXT."
  value       = local.security_enabled ? "SASL_SSL" : "PLAINTEXT"
}

output "sasl_mechanism" {
  description = "The sasl.mechanism clients use (null without tls_issuer). Passwords are in the Secret named by sasl_users_secret, never in Terraform."
  value       = local.security_enabled ? var.sasl_mechanism : null
}

output "ca_certificate_secret" {
  description = "Namespace/name of the Secret whose ca.crt is the CA clients trust (ssl.ca.location); null without tls_issuer. cert-manager fills it in after the apply."
  value       = local.security_enabled ? "${var.namespace}/${local.tls_secret}" : null
}

output "ca_certificate_command" {
  description = "Writes the CA certificate clients trust to ca.crt (null without tls_issuer)."
  value       = local.security_enabled ? "kubectl -n ${var.namespace} get secret ${local.tls_secret} -o jsonpath='{.data.ca\\.crt}' | base64 -d > ca.crt" : null
}

output "client_properties" {
  description = "librdkafka / confluent-kafka client properties without credentials: add sasl.username and sasl.password (SASL_SSL), and write ca.crt with ca_certificate_command."
  value       = { for name, value in local.client_properties : name => value if value != null }
}
