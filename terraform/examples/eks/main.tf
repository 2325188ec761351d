# An EKS cluster with a Strata release on it, from an empty AWS account: a VPC, the
# cluster with one managed node group and the EBS CSI driver, an ECR repository for the
# broker image, the bucket and IRSA role of ../../aws, and the chart of deploy/helm/strata.
# docs/deploy.md walks through it.

provider "aws" {
  region = var.region
}

data "aws_availability_zones" "available" {
  state = "available"
}

locals {
  azs = slice(data.aws_availability_zones.available.names, 0, 3)
  # The chart names its service account after the release ("strata" here).
  release = "strata"

  # Security (tls_issuer set): the chart's `security` values, a second values document of
  # helm_release. Without tls_issuer it says security.enabled=false and names nothing.
  # The Secret the Certificate fills in is the chart's default, <fullname>-tls; the
  # chart's full name is the release name here.
  security_enabled = var.tls_issuer != null
  tls_secret       = "${local.release}-tls"
  security_values = {
    security = {
      enabled  = local.security_enabled
      protocol = "SASL_SSL"
      tls = {
        certManager = {
          enabled   = local.security_enabled
          issuerRef = { name = try(var.tls_issuer.name, ""), kind = try(var.tls_issuer.kind, "ClusterIssuer") }
        }
      }
      sasl = {
        mechanisms = [var.sasl_mechanism]
        users      = { existingSecret = local.security_enabled ? var.sasl_users_secret : "", key = "users" }
      }
      authorization = {
        authorizer = "acl"
        superUsers = local.security_enabled ? var.super_users : []
      }
      admin = { existingSecret = local.security_enabled ? var.admin_token_secret : "", key = "token" }
    }
  }

  # broker_volume_size in GiB (a size in Gi or Ti; null for any other form, which the
  # IOPS-per-GiB precondition then does not check).
  broker_volume_gib = try(tonumber(regex("^([0-9]+)Gi$", var.broker_volume_size)[0]),
  1024 * tonumber(regex("^([0-9]+)Ti$", var.broker_volume_size)[0]), null)

  # What a librdkafka client needs besides its credentials (the client_properties output
  # drops the null ones).
  client_properties = {
    "bootstrap.servers" = "${local.release}.${var.namespace}.svc.cluster.local:9092"
    "security.protocol" = local.security_enabled ? "SASL_SSL" : "PLAINTEXT"
    "sasl.mechanism"    = local.security_enabled ? var.sasl_mechanism : null
    "ssl.ca.location"   = local.security_enabled ? "ca.crt" : null
  }
}

module "vpc" {
  source  = "terraform-aws-modules/vpc/aws"
  version = "~> 5.21"

  name = var.name
  cidr = "10.0.0.0/16"

  azs             = local.azs
  private_subnets = ["10.0.0.0/19", "10.0.32.0/19", "10.0.64.0/19"]
  public_subnets  = ["10.0.96.0/22", "10.0.100.0/22", "10.0.104.0/22"]

  enable_nat_gateway = true
  single_nat_gateway = true

  public_subnet_tags  = { "kubernetes.io/role/elb" = 1 }
  private_subnet_tags = { "kubernetes.io/role/internal-elb" = 1 }
}

# Segments go to S3 through this gateway endpoint rather than the NAT gateway (no NAT
# data processing charges on uploads and remote reads).
resource "aws_vpc_endpoint" "s3" {
  vpc_id            = module.vpc.vpc_id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = module.vpc.private_route_table_ids
}

module "eks" {
  source  = "terraform-aws-modules/eks/aws"
  version = "~> 20.31"

  cluster_name    = var.name
  cluster_version = var.kubernetes_version

  cluster_endpoint_public_access           = true
  enable_cluster_creator_admin_permissions = true

  vpc_id     = module.vpc.vpc_id
  subnet_ids = module.vpc.private_subnets

  cluster_addons = {
    coredns    = {}
    kube-proxy = {}
    # The VPC CNI enforces NetworkPolicies (the chart's networkPolicy.enabled, on by
    # default: admin API, replication and etcd closed to other pods) only with its network
    # policy agent, which enableNetworkPolicy turns on; without it every policy is ignored.
    vpc-cni = {
      configuration_values = jsonencode({ enableNetworkPolicy = "true" })
    }
    aws-ebs-csi-driver = { most_recent = true }
  }

  eks_managed_node_groups = {
    brokers = {
      ami_type       = var.node_ami_type
      instance_types = [var.instance_type]
      min_size       = var.nodes
      max_size       = var.nodes + 1
      desired_size   = var.nodes
      # The EBS CSI driver's controller uses the node role.
      iam_role_additional_policies = {
        ebs = "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
      }
    }
  }
}

resource "aws_ecr_repository" "strata" {
  name                 = var.name
  image_tag_mutability = "IMMUTABLE"
  force_delete         = true
}

module "bucket" {
  source = "../../aws"

  bucket_name       = var.bucket_name
  prefix            = var.name
  name              = "${var.name}-broker"
  force_destroy     = var.force_destroy_bucket
  create_irsa_role  = true
  oidc_provider_arn = module.eks.oidc_provider_arn
  namespace         = var.namespace
  service_account   = local.release
}

provider "kubernetes" {
  host                   = module.eks.cluster_endpoint
  cluster_ca_certificate = base64decode(module.eks.cluster_certificate_authority_data)
  exec {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "aws"
    args        = ["eks", "get-token", "--cluster-name", module.eks.cluster_name, "--region", var.region]
  }
}

provider "helm" {
  kubernetes {
    host                   = module.eks.cluster_endpoint
    cluster_ca_certificate = base64decode(module.eks.cluster_certificate_authority_data)
    exec {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--cluster-name", module.eks.cluster_name, "--region", var.region]
    }
  }
}

# gp3 volumes for brokers, created where the pod is scheduled, with the IOPS and
# throughput of docs/deploy.md's sizing guide. "Delete": a volume goes with its claim, so
# deleting the claims before the cluster (docs/deploy.md, "Tearing down") leaves no volume.
resource "kubernetes_storage_class_v1" "gp3" {
  metadata {
    name = "gp3"
  }
  storage_provisioner    = "ebs.csi.aws.com"
  volume_binding_mode    = "WaitForFirstConsumer"
  allow_volume_expansion = true
  reclaim_policy         = "Delete"
  parameters = {
    type       = "gp3"
    encrypted  = "true"
    iops       = tostring(var.gp3_iops)
    throughput = tostring(var.gp3_throughput)
  }

  lifecycle {
    precondition {
      # EBS refuses a gp3 volume with more than 0.25 MiB/s per provisioned IOPS.
      condition     = var.gp3_throughput * 4 <= var.gp3_iops
      error_message = "The gp3_throughput (MiB/s) may be at most gp3_iops / 4."
    }
    precondition {
      # EBS refuses a gp3 volume with more than 500 IOPS per GiB; the claim would stay Pending.
      # 160 GiB: 80000 IOPS, gp3's maximum, which the variable's validation checks.
      condition     = var.gp3_iops <= 500 * coalesce(local.broker_volume_gib, 160)
      error_message = "The gp3_iops may be at most 500 per GiB of broker_volume_size."
    }
  }

  depends_on = [module.eks]
}

# etcd's volumes (the chart's etcd.storage.size, 8Gi) at gp3's baseline, whatever the
# brokers get: 500 IOPS per GiB allows an 8 GiB volume 4000 IOPS at most, so the brokers'
# gp3_iops and gp3_throughput would leave etcd's claims Pending once raised past that.
resource "kubernetes_storage_class_v1" "gp3_etcd" {
  metadata {
    name = "gp3-etcd"
  }
  storage_provisioner    = "ebs.csi.aws.com"
  volume_binding_mode    = "WaitForFirstConsumer"
  allow_volume_expansion = true
  reclaim_policy         = "Delete"
  parameters = {
    type       = "gp3"
    encrypted  = "true"
    iops       = "3000"
    throughput = "125"
  }

  depends_on = [module.eks]
}

resource "helm_release" "strata" {
  count = var.install_chart ? 1 : 0

  name             = local.release
  namespace        = var.namespace
  create_namespace = true
  chart            = "${path.module}/../../../deploy/helm/strata"
  # Brokers become ready one at a time (OrderedReady); give the first install time.
  timeout = 1200

  # Later documents override earlier ones: extra_chart_values comes last (empty, it is
  # an empty document, which sets nothing).
  values = [yamlencode({
    image = {
      repository = aws_ecr_repository.strata.repository_url
      tag        = var.image_tag
    }
    replicas = var.brokers
    storage = {
      className = kubernetes_storage_class_v1.gp3.metadata[0].name
      size      = var.broker_volume_size
    }
    etcd = {
      storage = {
        className = var.etcd_storage_class == "gp3" ? kubernetes_storage_class_v1.gp3.metadata[0].name : kubernetes_storage_class_v1.gp3_etcd.metadata[0].name
      }
    }
    objectStore = {
      url = module.bucket.object_store_url
      s3  = { region = var.region }
    }
    serviceAccount = {
      annotations = { "eks.amazonaws.com/role-arn" = module.bucket.role_arn }
    }
  }), yamlencode(local.security_values), var.extra_chart_values]
}
