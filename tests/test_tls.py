"""HTTPS on the public port (`clusterhub up --tls-cert/--tls-key`), the flags' checks, the
warning for clear text off loopback, and the headers of the hub's and JupyterLab's pages."""

from __future__ import annotations

import datetime
import socket
import ssl

import pytest
import requests
from certs import self_signed_certificate
from test_up_cli import error_line, run_up

from clusterhub.up import cleartext_warning


def make_certificate(directory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    cert, key, _ = self_signed_certificate(
        directory, stem="hub", valid_for=datetime.timedelta(days=1)
    )
    return str(cert), str(key)


def test_bad_tls_flags_are_refused_and_start_nothing(tmp_path):
    cert, key = make_certificate(tmp_path)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    (tmp_path / "other").mkdir()
    other_cert, _ = make_certificate(tmp_path / "other")
    cases = [
        (["--tls-cert", cert], "--tls-cert needs --tls-key too"),
        (["--tls-key", key], "--tls-key needs --tls-cert too"),
        (["--tls-cert", "/nonexistent.crt", "--tls-key", key], "--tls-cert: no such file"),
        (["--tls-cert", str(garbage), "--tls-key", key], "are not a PEM certificate"),
        (["--tls-cert", cert, "--tls-key", str(garbage)], "are not a PEM certificate"),
        (["--tls-cert", other_cert, "--tls-key", key], "are not a PEM certificate"),
    ]
    for args, message in cases:
        result, data_dir = run_up(tmp_path, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in error_line(result), (args, result.stderr)
        assert not data_dir.exists(), "nothing was started or written"


def test_clear_text_off_loopback_is_warned_about_in_one_line():
    for ip in ("", "0.0.0.0", "::", "192.0.2.7"):
        line = cleartext_warning(ip, tls=False)
        assert line and "without TLS" in line and "--tls-cert" in line and "\n" not in line
        assert cleartext_warning(ip, tls=True) is None
    for ip in ("127.0.0.1", "::1", "127.0.0.2"):
        assert cleartext_warning(ip, tls=False) is None


@pytest.mark.e2e
@pytest.mark.slow
def test_the_platform_serves_https_with_hsts_and_its_pages_keep_no_opener(tmp_path):
    from hubclient import BrowserUser, running_platform

    cert, key = make_certificate(tmp_path)
    with running_platform(str(tmp_path), extra_args=["--tls-cert", cert, "--tls-key", key]) as p:
        assert any("is ready at https://127.0.0.1:" in line for line in p.output), p.output
        assert not any("without TLS" in line for line in p.output), "loopback: no warning"
        p.use_tls(cert)

        # Plain HTTP on that port gets no hub page.
        with pytest.raises(requests.ConnectionError):
            requests.get(p.url.replace("https://", "http://") + "/hub/login", timeout=10)
        # A client that checks certificates against the system's CAs refuses this one ...
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{p.url}/hub/login", timeout=10)
        # ... and one that trusts it talks TLS 1.2 or newer with the certificate given.
        port = int(p.url.rsplit(":", 1)[1])
        context = ssl.create_default_context(cafile=cert)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")

        alice = BrowserUser(p, "alice")
        login_page = alice.session.get(f"{p.url}/hub/login")
        assert login_page.headers["Strict-Transport-Security"].startswith("max-age=")
        assert login_page.headers["Cross-Origin-Opener-Policy"] == "same-origin"
        assert alice.login().status_code == 200
        assert alice.spawn().status_code == 302
        alice.wait_ready(timeout=240)
        lab = alice.session.get(f"{p.url}/user/alice/lab")
        assert lab.status_code == 200 and lab.url.startswith("https://")
        assert lab.headers["Cross-Origin-Opener-Policy"] == "same-origin"
        alice.stop_server()
