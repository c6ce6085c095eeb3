#!/usr/bin/env bash
# After `sam deploy` (run by `make deploy`):
#  1. Fargate: pass the image sam pushed for RunnerFunction as RunnerImageUri (a task definition cannot reference a
#     Lambda function's image by intrinsic function), keeping samconfig's other parameter overrides. Skipped until
#     FARGATE_SUBNETS is set (comma-separated subnet ids with a route to the internet).
#  2. Dashboard: upload dashboard_spa/ to the dashboard bucket with a config.json naming the API, and invalidate
#     CloudFront.
set -euo pipefail
env_name="${1:-default}"
read -r stack overrides < <(python3 - "$env_name" <<'PY'
import sys, tomllib
cfg = tomllib.load(open("samconfig.toml", "rb"))
env = cfg.get(sys.argv[1], {})
stack = env.get("global", {}).get("parameters", {}).get("stack_name", "agent-machine")
print(stack, env.get("deploy", {}).get("parameters", {}).get("parameter_overrides", ""))
PY
)
output() { aws cloudformation describe-stacks --stack-name "$stack" \
             --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue" --output text; }

if [ -n "${FARGATE_SUBNETS:-}" ]; then
  fn=$(output RunnerFunctionName)
  image=$(aws lambda get-function --function-name "$fn" --query Code.ImageUri --output text)
  echo "Fargate runs $image in $FARGATE_SUBNETS"
  uv run --frozen sam deploy --config-env "$env_name" --no-confirm-changeset --parameter-overrides \
    "$overrides RunnerImageUri=$image FargateSubnets=$FARGATE_SUBNETS FargateSecurityGroups=${FARGATE_SECURITY_GROUPS:-}"
else
  echo "FARGATE_SUBNETS not set: long tasks stay on Lambda (900 s). Set it and run make deploy again to enable Fargate."
fi

bucket=$(output DashboardBucketName)
api=$(output HttpApiUrl)
ws=$(output WebSocketUrl)
aws s3 sync dashboard_spa/ "s3://$bucket/" --delete --exclude "node_modules/*" --exclude "tests/*" \
  --exclude "scripts/*" --exclude "package*.json" --exclude "README.md" --exclude "config.json"
printf '{"api_base_url": "%s", "websocket_url": "%s"}\n' "${api%/}" "$ws" | \
  aws s3 cp - "s3://$bucket/config.json" --content-type application/json --cache-control no-cache
aws cloudfront create-invalidation --distribution-id "$(output DashboardDistributionId)" --paths "/*" >/dev/null
echo "Dashboard: $(output DashboardUrl)"
