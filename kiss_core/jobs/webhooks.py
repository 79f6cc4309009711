"""Outgoing webhooks: `video.completed` / `video.failed`, signed per Standard Webhooks (standardwebhooks.com).

Signing: `webhook-id` (the message id, the same on every retry so receivers can drop duplicates),
`webhook-timestamp` (unix seconds of this attempt) and `webhook-signature` = `v1,` +
base64(HMAC-SHA256(secret, f"{id}.{timestamp}.{body}")), where the secret is given as `whsec_` +
base64 of its bytes. The secret is the tenant's (`webhook_secret` in its key record) or the global
`webhooks.secret`; without either, a `webhook_url` is refused.

Server-side request forgery: a URL is refused unless it is https and every address its host resolves
to is public (not loopback, private, link-local, multicast, reserved, unspecified or otherwise not
global), except for hosts in `webhooks.allow_hosts` or addresses in `webhooks.allow_networks` (plain
http is allowed only for those). The check runs when the job is submitted and again before every
attempt (DNS may answer differently later: rebinding), and the request then goes to the address that
was checked, with the original Host header and TLS server name. Redirects are not followed.

Delivery runs after the job is terminal, in the background of the replica that finished it: up to
`max_attempts` tries with exponential backoff and jitter; 2xx means delivered. It never changes the
job's outcome. It is durable (kiss_core.jobs.runner): if that replica dies before the outcome, another
replica delivers the event again with the same `webhook-id` (at least once).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import httpx

from kiss_core.errors import WebhookUrlRefused
from kiss_core.schemas import JobManifest, WebhookDelivery, utcnow
from kiss_core.settings import WebhookSettings

log = logging.getLogger(__name__)

EVENT_COMPLETED = "video.completed"
EVENT_FAILED = "video.failed"
SECRET_PREFIX = "whsec_"
MAX_URL_LENGTH = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (both families), as strings without IPv6 zone ids."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))


def address_refusal(ip: IPAddress) -> str | None:
    """Why a webhook may not go to `ip` (None if it is a public address)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for reason in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{reason}"):
            return reason.replace("_", "-")
    if not ip.is_global:
        return "non-global"
    return None


@dataclass(frozen=True)
class CheckedUrl:
    """A webhook URL that passed the checks, with the addresses it was checked against."""

    url: str
    scheme: str
    host: str
    port: int
    target: str  # path and query
    host_header: str
    addresses: tuple[str, ...]

    def url_for(self, address: str) -> str:
        literal = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{literal}:{self.port}{self.target}"


def check_url(url: str, settings: WebhookSettings, resolve: Resolver = system_resolver) -> CheckedUrl:
    """Parse, resolve and check a webhook URL; raises WebhookUrlRefused naming the reason."""
    if len(url) > MAX_URL_LENGTH:
        raise WebhookUrlRefused(f"webhook_url is {len(url)} characters; the limit is {MAX_URL_LENGTH}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlRefused(f"webhook_url {url!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if scheme not in ("https", "http") or not host:
        raise WebhookUrlRefused(f"webhook_url must be an absolute https URL but is {url!r}")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlRefused("webhook_url must not carry credentials (user:password@)")
    port = port or (443 if scheme == "https" else 80)
    host_allowed = host in {h.lower().rstrip(".") for h in settings.allow_hosts}
    networks = [ipaddress.ip_network(n, strict=False) for n in settings.allow_networks]
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addresses = resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise WebhookUrlRefused(f"the webhook host {host!r} does not resolve: {exc}") from None
    if not addresses:
        raise WebhookUrlRefused(f"the webhook host {host!r} does not resolve")
    all_in_networks = True
    for address in addresses:
        ip = ipaddress.ip_address(address)
        in_network = any(ip in net for net in networks)
        all_in_networks &= in_network
        reason = address_refusal(ip)
        if reason is not None and not (host_allowed or in_network):
            raise WebhookUrlRefused(
                f"the webhook host {host!r} resolves to {address}, a {reason} address"
                " (allow it with webhooks.allow_hosts or webhooks.allow_networks)"
            )
    if scheme == "http" and not (host_allowed or all_in_networks):
        raise WebhookUrlRefused(
            f"webhook_url must use https (plain http only for allow-listed hosts): {url!r}"
        )
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    literal_host = f"[{host}]" if ":" in host else host
    host_header = literal_host if parts.port is None else f"{literal_host}:{port}"
    return CheckedUrl(url, scheme, host, port, target, host_header, tuple(addresses))


def new_secret() -> str:
    """A fresh signing secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def decode_secret(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    return base64.b64decode(raw + "=" * (-len(raw) % 4))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value (`v1,<base64 HMAC-SHA256>`) of one message."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(decode_secret(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }


def message_id(job_id: str, event_type: str) -> str:
    """Stable per job and event: retries (and a second runner) send the same id."""
    return f"msg_{job_id.removeprefix('video_')}_{event_type.removeprefix('video.')}"


def event_for(manifest: JobManifest, now: datetime, base_url: str | None = None) -> dict[str, object]:
    """The event payload for a terminal job: {type, timestamp, data: {id, status, error?, links}}."""
    event_type = EVENT_COMPLETED if manifest.status == "completed" else EVENT_FAILED
    base = (base_url or "").rstrip("/")
    links = {"self": f"{base}/v1/videos/{manifest.id}"}
    if manifest.status == "completed":
        links["content"] = f"{base}/v1/videos/{manifest.id}/content"
    data: dict[str, object] = {
        "id": manifest.id,
        "object": "video",
        "status": manifest.status,
        "links": links,
    }
    if manifest.error is not None:
        data["error"] = manifest.error.model_dump(mode="json", exclude_none=True)
    return {"type": event_type, "timestamp": now.isoformat().replace("+00:00", "Z"), "data": data}


OnAttempt = Callable[[WebhookDelivery], Awaitable[None]]


class WebhookSender:
    """Checks webhook URLs and delivers signed events with retries; one per ingress replica."""

    def __init__(
        self,
        settings: WebhookSettings,
        secret_for: Callable[[str], str | None] = lambda tenant: None,
        resolve: Resolver = system_resolver,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.settings = settings
        self._secret_for = secret_for
        self.resolve = resolve
        self.sleep = sleep
        self.transport = transport

    def secret(self, tenant: str) -> str | None:
        return self._secret_for(tenant) or self.settings.secret

    def check(self, url: str, tenant: str) -> CheckedUrl:
        """The submission-time check (blocking: it resolves the host)."""
        checked = check_url(url, self.settings, self.resolve)
        if self.secret(tenant) is None:
            raise WebhookUrlRefused(
                "webhooks are not configured for this tenant: no signing secret"
                " (webhook_secret in its key record, or webhooks.secret)"
            )
        return checked

    def backoff(self, attempt: int) -> float:
        """Delay before attempt `attempt` (2, 3, ...): backoff_s x 2^(attempt-2), +-20% jitter."""
        return self.settings.backoff_s * 2 ** (attempt - 2) * random.uniform(0.8, 1.2)

    async def deliver(
        self,
        url: str,
        tenant: str,
        event: dict[str, object],
        msg_id: str,
        on_attempt: OnAttempt | None = None,
    ) -> WebhookDelivery:
        """Send `event` until a 2xx or `max_attempts`; `on_attempt` sees the delivery after each try.

        It also sees it once before the first try (pending, 0 attempts), so the job shows a webhook on
        its way from the moment the job ends, not only after the receiver has answered.
        """
        body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        delivery = WebhookDelivery(event=str(event["type"]), message_id=msg_id, status="pending")
        await _record(on_attempt, delivery)
        secret = self.secret(tenant)
        for attempt in range(1, self.settings.max_attempts + 1):
            if attempt > 1:
                await self.sleep(self.backoff(attempt))
            status_code: int | None = None
            error: str | None = None
            refused = False
            try:
                if secret is None:
                    raise WebhookUrlRefused("no signing secret is configured for this tenant any more")
                checked = await asyncio.to_thread(check_url, url, self.settings, self.resolve)
                headers = signature_headers(secret, msg_id, int(time.time()), body)
                status_code = await self._post(checked, body, headers)
            except WebhookUrlRefused as exc:
                refused, error = True, exc.detail
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
            delivered = status_code is not None and 200 <= status_code < 300
            final = delivered or refused or attempt == self.settings.max_attempts
            status = "delivered" if delivered else "refused" if refused else "failed" if final else "pending"
            delivery = delivery.model_copy(
                update={
                    "status": status,
                    "attempts": attempt,
                    "last_status_code": status_code,
                    "last_error": error,
                    "updated_at": utcnow(),
                }
            )
            await _record(on_attempt, delivery)
            if final:
                break
        return delivery

    async def _post(self, checked: CheckedUrl, body: bytes, signed: dict[str, str]) -> int:
        headers = {
            **signed,
            "Host": checked.host_header,
            "Content-Type": "application/json",
            "User-Agent": "kissgen-webhooks/1",
        }
        extensions = {"sni_hostname": checked.host} if checked.scheme == "https" else {}
        async with httpx.AsyncClient(
            timeout=self.settings.timeout_s, follow_redirects=False, trust_env=False, transport=self.transport
        ) as client:
            response = await client.post(
                checked.url_for(checked.addresses[0]), content=body, headers=headers, extensions=extensions
            )
        return response.status_code


async def _record(on_attempt: OnAttempt | None, delivery: WebhookDelivery) -> None:
    """Hand the delivery's state to `on_attempt`; a failure to record must not stop the delivery."""
    if on_attempt is None:
        return
    try:
        await on_attempt(delivery)
    except Exception:
        log.warning(
            "could not record webhook %s after %d attempts",
            delivery.message_id,
            delivery.attempts,
            exc_info=True,
        )
