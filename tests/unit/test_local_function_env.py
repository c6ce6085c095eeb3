"""What the local runtime gives each function's workers: template conditions evaluated as CloudFormation does,
each function its own variables, the local layers, and only the documented pass-throughs of the user's settings."""

from __future__ import annotations

from local_runtime.function_env import LocalEnvironment, lambda_environment, task_environment
from local_runtime.template import FunctionSpec, Resolver, functions, load


def resolver(**parameters: str) -> Resolver:
    template = load()
    refs = {name: f"local-{name}" for name in template["Resources"]}
    return Resolver(template, refs, {}, {"AWS::StackName": "local", **parameters})


def spec(name: str) -> FunctionSpec:
    (found,) = [s for s in functions(load()) if s.logical_id == name]
    return found


USER = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/me",
    "LOG_JSON": "false",  # a template variable the user's value replaces
    "CLAUDE_CLI_PATH": "/opt/claude",  # runner only
    "ANTHROPIC_BASE_URL": "http://127.0.0.1:9/",  # runner only (prefix)
    "TRIGGER_PHRASE": "@bot",  # every function
    "SOMETHING_ELSE": "never passed",
    "GITHUB_TOKEN": "ghp_secret-from-the-env",  # secrets come from Secrets Manager, not the environment
}


def local() -> LocalEnvironment:
    return LocalEnvironment(
        user_env=USER,
        region="us-east-1",
        endpoint="http://127.0.0.1:5000",
        credentials={"AWS_ACCESS_KEY_ID": "LOCALKEY", "AWS_SECRET_ACCESS_KEY": "s3cret"},
        urls={
            "WEBSOCKET_URL": "ws://localhost:8000/ws",
            "DASHBOARD_URL": "http://localhost:8000",
            "WEBSOCKET_MANAGEMENT_URL": "http://127.0.0.1:8000",
        },
    )


def test_conditions_follow_the_parameters() -> None:
    off = resolver()
    assert off.condition("FargateEnabled") is False  # no image, no subnets: as a first deploy
    assert off.resolve({"Fn::If": ["FargateEnabled", "ecs", "off"]}) == "off"
    on = resolver(RunnerImageUri="local-image", FargateSubnets="subnet-1,subnet-2")
    assert on.condition("HasFargateSubnets") is True and on.condition("FargateEnabled") is True
    assert (
        on.resolve({"Fn::If": ["FargateEnabled", {"Ref": "RunnerTaskDefinition"}, ""]}) == "local-RunnerTaskDefinition"
    )
    assert on.resolve({"Fn::Join": [",", {"Ref": "FargateSubnets"}]}) == "subnet-1,subnet-2"
    assert resolver(UseBedrock="true").condition("UseBedrockCondition") is True
    assert off.condition("UseBedrockCondition") is False
    assert off.resolve({"Fn::If": ["UseBedrockCondition", "x", {"Ref": "AWS::NoValue"}]}) is None
    assert off.condition("NoSuchCondition") is None


def test_each_function_gets_its_own_variables_and_the_local_layers() -> None:
    res = resolver(RunnerImageUri="local-image", FargateSubnets="subnet-1")
    api = lambda_environment(spec("ApiFunction"), res, local())
    runner = lambda_environment(spec("RunnerFunction"), res, local())
    assert (api["POWERTOOLS_SERVICE_NAME"], runner["POWERTOOLS_SERVICE_NAME"]) == ("api", "runner")
    assert api["AWS_LAMBDA_FUNCTION_NAME"] == "ApiFunction" and api["_HANDLER"] == "machine_api.handler.handler"
    assert api["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "1024" and runner["AWS_LAMBDA_FUNCTION_TIMEOUT"] == "900"
    assert "CLAUDE_CODE_USE_BEDROCK" not in api and runner["CLAUDE_CODE_USE_BEDROCK"] == "0"  # the runner's own
    assert api["FARGATE_MODE"] == runner["FARGATE_MODE"] == "ecs"
    assert api["TASKS_TABLE"] == "local-TasksTable"
    # The WebSocket API's endpoint does not exist locally: the gateway's stands in, with its management API.
    assert (
        api["WEBSOCKET_URL"] == "ws://localhost:8000/ws" and api["WEBSOCKET_MANAGEMENT_URL"] == "http://127.0.0.1:8000"
    )
    assert api["DASHBOARD_URL"] == "http://localhost:8000"
    for env in (api, runner):
        assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000" and env["AWS_ACCESS_KEY_ID"] == "LOCALKEY"
        assert env["LOG_JSON"] == "false" and env["TRIGGER_PHRASE"] == "@bot"
        assert env["HOME"] == "/home/me" and env["PATH"] == "/usr/bin:/bin"
        assert "SOMETHING_ELSE" not in env and "GITHUB_TOKEN" not in env
    assert runner["CLAUDE_CLI_PATH"] == "/opt/claude" and runner["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9/"
    assert "CLAUDE_CLI_PATH" not in api and "ANTHROPIC_BASE_URL" not in api
    dlq = lambda_environment(spec("DlqFunction"), res, local())  # the runner image's other function (reports back)
    assert dlq["CLAUDE_CLI_PATH"] == "/opt/claude" and dlq["POWERTOOLS_SERVICE_NAME"] == "dlq"
    assert api["PYTHONPATH"].split(":")[0].endswith("functions/api")
    assert runner["PYTHONPATH"].split(":")[0].endswith("runner_container")


def test_a_task_gets_its_definition_overrides_and_local_layers_and_no_pass_through_replaces_a_declared_one() -> None:
    env = task_environment(
        {"FARGATE_MODE": "off", "HOME": "/tmp", "PYTHONPATH": "/var/task", "LOG_JSON": "true"},
        {"TASK_ID": "t-1"},
        local(),
        template_names=["FARGATE_MODE", "HOME", "PYTHONPATH", "LOG_JSON", "WEBSOCKET_URL"],
        code_dirs=["/code/runner_container", "/code/layers/core/python"],
        extra={"ECS_CONTAINER_METADATA_URI_V4": "http://127.0.0.1:1/v4/t"},
    )
    assert env["TASK_ID"] == "t-1" and env["FARGATE_MODE"] == "off" and env["HOME"] == "/tmp"
    assert env["PYTHONPATH"] == "/code/runner_container:/code/layers/core/python"
    assert env["WEBSOCKET_URL"] == "ws://localhost:8000/ws"  # declared, unresolvable locally: the local one
    assert env["LOG_JSON"] == "false" and env["CLAUDE_CLI_PATH"] == "/opt/claude"
    assert env["ECS_CONTAINER_METADATA_URI_V4"] == "http://127.0.0.1:1/v4/t"
    assert "SOMETHING_ELSE" not in env
