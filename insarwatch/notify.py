"""Delivery of alert and digest reports: the reports directory, SMTP e-mail and a webhook.

Delivery goes through the store's outbox. ``publish`` renders nothing itself: it stores
a rendered ``reports.Report`` as a message with one delivery per channel (the reports
directory always; e-mail and webhook when configured), keyed by the alert key so a
second publish of the same interferogram and model version stores nothing.
``deliver_due`` then sends what is due and records each outcome: delivered, or failed
with the next attempt after an exponential back-off (``retry_base_seconds`` doubling up
to ``retry_max_seconds``), or given up ``give_up_after_hours`` after the message was
stored. Each delivery is claimed (a lease in the store) before it is sent, so two senders
running at once send it once; a sender that dies mid-send leaves a claim that expires
after ``CLAIM_LEASE`` and the delivery is retried then. Each delivery sent leaves a sent
record in ``<reports>/sent/`` (``sent_record``), which is checked before sending: a message
whose outbox was lost with its database (a restored or deleted ``state.db``) is rebuilt
under the same stable key and is then recorded as delivered, not sent a second time. Because the outbox is in SQLite, a restart loses no pending delivery and never
re-sends a delivered one. SMTP passwords are read at send time from ``password_file``
or ``password_env``; they are never logged and are scrubbed from recorded errors.
Webhook URLs often carry a secret token, so the outbox records only their origin.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import os
import smtplib
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import files
from .config import NotifySettings, Settings, SmtpSettings, WebhookSettings
from .errors import InsarwatchError
from .reports import (
    Figure,
    Report,
    build_alert_report,
    build_digest_report,
    digest_from_store,
    load_frame_image,
    write_report,
)

if TYPE_CHECKING:
    from .alerts import Alert
    from .store import Delivery, Store

log = logging.getLogger(__name__)

FILE, EMAIL, WEBHOOK = "file", "email", "webhook"
# Far longer than any one send may take (SMTP and webhook time-outs are seconds), so a live
# sender never loses its claim; short enough that a crash mid-send delays the retry little.
CLAIM_LEASE = timedelta(minutes=15)


class DeliveryError(InsarwatchError):
    """One attempt to deliver failed; the outbox records the message and retries."""


@dataclass(frozen=True)
class DeliveryRun:
    """What one ``deliver_due`` pass did."""

    delivered: int = 0
    retrying: int = 0
    given_up: int = 0


# --------------------------------------------------------------------------- payloads


def report_payload(report: Report) -> dict[str, Any]:
    """A report as the JSON the outbox stores: enough for every channel to render and send
    it later without the reports directory or the interferogram."""
    return {
        "kind": report.kind,
        "name": report.name,
        "document": report.document,
        "image_problem": report.image_problem,
        "figures": [
            {"name": figure.name, "alt": figure.alt, "subtype": figure.subtype, "width": figure.width,
             "height": figure.height, "base64": base64.b64encode(figure.data).decode("ascii")}
            for figure in report.figures
        ],
    }


def report_from_payload(payload: Mapping[str, Any]) -> Report:
    figures = tuple(
        Figure(item["name"], item["alt"], base64.b64decode(item["base64"]), item["subtype"], item["width"],
               item["height"])
        for item in payload["figures"]
    )
    return Report(payload["kind"], payload["name"], payload["document"], figures, payload["image_problem"])


def recipients_for(document: Mapping[str, Any], smtp: SmtpSettings) -> list[str]:
    """``recipients`` plus the lists of every frame and volcano the report is about, each once."""
    if document["kind"] == "alert":
        volcanoes = document.get("volcanoes") or [document.get("volcano")]
        places = [(document["frame"], volcano) for volcano in volcanoes]
    else:
        places = [(frame["frame"], frame.get("volcano")) for frame in document["frames"]]
    addresses = list(smtp.recipients)
    for frame, volcano in places:
        addresses += smtp.recipients_by_frame.get(frame, [])
        if volcano:
            addresses += smtp.recipients_by_volcano.get(volcano, [])
    return list(dict.fromkeys(address.strip() for address in addresses if address.strip()))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def targets_for(document: Mapping[str, Any], settings: Settings) -> list[tuple[str, str]]:
    targets = [(FILE, str(settings.reports_dir))]
    smtp = settings.notify.smtp
    if smtp is not None:
        recipients = recipients_for(document, smtp)
        if recipients:
            targets.append((EMAIL, ", ".join(recipients)))
    if settings.notify.webhook is not None:
        targets.append((WEBHOOK, _origin(settings.notify.webhook.url)))
    return targets


def publish(store: Store, key: str, report: Report, settings: Settings, now: datetime) -> bool:
    """Store ``report`` in the outbox under ``key``; False (and nothing stored) when the key
    was published before."""
    stored = store.enqueue_message(key, report.kind, report_payload(report),
                                   targets_for(report.document, settings), now)
    if stored:
        log.info("queued %s %s for delivery", report.kind, key)
    else:
        log.info("%s %s was published before; not sending it again", report.kind, key)
    return stored


def alert_outbox(alert: Alert, settings: Settings) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Render ``alert``'s report (reading its interferogram) as the outbox payload and its
    targets: what ``Store.record_alert``/``Store.complete`` store in the same transaction
    as the interferogram's results."""
    frame, problem = load_frame_image(alert, settings.imaging.max_pixels)
    report = build_alert_report(alert, frame, image_problem=problem, base_url=settings.notify.report_base_url)
    return report_payload(report), targets_for(report.document, settings)


def publish_digest(store: Store, settings: Settings, since: datetime, until: datetime,
                   now: datetime) -> tuple[Report, bool]:
    """Build the digest of ``[since, until)`` from the store and store it for delivery
    (once per period); returns the rendered digest and whether it was new."""
    digest = digest_from_store(store, since, until, settings)
    report = build_digest_report(digest, now)
    return report, publish(store, digest.key, report, settings, now)


# --------------------------------------------------------------------------- channels


def build_email(report: Report, sender: str, recipients: list[str], key: str, now: datetime) -> EmailMessage:
    """Plain-text summary, HTML body with its figures as related parts (many clients block
    data-URI images), and the report's JSON attached as ``application/json``. The
    Message-ID derives from the key, so a client can tell a re-send after a crash from a
    new alert."""
    message = EmailMessage()
    message["Subject"] = report.subject
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@insarwatch>"
    message.set_content(report.summary + "\n")
    message.add_alternative(report.email_html, subtype="html")
    html_part = message.get_payload()[-1]
    for figure in report.figures:
        html_part.add_related(figure.data, maintype="image", subtype=figure.subtype,
                              cid=f"<{figure.content_id}>", disposition="inline",
                              filename=f"{figure.name}.{figure.subtype}")
    message.add_attachment(json.dumps(report.document, indent=2, ensure_ascii=False).encode("utf-8"),
                           maintype="application", subtype="json", filename=f"{report.name}.json")
    return message


def smtp_password(smtp: SmtpSettings, environ: Mapping[str, str]) -> str | None:
    if smtp.password_file is not None:
        try:
            return Path(smtp.password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise DeliveryError(f"{smtp.password_file}: SMTP password file cannot be read: {exc.strerror}") from None
    if smtp.password_env is not None:
        if smtp.password_env not in environ:
            raise DeliveryError(f"SMTP password variable {smtp.password_env} is not set")
        return environ[smtp.password_env]
    return None


def send_email(smtp: SmtpSettings, message: EmailMessage, recipients: list[str],
               environ: Mapping[str, str]) -> None:
    password = smtp_password(smtp, environ)
    context = None if smtp.security == "none" else ssl.create_default_context(
        cafile=str(smtp.ca_file) if smtp.ca_file else None)
    try:
        if smtp.security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout_seconds,
                                                    context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_seconds)
        with client:
            if smtp.security == "starttls":
                client.starttls(context=context)
            if smtp.username:
                if password is None:
                    raise DeliveryError(f"SMTP user {smtp.username} has no password_file or password_env")
                client.login(smtp.username, password)
            refused = client.send_message(message, from_addr=smtp.sender, to_addrs=recipients)
    except (OSError, smtplib.SMTPException) as exc:
        text = f"SMTP {smtp.host}:{smtp.port}: {type(exc).__name__}: {exc}"
        # A server may echo what it was sent; the password must not reach the store or the log.
        raise DeliveryError(text.replace(password, "***") if password else text) from None
    if refused:
        # The others have the message; retrying would send it to them twice.
        log.warning("SMTP server refused %s", ", ".join(sorted(refused)))


def webhook_body(report: Report) -> dict[str, Any]:
    """Slack/Mattermost/Rocket.Chat-style incoming webhooks read ``text``; integrations that
    want the data read the report document beside it, unescaped.

    ``text`` has ``&``, ``<`` and ``>`` escaped, as Slack asks (exactly what ``html.escape``
    does without ``quote``), so ``<!channel>`` or ``<@user>`` in a caption notifies nobody.
    """
    return {"text": html.escape(report.summary, quote=False), "kind": report.kind, report.kind: report.document}


def post_webhook(webhook: WebhookSettings, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        webhook.url, data=json.dumps(body).encode("utf-8"), method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "insarwatch"},
    )
    try:
        with urllib.request.urlopen(request, timeout=webhook.timeout_seconds) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"webhook {_origin(webhook.url)}: HTTP {exc.code} {exc.reason}") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"webhook {_origin(webhook.url)}: {reason}") from None


def _send(delivery: Delivery, settings: Settings, environ: Mapping[str, str], now: datetime) -> None:
    report = report_from_payload(delivery.payload)
    if delivery.channel == FILE:
        write_report(report, Path(delivery.target))
    elif delivery.channel == EMAIL:
        smtp = settings.notify.smtp
        if smtp is None:
            raise DeliveryError("e-mail delivery pending but notify.smtp is no longer configured")
        recipients = [address.strip() for address in delivery.target.split(",")]
        send_email(smtp, build_email(report, smtp.sender, recipients, delivery.key, now), recipients, environ)
    elif delivery.channel == WEBHOOK:
        if settings.notify.webhook is None:
            raise DeliveryError("webhook delivery pending but notify.webhook is no longer configured")
        post_webhook(settings.notify.webhook, webhook_body(report))
    else:
        raise DeliveryError(f"unknown delivery channel {delivery.channel!r}")


# --------------------------------------------------------------------------- outbox


def sent_record(reports_dir: Path, delivery: Delivery) -> Path:
    """Where the record that ``delivery`` was sent lives: one small file per message key,
    channel and target, named by their hash (a key may hold any character)."""
    digest = hashlib.sha256("\0".join((delivery.key, delivery.channel, delivery.target)).encode()).hexdigest()
    return Path(reports_dir) / "sent" / f"{digest[:40]}.json"


# Sent records of the deliveries this process sent but could not yet record (a full disk
# refused both the sent record and the delivered commit): the next pass marks them delivered
# without sending. Only a process killed inside that window forgets one (at least once).
_sent_unrecorded: set[Path] = set()


def _record_sent(reports_dir: Path, delivery: Delivery, now: datetime) -> None:
    record = sent_record(reports_dir, delivery)
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        files.write_text(record, json.dumps({"key": delivery.key, "channel": delivery.channel,
                                             "target": delivery.target, "sent": now.isoformat()}) + "\n")
    except OSError as exc:  # it was sent: the outbox still records that
        log.warning("%s: cannot write the sent record of %s: %s", record, delivery.key, exc.strerror or exc)


def next_attempt(created: datetime, attempts_before: int, now: datetime, notify: NotifySettings) -> datetime | None:
    """When to retry after a failure, or None to give up. The delay doubles from
    ``retry_base_seconds`` up to ``retry_max_seconds``; the last attempt falls exactly at
    the give-up deadline so a message is never abandoned untried."""
    deadline = created + timedelta(hours=notify.give_up_after_hours)
    if now >= deadline:
        return None
    delay = min(notify.retry_base_seconds * 2 ** min(attempts_before, 60), notify.retry_max_seconds)
    return min(now + timedelta(seconds=delay), deadline)


def _sender() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def release_dead_claims(store: Store) -> int:
    """Give back the claims of senders on this host whose process has died (a daemon killed
    mid-send), so their deliveries are retried now rather than when the lease runs out."""
    host = socket.gethostname()
    dead = [sender for sender in store.claimants()
            if sender.rsplit(":", 2)[0] == host and not _alive(int(sender.rsplit(":", 2)[1]))]
    return store.release_claims(dead) if dead else 0


def deliver_due(store: Store, settings: Settings, now: datetime,
                environ: Mapping[str, str] | None = None) -> DeliveryRun:
    """Attempt every delivery due at ``now`` once and record each outcome."""
    environ = os.environ if environ is None else environ
    delivered = retrying = given_up = 0
    # Every outcome moves a delivery out of "due at now" (a retry is always later than now),
    # and one another sender holds is not due either, so this ends once the backlog has been tried.
    sender = _sender()
    # This sender is here, not mid-send: a claim it still holds is from a run whose outcome
    # was refused (a full disk), and would otherwise hold that delivery for the whole lease.
    if sender in store.claimants():
        store.release_claims([sender])
    while batch := store.due_deliveries(now):
        for delivery in batch:
            if not store.claim_delivery(delivery.id, sender, now, now + CLAIM_LEASE):
                continue  # another sender has it
            record = sent_record(settings.reports_dir, delivery)
            if record in _sent_unrecorded:
                _record_sent(settings.reports_dir, delivery, now)
                store.mark_delivered(delivery.id, now)
                _sent_unrecorded.discard(record)
                log.warning("%s was sent via %s before storage refused its outcome; recorded it now, "
                            "not sending it again", delivery.key, delivery.channel)
                continue
            if record.is_file():
                store.mark_delivered(delivery.id, now)
                log.warning("%s was sent via %s before this outbox was rebuilt (%s); not sending it again",
                            delivery.key, delivery.channel, record)
                continue
            try:
                _send(delivery, settings, environ, now)
            # Whatever goes wrong is recorded on this delivery, so one bad message cannot block the rest.
            except Exception as exc:  # noqa: BLE001
                error = str(exc) if isinstance(exc, InsarwatchError) else f"{type(exc).__name__}: {exc}"
                retry = next_attempt(delivery.created, delivery.attempts, now, settings.notify)
                store.mark_failed(delivery.id, error, now, retry)
                if retry is None:
                    given_up += 1
                    log.error("gave up delivering %s via %s after %d attempts: %s",
                              delivery.key, delivery.channel, delivery.attempts + 1, error)
                else:
                    retrying += 1
                    log.warning("delivering %s via %s failed (%s); next attempt %s",
                                delivery.key, delivery.channel, error, retry.isoformat())
            else:
                _sent_unrecorded.add(record)
                _record_sent(settings.reports_dir, delivery, now)
                store.mark_delivered(delivery.id, now)
                _sent_unrecorded.discard(record)
                delivered += 1
                log.info("delivered %s via %s", delivery.key, delivery.channel)
    return DeliveryRun(delivered, retrying, given_up)
