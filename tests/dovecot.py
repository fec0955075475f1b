"""A private Dovecot IMAP server for tests: its own config, users and mail in a temp dir.

Dovecot refuses mail processes running as root, so the static userdb maps
every user to uid/gid 65534 and the mail directory is chowned to it. Two
listeners on loopback: plain IMAP (``port``) and implicit TLS (``tls_port``)
with a self-signed certificate for ``localhost`` and ``127.0.0.1``
(``cert_path``), made with the ``openssl`` command.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from mailbot.testing import ServiceMissingError, free_port

DOVECOT = Path("/usr/sbin/dovecot")
MAIL_UID = 65534
START_TIMEOUT = 20.0

_CONFIG = """\
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{dir}/cert.pem
ssl_key = <{dir}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:{dir}/mail/%u
mail_fsync = never
mailbox_idle_check_interval = 1 secs
shutdown_clients = yes
login_trusted_networks = 127.0.0.0/8
mail_max_userip_connections = 50
first_valid_uid = 1
first_valid_gid = 1
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={uid} home={dir}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"""


def _make_certificate(directory: Path) -> None:
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(directory / "key.pem"),
            "-out",
            str(directory / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )


class DovecotServer:
    """``dovecot -F -c FILE`` on two free loopback ports; ``users`` maps name to password.

    Give every user at start: Dovecot notices passwd-file changes only by their
    mtime in whole seconds, so users added later may be refused for a while.
    """

    def __init__(self, users: dict[str, str] | None = None) -> None:
        if not DOVECOT.exists():
            raise ServiceMissingError("Dovecot (Debian package dovecot-imapd) not found")
        if shutil.which("openssl") is None:
            raise ServiceMissingError("openssl command not found (for the test certificate)")
        self.users = users or {"support": "secret"}
        self.dir = Path(tempfile.mkdtemp(prefix="mailbot-dovecot-"))
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.tls_port = free_port()
        self.config = self.dir / "dovecot.conf"
        self.cert_path = self.dir / "cert.pem"
        (self.dir / "mail").mkdir()
        if os.geteuid() == 0:
            os.chown(self.dir / "mail", MAIL_UID, MAIL_UID)
        _make_certificate(self.dir)
        (self.dir / "passwd").write_text(
            "".join(f"{user}:{password}\n" for user, password in self.users.items())
        )
        self.config.write_text(
            _CONFIG.format(dir=self.dir, port=self.port, tls_port=self.tls_port, uid=MAIL_UID)
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(DOVECOT), "-F", "-c", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() ends every child
        )
        deadline = time.monotonic() + START_TIMEOUT
        for port in (self.port, self.tls_port):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"dovecot exited {self.proc.returncode}:\n{self.log()}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                        if port == self.port and not sock.recv(64).startswith(b"* OK"):
                            raise OSError("no greeting yet")
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"dovecot not listening:\n{self.log()}") from None
                    time.sleep(0.05)

    def stop_process(self) -> None:
        """Stop the server (the mail stays): connected clients see their connection drop."""
        if self.proc is None:
            return
        group = self.proc.pid  # the session leader's pid is the process group id
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        # mail processes outlive the master unless told: end them, as shutdown_clients does
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self.proc = None

    def restart(self) -> None:
        self.stop_process()
        self.start()

    def log(self) -> str:
        path = self.dir / "dovecot.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""

    def stop(self) -> None:
        self.stop_process()
        shutil.rmtree(self.dir, ignore_errors=True)
