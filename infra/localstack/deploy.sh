#!/usr/bin/env bash
# Deploy the agent machine stack to LocalStack.
#
#   infra/localstack/deploy.sh                 # build + deploy with the [localstack.*] tables of samconfig.toml
#   SKIP_BUILD=1 infra/localstack/deploy.sh    # deploy what is already in .aws-sam/
#   AWS_ENDPOINT_URL=http://host:4566 infra/localstack/deploy.sh
#
# Needs: Docker (sam build of the runner image; LocalStack runs Lambda functions in containers), a running LocalStack
# (`localstack start -d` with LOCALSTACK_AUTH_TOKEN set), and the SAM CLI (`uv run sam`, or `samlocal` from
# `pip install aws-sam-cli-local`, which points the SAM CLI at LocalStack on its own).
#
# LocalStack editions: this stack uses API Gateway v2 (the HTTP API and the WebSocket API with its @connections
# management API), ECS (Fargate runs), ECR (the runner image) and CloudFront, which are paid-tier ("Base"/"Ultimate")
# features. The community edition serves SQS, DynamoDB, S3, Secrets Manager and zip Lambdas, but cannot create this
# stack. Without a LocalStack subscription use the local runtime over moto (`make run-local`), which emulates the
# HTTP API, the WebSocket API and the SQS event sources from this same template.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://localhost:4566}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"        # LocalStack accepts any credentials
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"  # the region of samconfig.toml's [localstack] tables
export AWS_REGION="$AWS_DEFAULT_REGION"
export SAM_CLI_TELEMETRY=0
CONFIG_ENV="${CONFIG_ENV:-localstack}"
STACK_NAME="${STACK_NAME:-agent-machine}"

# The SAM CLI: samlocal if installed, else sam (from the uv environment when there is one).
if command -v samlocal >/dev/null 2>&1; then
  SAM=(samlocal)
  # samlocal reads the endpoint from EDGE_PORT / LOCALSTACK_HOSTNAME (older) or AWS_ENDPOINT_URL (newer).
elif command -v uv >/dev/null 2>&1 && uv run --quiet sam --version >/dev/null 2>&1; then
  SAM=(uv run --quiet sam)
elif command -v sam >/dev/null 2>&1; then
  SAM=(sam)
else
  echo "error: neither samlocal nor sam found (uv sync, or pip install aws-sam-cli-local)" >&2
  exit 1
fi
# Plain sam reaches LocalStack through AWS_ENDPOINT_URL, which boto3 (>= 1.28) applies to every client it creates.

echo "LocalStack endpoint: $AWS_ENDPOINT_URL"
if ! health="$(curl -fsS "$AWS_ENDPOINT_URL/_localstack/health" 2>/dev/null)"; then
  echo "error: LocalStack does not answer on $AWS_ENDPOINT_URL (start it: localstack start -d)" >&2
  exit 1
fi
for service in apigateway ecs ecr cloudfront; do
  if ! grep -Eq "\"$service\": *\"(available|running)\"" <<<"$health"; then
    echo "warning: LocalStack reports '$service' unavailable: this stack needs LocalStack's paid tier" >&2
  fi
done

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  echo "error: sam build needs a running Docker engine for the runner image" >&2
  exit 1
fi

if [[ "${SKIP_BUILD:-0}" != "1" ]]; then
  "${SAM[@]}" build --config-env "$CONFIG_ENV"
fi

# resolve_s3 / resolve_image_repos (samconfig.toml) create the artifact bucket and ECR repositories in LocalStack.
"${SAM[@]}" deploy --config-env "$CONFIG_ENV" --stack-name "$STACK_NAME" --no-confirm-changeset "$@"

echo
echo "Stack outputs:"
"${SAM[@]}" list stack-outputs --stack-name "$STACK_NAME" --output table || true

cat <<EOF

Next steps:
  - the API token: aws secretsmanager get-secret-value --secret-id <AppSecretsArn> --query SecretString
    (with AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL); put ANTHROPIC_API_KEY and the webhook secrets into the same JSON.
  - LocalStack serves API Gateway URLs as http://<api-id>.execute-api.localhost.localstack.cloud:4566/...
    rather than the https://...amazonaws.com addresses in the outputs.
EOF
