"""Who may call the local runtime's own AWS-shaped endpoints: only holders of the credentials it gave its functions.

The runtime makes random credentials per run (runtime.local_credentials) and hands them to its functions only
(their environment, never the CLI's: runner/cli.py drops AWS_*). Its endpoints then refuse every other caller:

- the WebSocket management API (`/@connections/...` of the gateway): the runner's boto3 client signs each
  request with AWS Signature V4; `verify` recomputes the signature with botocore over the request as received
  (method, raw path, query, the headers it names, the body) and compares it. A caller without the secret key
  gets 403, whatever access key id it shows;
- the moto server: `access_key_id` reads the key id a request names (Authorization header, or a presigned URL's
  X-Amz-Credential), and the server answers only its own key (moto_main). Only the id is compared there: moto
  takes S3's chunked and unsigned payloads that a full check would have to replay, and the id is as private as
  the secret (both live only in root-owned process environments and the runtime's 0700 data folder).
"""

from __future__ import annotations

import hmac
import re
import time
from calendar import timegm
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

MAX_SKEW_SECONDS = 15 * 60  # AWS refuses a signature whose X-Amz-Date is further off than this
AMZ_DATE = "%Y%m%dT%H%M%SZ"

_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/\s,]+)/(?P<date>\d{8})/(?P<region>[^/\s,]+)/(?P<service>[^/\s,]+)"
    r"/aws4_request,\s*SignedHeaders=(?P<headers>[a-z0-9\-;]+),\s*Signature=(?P<signature>[0-9a-f]{64})\s*$"
)
_CREDENTIAL = re.compile(r"(?:^|[\s,])Credential=([^/\s,]+)/")
_QUERY_CREDENTIAL = re.compile(r"(?:^|&)X-Amz-Credential=([^&%/]+)(?:%2F|/)", re.IGNORECASE)


@dataclass(frozen=True)
class Signature:
    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse(authorization: str) -> Signature | None:
    found = _AUTHORIZATION.match(authorization.strip())
    if found is None:
        return None
    return Signature(
        found["key"],
        found["date"],
        found["region"],
        found["service"],
        tuple(found["headers"].split(";")),
        found["signature"],
    )


def access_key_id(authorization: str | None, query: str | None) -> str | None:
    """The access key id a request is signed with (header, or a presigned URL's query), without checking more."""
    if authorization:
        found = _CREDENTIAL.search(authorization)
        if found:
            return found.group(1)
    if query:
        found = _QUERY_CREDENTIAL.search(query)
        if found:
            return unquote(found.group(1))
    return None


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def verify(
    *,
    method: str,
    raw_path: str,
    query: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    secret_for: Callable[[str], str | None],
    now: float | None = None,
) -> str | None:
    """None when the request carries a valid SigV4 signature made with a key `secret_for` knows; else why not.

    `raw_path` is the path as it came on the wire (still percent-encoded): the signer signed that form."""
    received: dict[str, list[str]] = {}
    for name, value in headers:
        received.setdefault(name.lower(), []).append(value)
    authorization = (received.get("authorization") or [""])[0]
    signed = parse(authorization)
    if signed is None:
        return "no AWS Signature V4"
    secret = secret_for(signed.access_key_id)
    if secret is None:
        return "unknown access key"
    amz_date = (received.get("x-amz-date") or [""])[0]
    try:
        signed_at = timegm(time.strptime(amz_date, AMZ_DATE))
    except ValueError:
        return "no valid X-Amz-Date"
    if (
        not amz_date.startswith(signed.date)
        or abs((time.time() if now is None else now) - signed_at) > MAX_SKEW_SECONDS
    ):
        return "the signature's date is out of range"
    if "host" not in signed.signed_headers or any(h not in received for h in signed.signed_headers):
        return "a signed header is missing"
    host = received["host"][0]
    request = AWSRequest(
        method=method,
        url=f"http://{host}{raw_path}" + (f"?{query}" if query else ""),
        headers={name: ",".join(received[name]) for name in signed.signed_headers},
        data=body,
    )
    request.context["timestamp"] = amz_date
    auth = SigV4Auth(Credentials(signed.access_key_id, secret), signed.service, signed.region)
    canonical = auth.canonical_request(request)
    expected = auth.signature(auth.string_to_sign(request, canonical), request)
    return None if same(expected, signed.signature) else "signature mismatch"
