"""In-cluster API access for the process-kubelet's pods, the way a real node provides it.

A pod on a real cluster reaches the API server at
``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` (the ``kubernetes`` Service in
``default``), trusts the cluster CA in ``/var/run/secrets/kubernetes.io/serviceaccount/ca.crt``
and sends the ServiceAccount token next to it; ``namespace`` there names the pod's namespace.
The kubelet sets the variables in every container and mounts the three files (the projected
``kube-api-access-*`` volume) unless ``automountServiceAccountToken`` is false on the pod or,
when the pod leaves it unset, on its ServiceAccount. That is what ``kubernetes.config.
load_incluster_config()`` and ``rest.InClusterConfig`` read.

The token is the pod's ServiceAccount's, from the TokenRequest API, and the emulator
authorises it with RBAC from the Roles and bindings it stores.

One thing differs from a real cluster, because of the emulator: it speaks plain HTTP, and
in-cluster clients only speak HTTPS. :class:`ApiTlsFront` is an HTTPS endpoint on 127.0.0.1
with a CA made for this run; it forwards every request unchanged (watch streams included)
and answers exactly what the emulator answers.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import ssl
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# The name a real API server's admission gives the projected volume (plus a random suffix).
SERVICE_ACCOUNT_VOLUME = "kube-api-access"
API_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
# Request headers that mean something to the API server; hop-by-hop ones stay here.
_FORWARDED_REQUEST = ("authorization", "content-type", "accept", "user-agent")
_FORWARDED_RESPONSE = ("content-type", "cache-control", "audit-id", "warning")
# A CA's key signs certificates and revocation lists and nothing else (RFC 5280, 4.2.1.3).
_CA_KEY_USAGE = {
    usage: usage in ("key_cert_sign", "crl_sign")
    for usage in (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
}


def make_certificates(host: str) -> tuple[bytes, bytes, bytes]:
    """(CA certificate, server certificate, server key) in PEM, the server's valid for
    ``host`` and the ``kubernetes`` Service names, as a cluster's API server certificate is."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "process-kubelet-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(**_CA_KEY_USAGE), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in API_NAMES]
    names.append(x509.IPAddress(ipaddress.ip_address(host)))
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ca.public_bytes(pem), server.public_bytes(pem), key_pem


class ApiTlsFront:
    """The API server as pods see it: HTTPS on ``host``, forwarding to the emulator's URL.

    Runs on the kubelet's event loop (:meth:`start`/:meth:`stop` are coroutines).
    """

    def __init__(self, upstream: str, workdir: str | os.PathLike[str], host: str = "127.0.0.1"):
        self.upstream = upstream.rstrip("/")
        self.workdir = workdir
        self.host = host
        self.port = 0
        self.ca_pem = b""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def _server_context(self) -> ssl.SSLContext:
        self.ca_pem, cert_pem, key_pem = make_certificates(self.host)
        os.makedirs(self.workdir, mode=0o700, exist_ok=True)
        cert_file = os.path.join(self.workdir, "apiserver.crt")
        key_file = os.path.join(self.workdir, "apiserver.key")
        with open(cert_file, "wb") as f:
            f.write(cert_pem)
        with open(os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(key_pem)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        return context

    async def start(self) -> int:
        context = self._server_context()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=5), auto_decompress=False
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        # handler_cancellation: a watch whose client went away ends its upstream watch too.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def service_env(self) -> dict[str, str]:
        """The variables a kubelet sets in every container for the ``kubernetes`` Service
        (it does so whatever ``enableServiceLinks`` says)."""
        host, port = self.host, str(self.port)
        prefix = f"KUBERNETES_PORT_{port}_TCP"
        return {
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://{host}:{port}",
            prefix: f"tcp://{host}:{port}",
            f"{prefix}_PROTO": "tcp",
            f"{prefix}_PORT": port,
            f"{prefix}_ADDR": host,
        }

    def service_account_files(self, token: str, namespace: str) -> dict[str, bytes]:
        """The files of the projected ``kube-api-access`` volume."""
        return {
            "token": token.encode(),
            "ca.crt": self.ca_pem,
            "namespace": namespace.encode(),
        }

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED_REQUEST}
        body = await request.read()
        url = URL(self.upstream + request.raw_path, encoded=True)
        try:
            upstream = await self._session.request(
                request.method, url, data=body or None, headers=headers
            )
        except aiohttp.ClientError as exc:
            log.warning("in-cluster API front: %s %s failed: %s", request.method, url, exc)
            return web.Response(status=503, text="the API server did not answer")
        response = web.StreamResponse(
            status=upstream.status,
            headers={k: v for k, v in upstream.headers.items() if k.lower() in _FORWARDED_RESPONSE},
        )
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            return response
        finally:
            upstream.release()


def automount_token(pod: dict[str, Any], service_account: dict[str, Any] | None) -> bool:
    """Whether the pod gets the ServiceAccount token: the pod's own setting wins, then the
    ServiceAccount's, and both default to yes."""
    setting = pod["spec"].get("automountServiceAccountToken")
    if setting is None and service_account is not None:
        setting = service_account.get("automountServiceAccountToken")
    return setting is not False
