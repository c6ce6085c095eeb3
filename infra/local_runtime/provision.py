"""Create the template's stateful resources (tables, queues, buckets, secrets) in the emulator, and with `ecs`
its ECS cluster and task definitions (what the local ECS emulation runs: ecs.py).

The template is the only list of resources: a table added there exists locally on the next start.
Creation is idempotent, so a restart over a live endpoint (LocalStack, a kept moto) reuses what is there.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from local_runtime.template import TEMPLATE_PATH, Resolver, functions, load, task_definitions

# Template parameters that follow an environment variable locally (the README's configuration table).
PARAMETER_ENV = {
    "MachineId": "MACHINE_ID",
    "MaxConcurrentTasks": "MAX_CONCURRENT_TASKS",
    "TaskTimeoutSeconds": "TASK_TIMEOUT_SECONDS",
    "LogLevel": "LOG_LEVEL",
    "MaxTaskAttempts": "MAX_TASK_ATTEMPTS",
    "CorsOrigins": "CORS_ORIGINS",
    "DailyBudgetUsd": "DAILY_BUDGET_USD",
    "TaskBudgetUsd": "TASK_BUDGET_USD",
    "WebFetchDomains": "WEB_FETCH_DOMAINS",
    "StaleAfterSeconds": "STALE_AFTER_SECONDS",
}
# The image the local ECS emulation "runs": it starts the task definition's command from this checkout instead.
LOCAL_IMAGE = "local-runner-image"

SECRET_KEYS = (
    "API_TOKEN",
    "GITHUB_WEBHOOK_SECRET",
    "JIRA_WEBHOOK_SECRET",
    "SENTRY_WEBHOOK_SECRET",
    "GITHUB_TOKEN",
    "ANTHROPIC_API_KEY",
    "JIRA_API_TOKEN",
)


@dataclass
class Provisioned:
    template: dict[str, Any]
    resolver: Resolver
    tables: dict[str, str] = field(default_factory=dict)  # logical id -> table name
    queues: dict[str, str] = field(default_factory=dict)  # logical id -> queue url
    buckets: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)  # logical id -> ARN
    clusters: dict[str, str] = field(default_factory=dict)  # logical id -> ECS cluster name
    task_definitions: dict[str, str] = field(default_factory=dict)  # logical id -> task definition ARN


def parameters_from_env(env: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if env is None else env)
    params = {param: env[name] for param, name in PARAMETER_ENV.items() if env.get(name)}
    if env.get("CLAUDE_CODE_USE_BEDROCK", "").strip().lower() in ("1", "true", "yes", "on"):
        params["UseBedrock"] = "true"  # the template's switch behind CLAUDE_CODE_USE_BEDROCK (UseBedrockCondition)
    return params


def _client(service: str, endpoint: str | None, region: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name=region)  # type: ignore[call-overload]


def provision(
    *,
    endpoint: str | None,
    prefix: str,
    region: str = "us-east-1",
    parameters: dict[str, str] | None = None,
    queue_visibility_timeout: int | None = None,
    secret_values: dict[str, str] | None = None,
    template_path: Path = TEMPLATE_PATH,
    ecs: bool = False,
) -> Provisioned:
    """`ecs`: also the ECS cluster and task definitions, in an emulator that has ECS (moto). The template's
    FargateSubnets and RunnerImageUri then get local values (moto's default subnet, LOCAL_IMAGE) unless given,
    so its Fargate conditions hold and the functions see FARGATE_MODE=ecs as on AWS."""
    template = load(template_path)
    params = {"AWS::Region": region, "AWS::StackName": prefix, **(parameters or {})}
    out = Provisioned(template, Resolver(template, {}, {}, params))
    resources = template.get("Resources", {})
    ddb = _client("dynamodb", endpoint, region)
    sqs = _client("sqs", endpoint, region)
    s3 = _client("s3", endpoint, region)
    sm = _client("secretsmanager", endpoint, region)

    # Queues without a redrive policy first: the others point at them.
    queue_ids = sorted(
        (k for k, r in resources.items() if r.get("Type") == "AWS::SQS::Queue"),
        key=lambda k: "RedrivePolicy" in resources[k].get("Properties", {}),
    )
    for logical_id in queue_ids:
        _create_queue(
            sqs, out, logical_id, resources[logical_id].get("Properties", {}), prefix, queue_visibility_timeout
        )
    for logical_id, resource in resources.items():
        kind = resource.get("Type")
        props = resource.get("Properties", {})
        if kind == "AWS::DynamoDB::Table":
            _create_table(ddb, out, logical_id, props, prefix, region)
        elif kind == "AWS::S3::Bucket":
            name = f"{prefix}-{logical_id}".lower()
            try:
                s3.create_bucket(Bucket=name)
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
            out.buckets[logical_id] = name
            _register(out, logical_id, name, {"Arn": f"arn:aws:s3:::{name}", "DomainName": f"{name}.s3.local"})
        elif kind == "AWS::SecretsManager::Secret":
            name = f"{prefix}-{logical_id}"
            body = json.dumps({k: v for k, v in (secret_values or {}).items() if v})
            try:
                arn = sm.create_secret(Name=name, SecretString=body)["ARN"]
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ResourceExistsException":
                    raise
                arn = sm.put_secret_value(SecretId=name, SecretString=body)["ARN"]
            out.secrets[logical_id] = arn
            _register(out, logical_id, arn, {"Id": arn})
    if ecs:
        _provision_ecs(out, endpoint, prefix, region)
    return out


def _provision_ecs(out: Provisioned, endpoint: str | None, prefix: str, region: str) -> None:
    resources = out.template.get("Resources", {})
    params = out.resolver.parameters
    if not params.get("FargateSubnets"):
        subnets = _client("ec2", endpoint, region).describe_subnets(
            Filters=[{"Name": "default-for-az", "Values": ["true"]}]
        )["Subnets"]
        if not subnets:
            raise RuntimeError("the emulator has no default subnet to run ECS tasks in")
        params["FargateSubnets"] = sorted(s["SubnetId"] for s in subnets)[0]
    params.setdefault("RunnerImageUri", LOCAL_IMAGE)
    client = _client("ecs", endpoint, region)
    for logical_id, resource in resources.items():
        if resource.get("Type") != "AWS::ECS::Cluster":
            continue
        props = out.resolver.resolve(resource.get("Properties", {})) or {}
        name = str(props.get("ClusterName") or f"{prefix}-{logical_id}")
        kwargs: dict[str, Any] = {"clusterName": name}
        if props.get("CapacityProviders"):
            kwargs["capacityProviders"] = list(props["CapacityProviders"])
        strategy = props.get("DefaultCapacityProviderStrategy")
        if strategy:
            kwargs["defaultCapacityProviderStrategy"] = [
                {"capacityProvider": item["CapacityProvider"], "weight": int(item.get("Weight", 1)), "base": 0}
                for item in strategy
            ]
        arn = client.create_cluster(**kwargs)["cluster"]["clusterArn"]
        out.clusters[logical_id] = name
        _register(out, logical_id, name, {"Arn": arn})
    for spec in task_definitions(out.template):
        if spec.condition and not out.resolver.condition(spec.condition):
            continue
        props = out.resolver.resolve(spec.properties) or {}
        containers = [_container_definition(c, props) for c in props.get("ContainerDefinitions") or []]
        arn = client.register_task_definition(
            family=str(props.get("Family") or f"{prefix}-{spec.logical_id}"),
            containerDefinitions=containers,
            networkMode=str(props.get("NetworkMode") or "awsvpc"),
            requiresCompatibilities=list(props.get("RequiresCompatibilities") or ["FARGATE"]),
            cpu=str(props.get("Cpu") or "256"),
            memory=str(props.get("Memory") or "512"),
        )["taskDefinition"]["taskDefinitionArn"]
        out.task_definitions[spec.logical_id] = arn
        _register(out, spec.logical_id, arn, {"TaskDefinitionArn": arn})


def _container_definition(container: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    """A resolved ContainerDefinitions entry in ECS API form; variables unknown locally are left out (the
    runtime adds its own at start: ecs.py)."""
    environment = [
        {"name": str(e["Name"]), "value": str(e["Value"]).lower() if isinstance(e["Value"], bool) else str(e["Value"])}
        for e in container.get("Environment") or []
        if e.get("Name") and e.get("Value") is not None
    ]
    definition: dict[str, Any] = {
        "name": str(container.get("Name") or "main"),
        "image": str(container.get("Image") or LOCAL_IMAGE),
        "essential": bool(container.get("Essential", True)),
        "environment": environment,
        "memory": int(container.get("Memory") or task.get("Memory") or 512),  # moto places tasks by it
    }
    for key, api in (("Command", "command"), ("EntryPoint", "entryPoint")):
        if container.get(key):
            definition[api] = [str(part) for part in container[key]]
    if container.get("WorkingDirectory"):
        definition["workingDirectory"] = str(container["WorkingDirectory"])
    if container.get("StopTimeout") is not None:
        definition["stopTimeout"] = int(container["StopTimeout"])
    return definition


def _register(out: Provisioned, logical_id: str, ref: str, attrs: dict[str, str]) -> None:
    out.resolver.refs[logical_id] = ref
    for attr, value in attrs.items():
        out.resolver.attrs[f"{logical_id}.{attr}"] = value


def _create_queue(
    sqs: Any, out: Provisioned, logical_id: str, props: dict[str, Any], prefix: str, visibility_override: int | None
) -> None:
    name = f"{prefix}-{logical_id}"
    attributes: dict[str, str] = {}
    for key in ("VisibilityTimeout", "MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds", "DelaySeconds"):
        if key in props:
            value = out.resolver.resolve(props[key])
            if value is not None:
                attributes[key] = str(value)
    redrive = props.get("RedrivePolicy")
    if redrive:
        resolved = out.resolver.resolve(redrive)
        attributes["RedrivePolicy"] = json.dumps(
            {
                "deadLetterTargetArn": resolved["deadLetterTargetArn"],
                "maxReceiveCount": int(resolved["maxReceiveCount"]),
            }
        )
        if visibility_override is not None:
            attributes["VisibilityTimeout"] = str(visibility_override)
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    if attributes:  # an existing queue keeps old attributes unless set again
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    out.queues[logical_id] = url
    _register(out, logical_id, url, {"Arn": arn, "QueueName": name, "QueueUrl": url})


def _create_table(ddb: Any, out: Provisioned, logical_id: str, props: dict[str, Any], prefix: str, region: str) -> None:
    name = f"{prefix}-{logical_id}"
    kwargs: dict[str, Any] = {
        "TableName": name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": "PAY_PER_REQUEST",
    }
    gsis = [
        {"IndexName": g["IndexName"], "KeySchema": g["KeySchema"], "Projection": g["Projection"]}
        for g in props.get("GlobalSecondaryIndexes", [])
    ]
    if gsis:
        kwargs["GlobalSecondaryIndexes"] = gsis
    try:
        ddb.create_table(**kwargs)
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled") in (True, "true"):
            ddb.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]}
            )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
    out.tables[logical_id] = name
    _register(out, logical_id, name, {"Arn": f"arn:aws:dynamodb:{region}:123456789012:table/{name}"})


def function_environment(out: Provisioned, env_template: dict[str, Any]) -> dict[str, str]:
    """A function's environment with references resolved; entries unknown locally are left out."""
    env: dict[str, str] = {}
    for key, raw in env_template.items():
        value = out.resolver.resolve(raw)
        if value is not None and not isinstance(value, dict | list):
            env[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def stack_environment(out: Provisioned) -> dict[str, str]:
    """Every function's template environment merged: what in-process tests, benches and the runtime's own tools
    (requeue on restore, db-shell's runtime.json) configure themselves with. The runtime's functions each get
    only their own (function_env.py)."""
    env: dict[str, str] = {}
    for spec in functions(out.template):
        env.update(function_environment(out, spec.environment))
    return env
