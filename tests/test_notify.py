"""Delivery through the outbox to a real SMTP server (aiosmtpd) and a real HTTP server on loopback."""

from __future__ import annotations

import email
import email.policy
import ipaddress
import json
import logging
import socket
import sqlite3
import ssl
import subprocess
import threading
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import FRAME, VOLCANO, Webhook, make_alert, wait_for
from typer.testing import CliRunner

from insarwatch import notify, reports
from insarwatch import store as store_module
from insarwatch.cli import app
from insarwatch.config import Settings, Volcano
from insarwatch.store import Store

T0 = datetime(2026, 11, 15, 6, 5, tzinfo=timezone.utc)
PASSWORD = "s3cret-Pa55word"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Mailbox:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's hook name)
        self.messages.append({
            "mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos),
            "message": email.message_from_bytes(envelope.original_content, policy=email.policy.default),
            "authenticated": session.authenticated,
            "tls": server.transport.get_extra_info("ssl_object") is not None,
        })
        return "250 OK"


def start_smtp(port: int, **kwargs: Any) -> tuple[Controller, Mailbox]:
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller, mailbox


@pytest.fixture
def smtp() -> Iterator[tuple[int, Mailbox]]:
    port = free_port()
    controller, mailbox = start_smtp(port)
    yield port, mailbox
    controller.stop()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A private CA and a server certificate it signed for 127.0.0.1, as an observatory might run."""
    directory = tmp_path_factory.mktemp("tls")
    now = datetime.now(timezone.utc)

    def certificate(subject: str, key, issuer: str, issuer_key, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                           critical=False)
        )
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ), critical=True)
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ), critical=False).add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                                             critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("insarwatch test CA", ca_key, "insarwatch test CA", ca_key, True)
    server = certificate("localhost", server_key, "insarwatch test CA", ca_key, False)
    paths = {"ca": directory / "ca.pem", "cert": directory / "server.pem", "key": directory / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


def server_context(certificates: dict[str, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates["cert"], certificates["key"])
    return context


def authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
    accepted = isinstance(auth_data, LoginPassword) and auth_data.login == b"observatory" \
        and auth_data.password == PASSWORD.encode()
    # handled=False: aiosmtpd then answers a refusal with 535 itself.
    return AuthResult(success=accepted, handled=accepted)


def settings_for(tmp_path: Path, *, smtp: dict | None = None, webhook: dict | None = None, **notify: Any) -> Settings:
    sections: dict[str, Any] = dict(notify)
    if smtp is not None:
        sections["smtp"] = {"host": "127.0.0.1", "security": "none", "sender": "insarwatch@observatory.example",
                            "recipients": ["duty@observatory.example"],
                            "recipients_by_frame": {FRAME: ["frame-team@observatory.example"]},
                            "recipients_by_volcano": {VOLCANO: ["etna@observatory.example"],
                                                      "Stromboli": ["stromboli@observatory.example"]},
                            **smtp}
    if webhook is not None:
        sections["webhook"] = webhook
    return Settings(var_dir=tmp_path / "var", drop_dir=tmp_path / "drop", notify=sections,
                    volcanoes=[Volcano(name=VOLCANO, frames=[FRAME])])


def publish_alert(store: Store, settings: Settings, tmp_path: Path, **kwargs: Any) -> Any:
    alert = make_alert(tmp_path / "drop", **kwargs)
    payload, targets = notify.alert_outbox(alert, settings)
    assert store.enqueue_message(alert.key, "alert", payload, targets, T0)
    return alert


def parts(message: email.message.EmailMessage) -> dict[str, Any]:
    return {
        "html": message.get_body(("html",)).get_content(),
        "text": message.get_body(("plain",)).get_content(),
        "json": [json.loads(part.get_content()) for part in message.iter_attachments()
                 if part.get_content_type() == "application/json"],
        "images": {part["Content-ID"]: part.get_content_type() for part in message.walk()
                   if part.get_content_maintype() == "image" and part["Content-ID"]},
    }


ALL_RECIPIENTS = ["duty@observatory.example", "frame-team@observatory.example", "etna@observatory.example"]


def test_alert_email_arrives_with_html_and_json(tmp_path: Path, smtp) -> None:
    port, mailbox = smtp
    settings = settings_for(tmp_path, smtp={"port": port})
    with Store(settings.state_db) as store:
        alert = publish_alert(store, settings, tmp_path)
        run = notify.deliver_due(store, settings, T0)
        assert run == notify.DeliveryRun(delivered=2)
        assert {d.channel: d.status for d in store.deliveries_for(alert.key)} == {"file": "delivered",
                                                                                   "email": "delivered"}
    [received] = mailbox.messages
    assert received["mail_from"] == "insarwatch@observatory.example"
    assert received["rcpt_tos"] == ALL_RECIPIENTS
    message = received["message"]
    assert message["Subject"] == f"[insarwatch] ALERT (high) {VOLCANO} {FRAME} 2026-11-02→2026-11-14"
    assert [address.strip() for address in message["To"].split(",")] == ALL_RECIPIENTS
    content = parts(message)
    assert "dyke - type deformation pattern of high intensity" in content["html"]
    assert "dyke - type" in content["text"]
    [document] = content["json"]
    assert document["schema_version"] == reports.SCHEMA_VERSION and document["key"] == alert.key
    # Figures travel as related parts the HTML refers to by Content-ID.
    assert content["images"]
    for content_id, mime in content["images"].items():
        assert f'src="cid:{content_id.strip("<>")}"' in content["html"]
        assert mime in ("image/png", "image/jpeg")
    # The reports directory got the self-contained page and the JSON.
    name = reports.safe_name(alert.key)
    page = (settings.reports_dir / "alerts" / f"{name}.html").read_text()
    assert "data:image/png;base64," in page and "cid:" not in page
    assert json.loads((settings.reports_dir / "alerts" / f"{name}.json").read_text())["key"] == alert.key


def test_digest_email_goes_to_the_lists_of_the_frames_in_it(tmp_path: Path, smtp) -> None:
    port, mailbox = smtp
    settings = settings_for(tmp_path, smtp={"port": port})
    start, end = T0 - timedelta(days=1), T0
    with Store(settings.state_db) as store:
        primary = date(2026, 11, 2)
        store.discover(f"{FRAME}/x", "/drop/x", FRAME, primary, primary + timedelta(days=12),
                       start + timedelta(hours=1))
        digest = reports.digest_from_store(store, start, end, settings)
        report = reports.build_digest_report(digest, T0)
        assert notify.publish(store, digest.key, report, settings, T0) is True
        assert notify.publish(store, digest.key, report, settings, T0) is False
        assert notify.deliver_due(store, settings, T0).delivered == 2
    [received] = mailbox.messages
    assert received["rcpt_tos"] == ALL_RECIPIENTS
    message = received["message"]
    assert message["Subject"].startswith("[insarwatch] Digest 2026-11-14 06:05 – 2026-11-15 06:05 UTC")
    content = parts(message)
    assert FRAME in content["html"] and VOLCANO in content["html"]
    [document] = content["json"]
    assert document["kind"] == "digest" and document["totals"]["arrived"] == 1
    assert (settings.reports_dir / "digests" / f"{report.name}.html").exists()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_encrypted_and_authenticated_smtp(tmp_path: Path, certificates, security: str,
                                          caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    tls = {"tls_context": server_context(certificates), "require_starttls": True} if security == "starttls" \
        else {"ssl_context": server_context(certificates), "auth_require_tls": False}  # aiosmtpd cannot tell
    # that an implicit-TLS connection is encrypted, so it would never offer AUTH there.
    controller, mailbox = start_smtp(port, authenticator=authenticator, auth_required=True, **tls)
    password_file = tmp_path / "smtp-password"
    password_file.write_text(PASSWORD + "\n")
    settings = settings_for(tmp_path, smtp={"port": port, "security": security, "username": "observatory",
                                            "password_file": str(password_file),
                                            "ca_file": str(certificates["ca"])})
    caplog.set_level(logging.DEBUG)
    try:
        with Store(settings.state_db) as store:
            publish_alert(store, settings, tmp_path)
            assert notify.deliver_due(store, settings, T0).delivered == 2
    finally:
        controller.stop()
    [received] = mailbox.messages
    assert received["tls"] and received["authenticated"]
    assert PASSWORD not in caplog.text


def test_password_from_environment_and_never_in_recorded_errors(tmp_path: Path, certificates,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    controller, mailbox = start_smtp(port, authenticator=authenticator, auth_required=True,
                                     tls_context=server_context(certificates), require_starttls=True)
    settings = settings_for(tmp_path, smtp={"port": port, "security": "starttls", "username": "observatory",
                                            "password_env": "IW_SMTP_PASSWORD", "ca_file": str(certificates["ca"])})
    caplog.set_level(logging.DEBUG)
    try:
        with Store(settings.state_db) as store:
            alert = publish_alert(store, settings, tmp_path)
            wrong = notify.deliver_due(store, settings, T0, environ={"IW_SMTP_PASSWORD": PASSWORD + "-wrong"})
            assert (wrong.delivered, wrong.retrying) == (1, 1)  # the file is written, the e-mail waits
            [email_delivery] = [d for d in store.deliveries_for(alert.key) if d.channel == "email"]
            assert "535" in email_delivery.last_error and PASSWORD not in email_delivery.last_error
            later = T0 + timedelta(seconds=settings.notify.retry_base_seconds)
            assert notify.deliver_due(store, settings, later, environ={"IW_SMTP_PASSWORD": PASSWORD}).delivered == 1
    finally:
        controller.stop()
    assert len(mailbox.messages) == 1 and mailbox.messages[0]["authenticated"]
    assert PASSWORD not in caplog.text


def test_untrusted_certificate_is_refused(tmp_path: Path, certificates) -> None:
    port = free_port()
    controller, mailbox = start_smtp(port, tls_context=server_context(certificates), require_starttls=True)
    settings = settings_for(tmp_path, smtp={"port": port, "security": "starttls"})  # no ca_file: system store
    try:
        with Store(settings.state_db) as store:
            alert = publish_alert(store, settings, tmp_path)
            assert notify.deliver_due(store, settings, T0).retrying == 1
            [email_delivery] = [d for d in store.deliveries_for(alert.key) if d.channel == "email"]
    finally:
        controller.stop()
    assert "CERTIFICATE_VERIFY_FAILED" in email_delivery.last_error
    assert mailbox.messages == []


def test_smtp_down_then_up_is_retried_with_back_off_and_sent_once(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here until the server is started below
    settings = settings_for(tmp_path, smtp={"port": port, "timeout_seconds": 5},
                            retry_base_seconds=30, retry_max_seconds=600, give_up_after_hours=24)
    with Store(settings.state_db) as store:
        alert = publish_alert(store, settings, tmp_path)
        assert notify.deliver_due(store, settings, T0) == notify.DeliveryRun(delivered=1, retrying=1)
        email_delivery = next(d for d in store.deliveries_for(alert.key) if d.channel == "email")
        assert email_delivery.next_attempt == T0 + timedelta(seconds=30)
        assert "refused" in email_delivery.last_error.lower()
        assert notify.deliver_due(store, settings, T0 + timedelta(seconds=29)) == notify.DeliveryRun()
        assert notify.deliver_due(store, settings, T0 + timedelta(seconds=30)).retrying == 1
        email_delivery = store.deliveries_for(alert.key)[1]
        assert email_delivery.next_attempt == T0 + timedelta(seconds=30 + 60)
        assert store.pending_deliveries() == 1

    controller, mailbox = start_smtp(port)
    try:
        # A restart: a new Store on the same database still has the pending delivery.
        with Store(settings.state_db) as store:
            assert notify.deliver_due(store, settings, T0 + timedelta(seconds=90)).delivered == 1
            email_delivery = store.deliveries_for(alert.key)[1]
            assert (email_delivery.status, email_delivery.attempts) == ("delivered", 3)
            assert notify.deliver_due(store, settings, T0 + timedelta(days=3)) == notify.DeliveryRun()
            payload, targets = notify.alert_outbox(alert, settings)
            assert store.enqueue_message(alert.key, "alert", payload, targets, T0 + timedelta(days=3)) is False
        with Store(settings.state_db) as store:
            assert notify.deliver_due(store, settings, T0 + timedelta(days=4)) == notify.DeliveryRun()
            assert store.pending_deliveries() == 0
    finally:
        controller.stop()
    assert len(mailbox.messages) == 1


def test_gives_up_after_the_configured_time_and_records_it(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, smtp={"port": free_port(), "timeout_seconds": 5},
                            retry_base_seconds=600, retry_max_seconds=1200, give_up_after_hours=1)
    with Store(settings.state_db) as store:
        alert = publish_alert(store, settings, tmp_path)
        now, schedule = T0, []
        while True:
            run = notify.deliver_due(store, settings, now)
            email_delivery = next(d for d in store.deliveries_for(alert.key) if d.channel == "email")
            if run.given_up:
                break
            schedule.append(email_delivery.next_attempt - T0)
            now = email_delivery.next_attempt
        assert schedule == [timedelta(seconds=s) for s in (600, 1800, 3000, 3600)]
        assert (email_delivery.status, email_delivery.attempts) == ("given_up", 5)
        assert email_delivery.finished == T0 + timedelta(hours=1)
        assert email_delivery.last_error
        assert store.pending_deliveries() == 0
        assert notify.deliver_due(store, settings, T0 + timedelta(days=1)) == notify.DeliveryRun()


def test_back_off_doubles_up_to_the_cap_and_ends_at_the_deadline() -> None:
    settings = Settings(notify={"retry_base_seconds": 30, "retry_max_seconds": 300, "give_up_after_hours": 1})
    delays = [(notify.next_attempt(T0, attempts, T0, settings.notify) - T0).total_seconds() for attempts in range(6)]
    assert delays == [30, 60, 120, 240, 300, 300]
    assert notify.next_attempt(T0, 3, T0 + timedelta(minutes=59), settings.notify) == T0 + timedelta(hours=1)
    assert notify.next_attempt(T0, 9, T0 + timedelta(hours=1), settings.notify) is None


class Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's hook name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append({"path": self.path, "type": self.headers["Content-Type"], "body": body})
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    server.received, server.statuses = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_webhook_posts_text_and_the_alert(tmp_path: Path, hook_server: ThreadingHTTPServer) -> None:
    url = f"http://127.0.0.1:{hook_server.server_port}/hooks/T000/SECRET-TOKEN"
    settings = settings_for(tmp_path, webhook={"url": url, "timeout_seconds": 5})
    hook_server.statuses = [500]
    with Store(settings.state_db) as store:
        alert = publish_alert(store, settings, tmp_path)
        webhook = next(d for d in store.deliveries_for(alert.key) if d.channel == "webhook")
        assert webhook.target == f"http://127.0.0.1:{hook_server.server_port}"  # the token stays in the config
        assert notify.deliver_due(store, settings, T0).retrying == 1
        webhook = next(d for d in store.deliveries_for(alert.key) if d.channel == "webhook")
        assert webhook.last_error.startswith("webhook http://127.0.0.1:") and "HTTP 500" in webhook.last_error
        assert "SECRET-TOKEN" not in webhook.last_error
        assert notify.deliver_due(store, settings, T0 + timedelta(seconds=30)).delivered == 1
    first, second = hook_server.received
    assert first["body"] == second["body"] and second["path"] == "/hooks/T000/SECRET-TOKEN"
    assert second["type"] == "application/json"
    body = json.loads(second["body"])
    assert body["text"].startswith(f"ALERT (high) {VOLCANO} {FRAME} 2026-11-02→2026-11-14")
    assert "dyke - type" in body["text"]
    assert body["kind"] == "alert" and body["alert"]["key"] == alert.key
    assert body["alert"]["schema_version"] == reports.SCHEMA_VERSION


def test_webhook_timeout_is_a_retried_failure(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        settings = settings_for(tmp_path, webhook={"url": f"http://127.0.0.1:{silent.getsockname()[1]}/x",
                                                   "timeout_seconds": 0.5})
        with Store(settings.state_db) as store:
            alert = publish_alert(store, settings, tmp_path)
            assert notify.deliver_due(store, settings, T0).retrying == 1
            webhook = next(d for d in store.deliveries_for(alert.key) if d.channel == "webhook")
    assert "timed out" in webhook.last_error


def test_recipients_are_deduplicated_and_only_the_relevant_lists() -> None:
    settings = Settings(notify={"smtp": {"recipients": ["a@x", "b@x"], "recipients_by_frame": {FRAME: ["b@x", "c@x"]},
                                         "recipients_by_volcano": {VOLCANO: ["d@x"], "Other": ["e@x"]}}})
    document = {"kind": "alert", "frame": FRAME, "volcano": VOLCANO}
    assert notify.recipients_for(document, settings.notify.smtp) == ["a@x", "b@x", "c@x", "d@x"]
    assert notify.recipients_for({"kind": "alert", "frame": "x", "volcano": None}, settings.notify.smtp) == [
        "a@x", "b@x"]


def test_report_send_mails_the_digest_once(tmp_path: Path, smtp) -> None:
    port, mailbox = smtp
    config = tmp_path / "insarwatch.toml"
    config.write_text(
        f'var_dir = "{tmp_path / "var"}"\n[notify.smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
        f'recipients = ["duty@observatory.example"]\n'
    )
    (tmp_path / "var").mkdir()
    with Store(tmp_path / "var" / "state.db") as store:
        primary = date(2026, 11, 2)
        store.discover(f"{FRAME}/x", "/drop/x", FRAME, primary, primary + timedelta(days=12),
                       datetime(2026, 11, 3, 8, tzinfo=timezone.utc))
    arguments = ["--config", str(config), "report", "--since", "2026-11-01", "--until", "2026-11-07", "--send"]
    first = CliRunner().invoke(app, arguments, env={"INSARWATCH_VAR_DIR": str(tmp_path / "var")})
    assert first.exit_code == 0, first.output
    assert "delivered 2" in first.stderr
    again = CliRunner().invoke(app, arguments, env={"INSARWATCH_VAR_DIR": str(tmp_path / "var")})
    assert again.exit_code == 0 and "sent before" in again.stderr
    [received] = mailbox.messages
    assert received["rcpt_tos"] == ["duty@observatory.example"]
    assert received["message"]["Subject"].startswith("[insarwatch] Digest 2026-11-01 00:00 – 2026-11-08 00:00 UTC")
    assert Path(first.stdout.split()[0]).exists()


def test_an_unwritable_reports_directory_is_retried_without_blocking_mail(tmp_path: Path, smtp) -> None:
    port, mailbox = smtp
    settings = settings_for(tmp_path, smtp={"port": port})
    settings.var_dir.mkdir(parents=True)
    settings.reports_dir.write_text("a file where the reports directory should be")
    with Store(settings.state_db) as store:
        alert = publish_alert(store, settings, tmp_path)
        assert notify.deliver_due(store, settings, T0) == notify.DeliveryRun(delivered=1, retrying=1)
        file_delivery = next(d for d in store.deliveries_for(alert.key) if d.channel == "file")
        assert "cannot write report" in file_delivery.last_error
        settings.reports_dir.unlink()
        assert notify.deliver_due(store, settings, file_delivery.next_attempt).delivered == 1
    assert len(mailbox.messages) == 1
    assert (settings.reports_dir / "alerts" / f"{reports.safe_name(alert.key)}.html").exists()


def test_the_documented_password_variable_sends_mail(tmp_path: Path, certificates,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # As deploy/insarwatch.toml suggests: password_env = "INSARWATCH_SMTP_PASSWORD", which is
    # in insarwatch's own variable namespace without being a setting.
    port = free_port()
    controller, mailbox = start_smtp(port, authenticator=authenticator, auth_required=True,
                                     tls_context=server_context(certificates), require_starttls=True)
    config = tmp_path / "insarwatch.toml"
    config.write_text(
        f'var_dir = "{tmp_path / "var"}"\n[notify.smtp]\nhost = "127.0.0.1"\nport = {port}\n'
        f'security = "starttls"\nusername = "observatory"\npassword_env = "INSARWATCH_SMTP_PASSWORD"\n'
        f'ca_file = "{certificates["ca"]}"\nrecipients = ["duty@observatory.example"]\n'
    )
    monkeypatch.setenv("INSARWATCH_SMTP_PASSWORD", PASSWORD)
    with Store(tmp_path / "var" / "state.db") as store:
        primary = date(2026, 11, 2)
        store.discover(f"{FRAME}/x", "/drop/x", FRAME, primary, primary + timedelta(days=12),
                       datetime(2026, 11, 3, 8, tzinfo=timezone.utc))
    try:
        result = CliRunner().invoke(app, ["--config", str(config), "report", "--since", "2026-11-01",
                                          "--until", "2026-11-07", "--send"])
    finally:
        controller.stop()
    assert result.exit_code == 0, result.output
    [received] = mailbox.messages
    assert received["authenticated"] and received["tls"]
    assert received["rcpt_tos"] == ["duty@observatory.example"]


def test_webhook_text_cannot_mention_everyone(tmp_path: Path, hook_server: ThreadingHTTPServer) -> None:
    url = f"http://127.0.0.1:{hook_server.server_port}/hooks/T000/SECRET-TOKEN"
    settings = settings_for(tmp_path, webhook={"url": url, "timeout_seconds": 5})
    caption = "<!channel> & <@U024BE7LH> a dyke - type deformation pattern"
    with Store(settings.state_db) as store:
        publish_alert(store, settings, tmp_path, caption=caption)
        assert notify.deliver_due(store, settings, T0).delivered == 2
    (received,) = hook_server.received
    body = json.loads(received["body"])
    assert "&lt;!channel&gt; &amp; &lt;@U024BE7LH&gt;" in body["text"]
    assert "<" not in body["text"] and ">" not in body["text"]
    assert caption in json.dumps(body["alert"], ensure_ascii=False)  # the data stays as it was


def test_two_senders_at_once_send_a_slow_delivery_once(tmp_path: Path, webhook: Webhook) -> None:
    """The daemon's delivery thread and its digest job (or `report --send`) may run at once:
    the second must find the delivery the first is still sending taken, not send it again."""
    settings = settings_for(tmp_path, webhook={"url": webhook.url, "timeout_seconds": 60})
    webhook.gate.clear()  # the channel answers only when the test says so
    with Store(settings.state_db) as first_store, Store(settings.state_db) as second_store:
        alert = publish_alert(first_store, settings, tmp_path)
        runs: list[notify.DeliveryRun] = []
        first = threading.Thread(target=lambda: runs.append(notify.deliver_due(first_store, settings, T0)))
        first.start()
        assert webhook.arrived.wait(60), "the first sender never reached the webhook"
        second = notify.deliver_due(second_store, settings, T0)
        webhook.gate.set()
        first.join(60)
        assert webhook.keys() == [alert.key]
        assert runs[0].delivered + second.delivered == 2  # the file once and the webhook once
        assert {d.channel: (d.status, d.attempts) for d in first_store.deliveries_for(alert.key)} == {
            "file": ("delivered", 1), "webhook": ("delivered", 1)}


def test_a_delivery_claimed_by_a_killed_sender_is_due_again_at_once(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with Store(settings.state_db) as store:
        alert = publish_alert(store, settings, tmp_path)
        (delivery,) = store.deliveries_for(alert.key)
        gone = subprocess.Popen(["true"])
        gone.wait()
        assert store.claim_delivery(delivery.id, f"{socket.gethostname()}:{gone.pid}:1", T0,
                                    T0 + notify.CLAIM_LEASE)
        assert notify.deliver_due(store, settings, T0) == notify.DeliveryRun()  # held: not sent
        assert notify.release_dead_claims(store) == 1
        assert notify.deliver_due(store, settings, T0).delivered == 1


def test_a_send_whose_outcome_storage_refuses_is_recorded_not_sent_again(
    tmp_path: Path, webhook: Webhook, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full disk right after a webhook was sent refuses both its sent record and the delivered
    commit: once storage is back the same process records it delivered and does not post it again."""
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 200)  # the refused commit fails fast
    settings = settings_for(tmp_path, webhook={"url": webhook.url, "timeout_seconds": 60})
    webhook.gate.clear()
    with Store(settings.state_db) as store:
        alert = publish_alert(store, settings, tmp_path)
        blocked = settings.reports_dir / "sent"
        blocked.parent.mkdir(parents=True, exist_ok=True)
        blocked.write_text("not a directory: the sent record cannot be written\n")
        failures: list[BaseException] = []
        storage_back = threading.Event()

        def delivery_thread() -> None:  # as the daemon's: one thread, a pass whenever due
            try:
                notify.deliver_due(store, settings, T0)
            except sqlite3.OperationalError as exc:
                failures.append(exc)
            storage_back.wait(60)
            notify.deliver_due(store, settings, T0 + timedelta(seconds=30))

        sender = threading.Thread(target=delivery_thread)
        sender.start()
        assert webhook.arrived.wait(60), "the sender never reached the webhook"
        writer = sqlite3.connect(settings.state_db, isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")  # another writer holds the database: the outcome's commit is refused
        webhook.gate.set()
        wait_for(lambda: failures, 60, "the delivered commit refused")
        writer.execute("ROLLBACK")
        writer.close()
        assert [str(exc) for exc in failures] == ["database is locked"]
        blocked.unlink()
        storage_back.set()
        sender.join(60)
        assert webhook.keys() == [alert.key]  # posted once
        assert {d.channel: d.status for d in store.deliveries_for(alert.key)} == {
            "file": "delivered", "webhook": "delivered"}
        (sent,) = (d for d in store.deliveries_for(alert.key) if d.channel == "webhook")
        assert notify.sent_record(settings.reports_dir, sent).is_file()
