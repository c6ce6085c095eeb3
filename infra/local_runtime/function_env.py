"""The environment of each function's worker processes and of each local ECS task, built as AWS builds it.

A worker never inherits the runtime's environment. It gets, in this order (later wins):

1. the basics of a process on this computer (BASE_NAMES: PATH, locale, HOME, TMPDIR, proxies and CA bundles,
   coverage hooks), from the environment run-local started with;
2. what Lambda sets itself (AWS_LAMBDA_FUNCTION_NAME, _HANDLER, AWS_REGION, ...) and PYTHONPATH for the
   function's code (its CodeUri and layers; the runner image's folders);
3. the emulator's endpoint (AWS_ENDPOINT_URL) and the run's credentials (runtime.local_credentials: the emulator
   and the management API answer only them), or with --aws the user's AWS credentials;
4. the template's variables (Globals, then the function's own), resolved as CloudFormation would
   (template.Resolver: !Ref, !GetAtt, !Sub, !Join, !If with the template's conditions);
5. local values for variables the template declares but that name AWS resources the runtime replaces
   (WEBSOCKET_URL, DASHBOARD_URL) and, with WEBSOCKET_URL, WEBSOCKET_MANAGEMENT_URL (the gateway's management API);
   the user's own value for USER_SETTINGS the template declares (LOG_JSON=false, say);
6. the user's settings the template does not carry (on AWS: defaults, Secrets Manager or an edited template):
   APP_SETTINGS to every function, RUNNER_PASSTHROUGH (names and prefixes) to the functions of the runner image
   (RunnerFunction, DlqFunction: PackageType Image) and the ECS tasks only, what the image and its task role
   give them on AWS. A pass-through never replaces a variable the template declares.

Secrets (API_TOKEN, webhook secrets, GITHUB_TOKEN, ANTHROPIC_API_KEY, JIRA_API_TOKEN) are not passed: the
functions read them from the SECRETS_NAME secret, which the runtime fills from the same settings (provision.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runner import cli

from local_runtime.template import FunctionSpec, Resolver

# Template variables whose user value wins over the template's (most follow template parameters anyway).
USER_SETTINGS = (
    "MAX_CONCURRENT_TASKS",
    "TASK_TIMEOUT_SECONDS",
    "LOG_LEVEL",
    "MACHINE_ID",
    "MAX_TASK_ATTEMPTS",
    "DAILY_BUDGET_USD",
    "TASK_BUDGET_USD",
    "CORS_ORIGINS",
    "LOG_JSON",
    "WEB_FETCH_DOMAINS",
)
BASE_NAMES = (
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "AWS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "COVERAGE_PROCESS_START",
    "COVERAGE_PROCESS_CONFIG",
)
# Settings every function reads (the README's configuration table) that template.yaml does not set.
APP_SETTINGS = (
    "TRIGGER_PHRASE",
    "TRIGGER_LABEL",
    "ALLOWED_AUTHOR_ASSOCIATIONS",
    "ALLOWED_BOTS",
    "JIRA_ALLOW_UNSIGNED",
    "JIRA_ALLOWED_ACCOUNT_IDS",
    "SENTRY_ALLOW_LEGACY_UNSIGNED",
    "OUTPUT_RETENTION_DAYS",
    "GITHUB_API_URL",
    "JIRA_BASE_URL",
    "JIRA_EMAIL",
    "AWS_CONNECT_TIMEOUT_SECONDS",
    "AWS_READ_TIMEOUT_SECONDS",
    "AWS_MAX_ATTEMPTS",
    "AWS_TIMEOUT_PROFILE",
    "AWS_EMULATOR_READ_TIMEOUT_SECONDS",
)
# What the runner needs from this computer: the CLI and where it works (the image has them on AWS), reporting
# back, and the CLI's own settings it hands on (runner/cli.py PASS_NAMES; ANTHROPIC_* and CLAUDE_CODE_* also
# carry an Anthropic token or a Bedrock switch).
RUNNER_PASSTHROUGH = (
    "CLAUDE_CLI_PATH",
    "RUNNER_WORK_ROOT",
    "RUNNER_AGENTS_DIR",
    "CLI_RUN_AS_USER",
    "SENTRY_API_URL",
    "SENTRY_AUTH_TOKEN",
    "GH_TOKEN",
    *sorted(cli.PASS_NAMES),
)
RUNNER_PASSTHROUGH_PREFIXES = ("ANTHROPIC_", "CLAUDE_CODE_", "REPORT_")
# With --aws the functions use the user's own AWS configuration.
AWS_CONFIG_NAMES = (
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


@dataclass(frozen=True)
class LocalEnvironment:
    """What the runtime adds to every environment it starts."""

    user_env: Mapping[str, str]  # the runtime's environment as run-local started (.env loaded), never changed
    region: str
    endpoint: str | None  # AWS_ENDPOINT_URL; None with --aws
    credentials: Mapping[str, str]  # the run's own (local) or the user's (--aws)
    urls: Mapping[str, str] = field(default_factory=dict)  # WEBSOCKET_URL, DASHBOARD_URL, WEBSOCKET_MANAGEMENT_URL

    def base(self) -> dict[str, str]:
        env = {name: self.user_env[name] for name in BASE_NAMES if self.user_env.get(name)}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env.setdefault("LANG", "C.UTF-8")
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = self.region
        env.update(self.credentials)
        if self.endpoint:
            env["AWS_ENDPOINT_URL"] = self.endpoint
        return env

    def apply(
        self, env: dict[str, str], declared: Mapping[str, str], names: Iterable[str], *, runner: bool
    ) -> dict[str, str]:
        """`env` (base + platform variables) with the template's variables and the local layers on top.
        `declared`: the variables' resolved values; `names`: every name the template declares, also those whose
        value names something that does not exist locally (the WebSocket API's endpoint, say)."""
        template_names = set(names) | set(declared)
        env.update(declared)
        for name in ("WEBSOCKET_URL", "DASHBOARD_URL"):
            if name in template_names and name in self.urls:
                env[name] = self.urls[name]
        if "WEBSOCKET_URL" in template_names and "WEBSOCKET_MANAGEMENT_URL" in self.urls:
            env["WEBSOCKET_MANAGEMENT_URL"] = self.urls["WEBSOCKET_MANAGEMENT_URL"]
        for name in USER_SETTINGS:
            if name in template_names and self.user_env.get(name):
                env[name] = self.user_env[name]
        for name, value in self.passthrough(runner=runner).items():
            if name not in template_names:
                env[name] = value
        return env

    def passthrough(self, *, runner: bool) -> dict[str, str]:
        names = set(APP_SETTINGS)
        if runner:
            names.update(RUNNER_PASSTHROUGH)
            names.update(n for n in self.user_env if n.startswith(RUNNER_PASSTHROUGH_PREFIXES))
        return {name: self.user_env[name] for name in sorted(names) if self.user_env.get(name)}


def resolve_variables(resolver: Resolver, variables: Mapping[str, Any]) -> dict[str, str]:
    """Template variables with intrinsic functions applied; those that resolve to nothing (AWS::NoValue, a
    resource that does not exist locally) are left out, as a string everything else."""
    env: dict[str, str] = {}
    for key, raw in variables.items():
        value = resolver.resolve(raw)
        if value is not None and not isinstance(value, dict | list):
            env[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def lambda_environment(spec: FunctionSpec, resolver: Resolver, local: LocalEnvironment) -> dict[str, str]:
    """The whole environment of `spec`'s worker processes."""
    env = local.base()
    env.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": spec.logical_id,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(spec.timeout),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.logical_id}",
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
            "_HANDLER": spec.handler,
            "PYTHONPATH": _pythonpath(str(d) for d in spec.code_dirs),
        }
    )
    if spec.code_dirs:
        env["LAMBDA_TASK_ROOT"] = str(spec.code_dirs[0])
    declared = resolve_variables(resolver, spec.environment)
    return local.apply(env, declared, spec.environment, runner=spec.package_type == "Image")


def task_environment(
    container_env: Mapping[str, str],
    overrides: Mapping[str, str],
    local: LocalEnvironment,
    *,
    template_names: Iterable[str],
    code_dirs: Iterable[str],
    extra: Mapping[str, str],
) -> dict[str, str]:
    """A local ECS task's environment: the registered container definition's variables, the run_task container
    overrides (TASK_ID), what ECS adds (`extra`: the metadata endpoint) and the local layers; PYTHONPATH points at
    this checkout's code instead of the image's /var/task. `template_names`: the variables the template's container
    declares (the registered definition lacks those that do not resolve locally)."""
    env = local.base()
    declared = {**container_env, **overrides}
    local.apply(env, declared, template_names, runner=True)
    env.update(extra)
    env["PYTHONPATH"] = _pythonpath(code_dirs)
    return env


def _pythonpath(dirs: Iterable[str]) -> str:
    return ":".join(dict.fromkeys(dirs))
