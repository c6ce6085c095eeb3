"""The SAM template: lints clean (cfn-lint, sam validate --lint) and holds the resources other code relies on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
BIN = Path(sys.executable).parent


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short forms (!Ref, !GetAtt, !Sub, ...) into their long forms."""


def _construct_intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_intrinsic)


@cache
def template() -> dict[str, Any]:
    loaded = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass
    assert isinstance(loaded, dict)
    return loaded


def resources() -> dict[str, Any]:
    return template()["Resources"]  # type: ignore[no-any-return]


def props(logical_id: str) -> dict[str, Any]:
    assert logical_id in resources(), f"{logical_id} missing from template.yaml"
    return resources()[logical_id].get("Properties", {})  # type: ignore[no-any-return]


def _tool_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",  # dummy: both tools work offline
        SAM_CLI_TELEMETRY="0",
    )
    env.pop("AWS_PROFILE", None)
    env.pop("AWS_SESSION_TOKEN", None)
    return env


def _executable(name: str) -> str | None:
    candidate = BIN / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


# ---------------------------------------------------------------------------------------------------------------------
# Linters
# ---------------------------------------------------------------------------------------------------------------------


def test_cfn_lint_reports_nothing() -> None:
    """Zero errors, warnings and informational findings (I3011 included: every stateful resource says Retain/Delete)."""
    exe = _executable("cfn-lint")
    cmd = [exe] if exe else [sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.exit(main())"]
    proc = subprocess.run(
        [*cmd, "--include-checks", "I", "--", str(TEMPLATE)],
        cwd=ROOT,
        env=_tool_env(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, f"cfn-lint found problems:\n{proc.stdout}\n{proc.stderr}"


def test_sam_validate_lint() -> None:
    """sam validate runs the SAM translator (which cfn-lint only partly does) plus its own lint pass."""
    exe = _executable("sam")
    assert exe is not None, "the sam CLI (aws-sam-cli, a dev dependency) is missing: run `uv sync`"
    proc = subprocess.run(
        [exe, "validate", "--lint", "--template-file", str(TEMPLATE)],
        cwd=ROOT,
        env=_tool_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"sam validate --lint failed:\n{proc.stdout}\n{proc.stderr}"
    assert "is a valid SAM Template" in proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------------------------------------------------

ZIP_FUNCTIONS = {
    # logical id: (CodeUri, Handler)
    "ApiFunction": ("functions/api/", "machine_api.handler.handler"),
    "AuthorizerFunction": ("functions/api/", "machine_api.authorizer.handler"),
    "WebSocketFunction": ("functions/ws/", "machine_ws.handler.handler"),
    "SweeperFunction": ("functions/sweeper/", "machine_sweeper.handler.handler"),
}
IMAGE_FUNCTIONS = {
    "RunnerFunction": "runner.lambda_handler.handler",
    "DlqFunction": "runner.dlq_handler.handler",
}


@pytest.mark.parametrize(("logical_id", "code_and_handler"), ZIP_FUNCTIONS.items())
def test_zip_function_handler_exists_on_disk(logical_id: str, code_and_handler: tuple[str, str]) -> None:
    code_uri, handler = code_and_handler
    p = props(logical_id)
    assert resources()[logical_id]["Type"] == "AWS::Serverless::Function"
    assert p["CodeUri"] == code_uri
    assert p["Handler"] == handler
    assert p["Runtime"] == "python3.11"
    assert p["Layers"] == [{"Ref": "CoreLayer"}]
    module, _, _function = handler.rpartition(".")
    module_file = ROOT / code_uri / (module.replace(".", "/") + ".py")
    assert module_file.is_file(), f"{logical_id} handler module {module_file.relative_to(ROOT)} does not exist"
    assert (ROOT / code_uri / "requirements.txt").is_file()


@pytest.mark.parametrize(("logical_id", "handler"), IMAGE_FUNCTIONS.items())
def test_image_function_uses_runner_image(logical_id: str, handler: str) -> None:
    resource = resources()[logical_id]
    p = resource["Properties"]
    assert p["PackageType"] == "Image"
    assert "Runtime" not in p and "Handler" not in p
    assert p["ImageConfig"]["Command"] == [handler]
    assert resource["Metadata"] == {
        "Dockerfile": "runner_container/Dockerfile",
        "DockerContext": ".",
        "DockerTag": "python3.11-v1",
    }
    module_file = ROOT / "runner_container" / (handler.rpartition(".")[0].replace(".", "/") + ".py")
    assert module_file.is_file(), f"{logical_id} handler module {module_file.relative_to(ROOT)} does not exist"


def test_fargate_entry_module_exists() -> None:
    module_file = ROOT / "runner_container/runner/fargate_main.py"  # the Fargate task's `python -m runner.fargate_main`
    assert module_file.is_file(), f"{module_file.relative_to(ROOT)} does not exist"


def test_runner_consumes_task_queue_one_at_a_time() -> None:
    p = props("RunnerFunction")
    assert p["Timeout"] == 900
    assert p["MemorySize"] == 4096
    assert p["EphemeralStorage"] == {"Size": 10240}
    (event,) = p["Events"].values()
    assert event["Type"] == "SQS"
    ep = event["Properties"]
    assert ep["Queue"] == {"Fn::GetAtt": ["TaskQueue", "Arn"]}
    assert ep["BatchSize"] == 1
    assert ep["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert ep["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "MaxConcurrentTasks"}}
    assert template()["Parameters"]["MaxConcurrentTasks"]["MinValue"] >= 2  # AWS's minimum for MaximumConcurrency


def test_dlq_function_consumes_dead_letters() -> None:
    (event,) = props("DlqFunction")["Events"].values()
    assert event["Type"] == "SQS"
    assert event["Properties"]["Queue"] == {"Fn::GetAtt": ["TaskDeadLetterQueue", "Arn"]}
    assert event["Properties"]["BatchSize"] == 10
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_http_routes_and_authorization() -> None:
    routes = {}
    for event in props("ApiFunction")["Events"].values():
        assert event["Type"] == "HttpApi"
        ep = event["Properties"]
        assert ep["ApiId"] == {"Ref": "HttpApi"}
        routes[(ep["Method"], ep["Path"])] = ep.get("Auth", {}).get("Authorizer")
    assert routes == {
        ("ANY", "/api/{proxy+}"): None,  # the API's DefaultAuthorizer
        ("ANY", "/webhooks/{proxy+}"): "NONE",
        ("GET", "/api/health"): "NONE",
        ("GET", "/api/config"): "NONE",
        ("GET", "/api/docs"): "NONE",
        ("GET", "/api/docs/{proxy+}"): "NONE",  # Swagger UI's own files (machine_api/docs.py)
        ("GET", "/api/openapi.json"): "NONE",
    }
    auth = props("HttpApi")["Auth"]
    authorizer = auth["Authorizers"][auth["DefaultAuthorizer"]]
    assert authorizer["FunctionArn"] == {"Fn::GetAtt": ["AuthorizerFunction", "Arn"]}
    assert authorizer["AuthorizerPayloadFormatVersion"] == "2.0"
    assert authorizer["EnableSimpleResponses"] is True
    assert authorizer["Identity"]["Headers"] == ["Authorization"]
    assert authorizer["Identity"]["ReauthorizeEvery"] <= 300


def test_websocket_api_routes() -> None:
    api = props("WebSocketApi")
    assert api["ProtocolType"] == "WEBSOCKET"
    assert api["RouteSelectionExpression"] == "$request.body.action"
    routes = {
        r["Properties"]["RouteKey"]: (name, r["Properties"])
        for name, r in resources().items()
        if r["Type"] == "AWS::ApiGatewayV2::Route"
    }
    assert set(routes) == {"$connect", "$disconnect", "$default"}
    assert routes["$connect"][1]["AuthorizationType"] == "NONE"
    integration = props("WebSocketIntegration")
    assert integration["IntegrationType"] == "AWS_PROXY"
    assert "WebSocketFunction.Arn" in integration["IntegrationUri"]["Fn::Sub"]
    depends_on = set(resources()["WebSocketDeployment"]["DependsOn"])
    assert depends_on == {name for name, _ in routes.values()}
    assert props("WebSocketStage")["StageName"] == {"Ref": "StageName"}
    assert props("WebSocketInvokePermission")["Principal"] == "apigateway.amazonaws.com"


def _policy_text(logical_id: str) -> str:
    return str(props(logical_id).get("Policies", []))


def test_manage_connections_granted_to_pushers() -> None:
    for logical_id in ("WebSocketFunction", "RunnerFunction", "ApiFunction", "DlqFunction"):
        assert "execute-api:ManageConnections" in _policy_text(logical_id), logical_id
    assert "execute-api:ManageConnections" in str(props("RunnerTaskRole")["Policies"])


def test_sweeper_runs_every_minute_with_least_privilege() -> None:
    from local_runtime.template import functions, load

    (spec,) = [f for f in functions(load()) if f.logical_id == "SweeperFunction"]
    assert [(s.expression, s.rate_seconds, s.enabled) for s in spec.schedules] == [("rate(1 minute)", 60.0, True)]
    assert props("SweeperFunction")["Environment"]["Variables"]["STALE_AFTER_SECONDS"] == {"Ref": "StaleAfterSeconds"}
    text = _policy_text("SweeperFunction")
    for granted in ("SQSSendMessagePolicy", "ecs:StopTask", "execute-api:ManageConnections", "CostsTable"):
        assert granted in text
    for withheld in ("ecs:RunTask", "iam:PassRole", "SecretsManager", "S3"):
        assert withheld not in text


def test_authorizer_only_reads_the_secret() -> None:
    assert props("AuthorizerFunction")["Policies"] == [
        {"AWSSecretsManagerGetSecretValuePolicy": {"SecretArn": {"Ref": "AppSecrets"}}}
    ]


def test_runner_may_start_fargate_tasks() -> None:
    text = _policy_text("RunnerFunction")
    for action in ("ecs:RunTask", "iam:PassRole", "RunnerTaskExecutionRole", "RunnerTaskRole"):
        assert action in text
    assert "ecs:StopTask" in _policy_text("ApiFunction")


# ---------------------------------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------------------------------

SHARED_ENV = {
    "MACHINE_ID",
    "LOG_LEVEL",
    "LOG_JSON",
    "POWERTOOLS_METRICS_NAMESPACE",
    "TASKS_TABLE",
    "SESSIONS_TABLE",
    "OUTPUT_TABLE",
    "COSTS_TABLE",
    "CONNECTIONS_TABLE",
    "REGISTRY_TABLE",
    "EVENTS_TABLE",
    "TASK_QUEUE_URL",
    "TASK_DLQ_URL",
    "ARTIFACTS_BUCKET",
    "SECRETS_NAME",
    "WEBSOCKET_URL",
    "DASHBOARD_URL",
    "MAX_CONCURRENT_TASKS",
    "TASK_TIMEOUT_SECONDS",
    "MAX_TASK_ATTEMPTS",
    "CORS_ORIGINS",
    "DAILY_BUDGET_USD",
    "TASK_BUDGET_USD",
    "ECS_CLUSTER",
    "ECS_TASK_DEFINITION",
    "ECS_SUBNETS",
    "ECS_SECURITY_GROUPS",
    "ECS_CONTAINER_NAME",
}


@pytest.mark.parametrize("logical_id", [*ZIP_FUNCTIONS, *IMAGE_FUNCTIONS])
def test_function_environment(logical_id: str) -> None:
    global_env = template()["Globals"]["Function"]["Environment"]["Variables"]
    env = {**global_env, **props(logical_id).get("Environment", {}).get("Variables", {})}
    assert set(env) >= SHARED_ENV | {"POWERTOOLS_SERVICE_NAME"}
    assert env["TASKS_TABLE"] == {"Ref": "TasksTable"}
    assert env["TASK_QUEUE_URL"] == {"Ref": "TaskQueue"}
    assert env["SECRETS_NAME"] == {"Ref": "AppSecrets"}
    assert env["LOG_JSON"] == "true"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "AgentMachine"
    assert env["ECS_CONTAINER_NAME"] == "runner"
    # The WebSocket API's own endpoint and stage (right on AWS and LocalStack alike), never a hand-built
    # amazonaws.com address; the management API is derived from it in code (agent_machine.push.management_url).
    assert env["WEBSOCKET_URL"] == {"Fn::Sub": "${WebSocketApi.ApiEndpoint}/${StageName}"}
    assert "WEBSOCKET_MANAGEMENT_URL" not in env


def test_fargate_container_matches_lambda_runner() -> None:
    p = props("RunnerTaskDefinition")
    assert p["RequiresCompatibilities"] == ["FARGATE"]
    assert p["NetworkMode"] == "awsvpc"
    assert (p["Cpu"], p["Memory"]) == ("2048", "8192")
    (container,) = p["ContainerDefinitions"]
    assert container["Name"] == "runner"
    assert container["Image"] == {"Ref": "RunnerImageUri"}
    assert container["Command"] == ["python", "-m", "runner.fargate_main"]
    assert container["EntryPoint"], "the Lambda base image's /lambda-entrypoint.sh must be replaced"
    names = {item["Name"] for item in container["Environment"]}
    assert names >= SHARED_ENV - {"ECS_TASK_DEFINITION", "ECS_SUBNETS", "ECS_SECURITY_GROUPS"}


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------

TABLES: dict[str, dict[str, Any]] = {
    "TasksTable": {
        "keys": [("task_id", "S", "HASH")],
        "gsis": {
            "by_status": [("status", "S"), ("created_at", "S")],
            "by_session": [("session_id", "S"), ("created_at", "S")],
            "by_time": [("list_pk", "S"), ("created_at", "S")],
            "by_parent": [("parent_task_id", "S"), ("created_at", "S")],
        },
    },
    "SessionsTable": {
        "keys": [("session_id", "S", "HASH")],
        "gsis": {"by_time": [("list_pk", "S"), ("updated_at", "S")]},
    },
    "OutputTable": {"keys": [("task_id", "S", "HASH"), ("seq", "N", "RANGE")], "gsis": {}, "ttl": True},
    "CostsTable": {"keys": [("pk", "S", "HASH"), ("sk", "S", "RANGE")], "gsis": {}},
    "ConnectionsTable": {
        "keys": [("connection_id", "S", "HASH"), ("sk", "S", "RANGE")],
        "gsis": {"by_topic": [("topic", "S"), ("connection_id", "S")]},
        "ttl": True,
    },
    "RegistryTable": {"keys": [("kind", "S", "HASH"), ("name", "S", "RANGE")], "gsis": {}},
    "EventsTable": {
        "keys": [("delivery_key", "S", "HASH")],
        "gsis": {"by_time": [("list_pk", "S"), ("received_at", "S")]},
        "ttl": True,
    },
}


@pytest.mark.parametrize(("logical_id", "spec"), TABLES.items())
def test_table_key_design(logical_id: str, spec: dict[str, Any]) -> None:
    assert resources()[logical_id]["Type"] == "AWS::DynamoDB::Table"
    p = props(logical_id)
    assert p["BillingMode"] == "PAY_PER_REQUEST"
    assert p["SSESpecification"] == {"SSEEnabled": True}
    types = {a["AttributeName"]: a["AttributeType"] for a in p["AttributeDefinitions"]}
    assert [(k["AttributeName"], types[k["AttributeName"]], k["KeyType"]) for k in p["KeySchema"]] == spec["keys"]
    gsis = {
        g["IndexName"]: [(k["AttributeName"], types[k["AttributeName"]]) for k in g["KeySchema"]]
        for g in p.get("GlobalSecondaryIndexes", [])
    }
    assert gsis == spec["gsis"]
    for g in p.get("GlobalSecondaryIndexes", []):
        assert g["Projection"] == {"ProjectionType": "ALL"}
        assert [k["KeyType"] for k in g["KeySchema"]] == ["HASH", "RANGE"]
    # Every attribute definition is used by a key (CloudFormation rejects unused ones).
    used = {k["AttributeName"] for k in p["KeySchema"]} | {
        k["AttributeName"] for g in p.get("GlobalSecondaryIndexes", []) for k in g["KeySchema"]
    }
    assert used == set(types)
    if spec.get("ttl"):
        assert p["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    else:
        assert "TimeToLiveSpecification" not in p


def test_important_tables_have_point_in_time_recovery() -> None:
    for logical_id in ("TasksTable", "SessionsTable", "CostsTable", "RegistryTable"):
        assert props(logical_id)["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


def test_task_queue_redrives_to_dead_letter_queue() -> None:
    q = props("TaskQueue")
    assert q["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["TaskDeadLetterQueue", "Arn"]},
        "maxReceiveCount": {"Ref": "MaxTaskAttempts"},
    }
    assert q["VisibilityTimeout"] >= props("RunnerFunction")["Timeout"] + 60
    assert q["SqsManagedSseEnabled"] is True
    assert props("TaskDeadLetterQueue")["SqsManagedSseEnabled"] is True


def test_buckets_block_public_access() -> None:
    for logical_id in ("ArtifactsBucket", "DashboardBucket"):
        block = props(logical_id)["PublicAccessBlockConfiguration"]
        assert all(block.values()) and len(block) == 4
        assert "BucketEncryption" in props(logical_id)
    assert props("ArtifactsBucket")["LifecycleConfiguration"]["Rules"]
    distribution = props("DashboardDistribution")["DistributionConfig"]
    assert distribution["DefaultRootObject"] == "index.html"
    assert distribution["Origins"][0]["OriginAccessControlId"] == {"Fn::GetAtt": ["DashboardOriginAccessControl", "Id"]}


def test_dashboard_is_never_framed_nor_sniffed() -> None:
    behavior = props("DashboardDistribution")["DistributionConfig"]["DefaultCacheBehavior"]
    assert behavior["ResponseHeadersPolicyId"] == {"Ref": "DashboardSecurityHeaders"}
    security = props("DashboardSecurityHeaders")["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
    assert security["FrameOptions"] == {"FrameOption": "DENY", "Override": True}
    assert security["ContentTypeOptions"] == {"Override": True}
    csp = security["ContentSecurityPolicy"]
    assert "frame-ancestors 'none'" in csp["ContentSecurityPolicy"] and csp["Override"] is True


def test_web_fetch_domains_reach_every_runner() -> None:
    param = template()["Parameters"]["WebFetchDomains"]
    assert param["Default"] == ""  # no web access for the read-only agents unless the operator lists hosts
    assert re.fullmatch(param["AllowedPattern"], "docs.python.org,*.github.io")
    assert not re.fullmatch(param["AllowedPattern"], "WebFetch(domain:x)")
    env = template()["Globals"]["Function"]["Environment"]["Variables"]
    assert env["WEB_FETCH_DOMAINS"] == {"Ref": "WebFetchDomains"}
    (container,) = props("RunnerTaskDefinition")["ContainerDefinitions"]
    assert {"Name": "WEB_FETCH_DOMAINS", "Value": {"Ref": "WebFetchDomains"}} in container["Environment"]


def test_secret_generates_api_token_next_to_the_other_keys() -> None:
    generate = props("AppSecrets")["GenerateSecretString"]
    assert generate["GenerateStringKey"] == "API_TOKEN"
    keys = set(re.findall(r'"([A-Z_]+)"\s*:', generate["SecretStringTemplate"]))
    assert keys == {
        "GITHUB_WEBHOOK_SECRET",
        "JIRA_WEBHOOK_SECRET",
        "SENTRY_WEBHOOK_SECRET",
        "GITHUB_TOKEN",
        "ANTHROPIC_API_KEY",
        "JIRA_API_TOKEN",
    }


# ---------------------------------------------------------------------------------------------------------------------
# Parameters, outputs, deployment files
# ---------------------------------------------------------------------------------------------------------------------


def test_parameters() -> None:
    params = template()["Parameters"]
    assert set(params) >= {
        "MachineId",
        "MaxConcurrentTasks",
        "TaskTimeoutSeconds",
        "LogLevel",
        "MaxTaskAttempts",
        "StageName",
        "CorsOrigins",
        "RunnerImageUri",
        "FargateSubnets",
        "FargateSecurityGroups",
        "UseBedrock",
        "DailyBudgetUsd",
        "TaskBudgetUsd",
    }
    assert params["StageName"]["Default"] == "prod"
    assert params["MaxConcurrentTasks"]["Default"] == 2
    assert params["TaskTimeoutSeconds"]["Default"] == 3600
    assert params["MaxTaskAttempts"]["Default"] == 3
    assert params["LogLevel"]["Default"] == "INFO"
    assert params["FargateSubnets"]["Type"] == "CommaDelimitedList"


def test_outputs() -> None:
    assert set(template()["Outputs"]) >= {
        "HttpApiUrl",
        "WebSocketUrl",
        "WebSocketManagementUrl",
        "DashboardUrl",
        "DashboardBucketName",
        "TaskQueueUrl",
        "RunnerClusterName",
    }


def test_core_layer() -> None:
    p = props("CoreLayer")
    assert p["ContentUri"] == "layers/core/"
    assert (ROOT / "layers/core/python/agent_machine/__init__.py").is_file()


def test_samconfig_environments() -> None:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    assert config["version"] == 0.1
    assert config["default"]["global"]["parameters"]["stack_name"]
    for env in ("default", "localstack"):
        deploy = config[env]["deploy"]["parameters"]
        assert set(deploy["capabilities"].split()) == {"CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"}
        assert deploy["resolve_s3"] is True
        assert deploy["resolve_image_repos"] is True
    assert config["localstack"]["deploy"]["parameters"]["region"] == "us-east-1"


def test_dockerfile_copies_what_the_image_needs() -> None:
    dockerfile = (ROOT / "runner_container/Dockerfile").read_text()
    assert re.search(r"^FROM public\.ecr\.aws/lambda/python:3\.11$", dockerfile, re.M)
    assert "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" in dockerfile
    assert re.search(r"^ARG CLAUDE_CODE_VERSION=\d+\.\d+\.\d+$", dockerfile, re.M)
    assert 'CMD ["runner.lambda_handler.handler"]' in dockerfile
    for source in re.findall(r"^COPY (?!--from)(\S+) ", dockerfile, re.M):
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"


def _statements(node: Any) -> list[dict[str, Any]]:
    """Every IAM statement under `node` (inside !If branches too)."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if "Effect" in node and "Action" in node:
            found.append(node)
        for value in node.values():
            found += _statements(value)
    elif isinstance(node, list):
        for value in node:
            found += _statements(value)
    return found


def test_bedrock_is_invoked_by_the_runners_own_roles_never_a_role_handed_to_the_cli() -> None:
    """The runner's model proxy signs Bedrock requests (runner/model_proxy.py): only the runner's roles may invoke
    models, and nothing may assume a role for the CLI (the old BEDROCK_ROLE_ARN path is gone)."""
    invokers = {
        name
        for name, resource in resources().items()
        for statement in _statements(resource.get("Properties", {}))
        if "bedrock:InvokeModelWithResponseStream" in statement["Action"]
    }
    assert invokers == {"RunnerFunction", "RunnerTaskRole"}
    assumes = [
        statement
        for name in ("RunnerFunction", "RunnerTaskRole")
        for statement in _statements(props(name).get("Policies", []))
        if "sts:AssumeRole" in statement["Action"]
    ]
    assert assumes == []
    assert "BEDROCK_ROLE_ARN" not in TEMPLATE.read_text()
