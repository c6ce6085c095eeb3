"""Reading template.yaml: CloudFormation tags, parameters, conditions, the functions the template deploys and its
ECS task definitions."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    pass


def _tag(name: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if name == "Fn::GetAtt" and isinstance(value, str):
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {name: value}

    return construct


for _short in ("Ref", "Condition"):
    _CfnLoader.add_constructor(f"!{_short}", _tag(_short))
for _fn in (
    "GetAtt",
    "Sub",
    "Join",
    "If",
    "Equals",
    "Not",
    "And",
    "Or",
    "Select",
    "Split",
    "FindInMap",
    "ImportValue",
    "GetAZs",
    "Base64",
    "Cidr",
    "Length",
    "ToJsonString",
):
    _CfnLoader.add_constructor(f"!{_fn}", _tag(f"Fn::{_fn}"))


def load(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """The template as data; intrinsic functions in their long form ({"Ref": ...}, {"Fn::If": ...}), so a template
    written as JSON (what tests derive from this one) reads the same."""
    data = yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a template")
    return data


@dataclass
class SqsSource:
    queue_logical_id: str
    batch_size: int
    maximum_concurrency: Any  # an int, a {'Ref': ...} or None
    report_batch_item_failures: bool


@dataclass
class HttpRoute:
    method: str  # "ANY" or an HTTP verb
    path: str  # "/api/{proxy+}"
    authorized: bool  # False when the event says Auth: Authorizer: NONE

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class ScheduleSource:
    """An EventBridge schedule (SAM Schedule / ScheduleV2 event) that invokes the function at a fixed rate."""

    name: str  # the event's key in the template
    expression: str  # "rate(1 minute)", "cron(...)"
    enabled: bool = True

    @property
    def rate_seconds(self) -> float | None:
        """The period of a rate() expression; None for cron() (the local runtime runs rates only)."""
        return rate_seconds(self.expression)


RATE_UNITS = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}


def rate_seconds(expression: str) -> float | None:
    found = re.fullmatch(r"\s*rate\(\s*(\d+)\s+([a-z]+)\s*\)\s*", expression)
    if not found or found.group(2) not in RATE_UNITS:
        return None
    return float(int(found.group(1)) * RATE_UNITS[found.group(2)])


@dataclass
class FunctionSpec:
    logical_id: str
    handler: str  # "package.module.attr"
    timeout: int
    environment: dict[str, Any]  # Globals' variables, then the function's own (unresolved)
    sqs_sources: list[SqsSource] = field(default_factory=list)
    http_routes: list[HttpRoute] = field(default_factory=list)
    schedules: list[ScheduleSource] = field(default_factory=list)
    memory_mb: int = 128
    reserved_concurrency: Any = None  # ReservedConcurrentExecutions: an int, a {'Ref': ...} or None
    code_dirs: list[Path] = field(default_factory=list)  # what /var/task and /opt/python hold on AWS
    package_type: str = "Zip"
    condition: str | None = None  # the resource's Condition: deployed only when it holds


@dataclass
class TaskDefinitionSpec:
    """An AWS::ECS::TaskDefinition's first container, as the local ECS emulation registers and runs it."""

    logical_id: str
    properties: dict[str, Any]  # unresolved
    condition: str | None = None


class Resolver:
    """Resolves !Ref / !GetAtt / !Sub against parameters and locally created resources."""

    def __init__(
        self, template: dict[str, Any], refs: dict[str, str], attrs: dict[str, str], parameters: dict[str, str]
    ) -> None:
        self.template = template
        self.refs = refs  # logical id -> physical id (table name, queue url, bucket name, ...)
        self.attrs = attrs  # "Logical.Attr" -> value
        self.parameters = parameters

    def parameter(self, name: str) -> str | None:
        if name in self.parameters:
            return self.parameters[name]
        default = self.template.get("Parameters", {}).get(name, {}).get("Default")
        return None if default is None else str(default)

    def resolve(self, value: Any) -> Any:
        """The value with intrinsic functions applied; None when something is not known locally."""
        if isinstance(value, dict) and len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self._ref(str(arg))
            if key == "Fn::GetAtt":
                parts = arg if isinstance(arg, list) else str(arg).split(".", 1)
                return self.attrs.get(f"{parts[0]}.{parts[1]}")
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::Join":
                parts = self.resolve(arg[1])  # a list, or an intrinsic giving one (a CommaDelimitedList's Ref)
                if isinstance(parts, str):
                    parts = [p for p in parts.split(",") if p]
                if not isinstance(parts, list) or any(p is None for p in parts):
                    return None
                return str(arg[0]).join(str(p) for p in parts)
            if key == "Fn::Split":
                joined = self.resolve(arg[1])
                return None if joined is None else str(joined).split(str(arg[0]))
            if key == "Fn::If":
                holds = self.condition(str(arg[0]))
                if holds is None:
                    return None
                return self.resolve(arg[1] if holds else arg[2])
            if key.startswith("Fn::"):
                return None
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        return value

    def condition(self, name: str) -> bool | None:
        """A template condition evaluated against the parameters (None when something it needs is unknown)."""
        expression = self.template.get("Conditions", {}).get(name)
        return None if expression is None else self._truth(expression)

    def _truth(self, expression: Any) -> bool | None:
        if not (isinstance(expression, dict) and len(expression) == 1):
            return None
        ((key, arg),) = expression.items()
        if key == "Condition":
            return self.condition(str(arg))
        if key == "Fn::Equals":
            left, right = (self.resolve(v) for v in arg)
            if left is None or right is None:
                return None
            return _text(left) == _text(right)
        if key == "Fn::Not":
            inner = self._truth(arg[0])
            return None if inner is None else not inner
        if key in ("Fn::And", "Fn::Or"):
            values = [self._truth(v) for v in arg]
            decisive: bool = key == "Fn::Or"  # a True decides an Or, a False an And
            if decisive in values:
                return decisive
            return None if None in values else not decisive
        return None

    def _ref(self, name: str) -> str | None:
        pseudo = {
            "AWS::Region": self.parameters.get("AWS::Region", "us-east-1"),
            "AWS::AccountId": "123456789012",
            "AWS::StackName": self.parameters.get("AWS::StackName", "local"),
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": None,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.refs:
            return self.refs[name]
        return self.parameter(name)

    def _sub(self, arg: Any) -> str | None:
        text, local_vars = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        unknown = False

        def repl(match: re.Match[str]) -> str:
            nonlocal unknown
            name = match.group(1)
            if name in local_vars:
                value = self.resolve(local_vars[name])
            elif "." in name:
                value = self.attrs.get(name)
            else:
                value = self._ref(name)
            if value is None:
                unknown = True
                return ""
            return str(value)

        out = re.sub(r"\$\{([^}!]+)\}", repl, str(text))
        return None if unknown else out


def _text(value: Any) -> str:
    # YAML reads an unquoted true as a bool; CloudFormation compares it as the string "true".
    return str(value).lower() if isinstance(value, bool) else str(value)


def _code_dirs(template: dict[str, Any], props: dict[str, Any], image: bool) -> list[Path]:
    """The folders a function's code comes from: its CodeUri and its layers' python/ folders (zip), or what the
    runner image copies to /var/task (image: the runner and the shared package)."""
    if image:
        return [ROOT / "runner_container", ROOT / "layers" / "core" / "python"]
    dirs = [ROOT / str(props.get("CodeUri", ".")).rstrip("/")]
    for layer in props.get("Layers", []):
        target = layer.get("Ref") if isinstance(layer, dict) else None
        content = template.get("Resources", {}).get(target or "", {}).get("Properties", {}).get("ContentUri")
        if content:
            dirs.append(ROOT / str(content).rstrip("/") / "python")
    return dirs


def functions(template: dict[str, Any]) -> list[FunctionSpec]:
    globals_fn = template.get("Globals", {}).get("Function", {})
    global_env = dict(globals_fn.get("Environment", {}).get("Variables", {}))
    specs: list[FunctionSpec] = []
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties", {})
        image = props.get("PackageType") == "Image"
        handler = props.get("ImageConfig", {}).get("Command", [""])[0] if image else props.get("Handler", "")
        env = {**global_env, **props.get("Environment", {}).get("Variables", {})}
        spec = FunctionSpec(
            logical_id,
            handler,
            int(props.get("Timeout", globals_fn.get("Timeout", 3))),
            env,
            memory_mb=int(props.get("MemorySize", globals_fn.get("MemorySize", 128))),
            reserved_concurrency=props.get("ReservedConcurrentExecutions"),
            code_dirs=_code_dirs(template, props, image),
            package_type="Image" if image else "Zip",
            condition=resource.get("Condition"),
        )
        for name, event in props.get("Events", {}).items():
            eprops = event.get("Properties", {})
            if event.get("Type") == "SQS":
                queue = eprops.get("Queue")
                queue_id = queue["Fn::GetAtt"][0] if isinstance(queue, dict) and "Fn::GetAtt" in queue else ""
                scaling = eprops.get("ScalingConfig", {}).get("MaximumConcurrency")
                spec.sqs_sources.append(
                    SqsSource(
                        queue_id,
                        int(eprops.get("BatchSize", 10)),
                        scaling,  # an int, or a !Ref the runtime resolves
                        "ReportBatchItemFailures" in eprops.get("FunctionResponseTypes", []),
                    )
                )
            elif event.get("Type") == "HttpApi":
                auth = eprops.get("Auth", {}).get("Authorizer")
                spec.http_routes.append(
                    HttpRoute(
                        str(eprops.get("Method", "ANY")).upper(),
                        str(eprops.get("Path", "/{proxy+}")),
                        authorized=auth != "NONE",
                    )
                )
            elif event.get("Type") in ("Schedule", "ScheduleV2"):
                expression = eprops.get("Schedule") or eprops.get("ScheduleExpression") or ""
                enabled = eprops.get("Enabled", True) is not False and eprops.get("State", "ENABLED") != "DISABLED"
                spec.schedules.append(ScheduleSource(name, str(expression), enabled))
        specs.append(spec)
    return specs


def task_definitions(template: dict[str, Any]) -> list[TaskDefinitionSpec]:
    return [
        TaskDefinitionSpec(logical_id, dict(resource.get("Properties", {})), resource.get("Condition"))
        for logical_id, resource in template.get("Resources", {}).items()
        if resource.get("Type") == "AWS::ECS::TaskDefinition"
    ]


def authorizer_function(template: dict[str, Any]) -> str | None:
    """The logical id of the HTTP API's Lambda authorizer function, if the template has one."""
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") != "AWS::Serverless::HttpApi":
            continue
        authorizers = resource.get("Properties", {}).get("Auth", {}).get("Authorizers", {})
        for auth in authorizers.values():
            arn = auth.get("FunctionArn", {})
            target = arn.get("Fn::GetAtt", [None])[0] if isinstance(arn, dict) else None
            if target and target in template["Resources"]:
                return str(target)
    return None


def authorizer_handler(template: dict[str, Any]) -> str | None:
    """The handler of the HTTP API's Lambda authorizer, if the template has one."""
    target = authorizer_function(template)
    if target is None:
        return None
    return str(template["Resources"][target].get("Properties", {}).get("Handler"))


@dataclass
class CorsConfig:
    """An HTTP API's CorsConfiguration: API Gateway answers preflights (OPTIONS with Access-Control-Request-Method)
    itself from it, before routes and authorizers."""

    allow_origins: list[str]
    allow_headers: list[str]
    allow_methods: list[str]
    expose_headers: list[str]
    max_age: int | None
    allow_credentials: bool = False


def http_api_cors(template: dict[str, Any], resolver: Resolver) -> CorsConfig | None:
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") != "AWS::Serverless::HttpApi":
            continue
        cors = (resource.get("Properties") or {}).get("CorsConfiguration")
        if not isinstance(cors, dict):
            continue
        resolved: dict[str, Any] = resolver.resolve(cors) or {}

        def strings(key: str, resolved: dict[str, Any] = resolved) -> list[str]:
            value = resolved.get(key)
            return [str(v).strip() for v in value if v] if isinstance(value, list) else []

        max_age = resolved.get("MaxAge")
        return CorsConfig(
            allow_origins=strings("AllowOrigins"),
            allow_headers=[h.lower() for h in strings("AllowHeaders")],
            allow_methods=[m.upper() for m in strings("AllowMethods")],
            expose_headers=strings("ExposeHeaders"),
            max_age=int(max_age) if isinstance(max_age, int | str) and str(max_age).isdigit() else None,
            allow_credentials=bool(resolved.get("AllowCredentials")),
        )
    return None
