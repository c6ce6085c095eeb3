#!/usr/bin/env bash
# After `sam deploy`: pass the image sam pushed for RunnerFunction to the Fargate task definition, so long runs
# use exactly the same image (a task definition cannot reference a Lambda function's image by intrinsic function).
set -euo pipefail
env_name="${1:-default}"
stack=$(python3 - "$env_name" <<'PY'
import sys, tomllib
cfg = tomllib.load(open("samconfig.toml", "rb"))
print(cfg.get(sys.argv[1], {}).get("global", {}).get("parameters", {}).get("stack_name", "agent-machine"))
PY
)
fn=$(aws cloudformation describe-stack-resource --stack-name "$stack" --logical-resource-id RunnerFunction \
      --query StackResourceDetail.PhysicalResourceId --output text)
image=$(aws lambda get-function --function-name "$fn" --query Code.ImageUri --output text)
current=$(aws cloudformation describe-stacks --stack-name "$stack" \
      --query "Stacks[0].Parameters[?ParameterKey=='RunnerImageUri'].ParameterValue" --output text)
if [ "$current" = "$image" ]; then echo "Fargate already runs $image"; exit 0; fi
echo "Pointing Fargate at $image"
uv run --frozen sam deploy --config-env "$env_name" --no-confirm-changeset \
  --parameter-overrides "RunnerImageUri=$image"
