"""A throwaway sshd on a loopback address, as a second "host" for SCOOP (tests and ``.ci/run``).

Everything lives in one directory: host key, client key, authorized_keys, sshd_config and an
``ssh`` wrapper that adds the key and port (give it to SCOOP with ``--ssh-executable``).
Nothing is written to ``~/.ssh``; traffic stays on loopback addresses.

``python tests/runtime/loopback_sshd.py --check`` starts one, logs in through it and stops it:
exit 0, or 1 with the reason on one line.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")


class Unavailable(RuntimeError):
    """sshd cannot be started here (the reason is the message)."""


def _sshd() -> str:
    for path in SSHD_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("sshd")
    if found:
        return found
    raise Unavailable("no sshd (install openssh-server: apt-get install openssh-server)")


def _free_port(address: str) -> int:
    with socket.socket() as s:
        try:
            s.bind((address, 0))
        except OSError as err:
            raise Unavailable(f"cannot bind {address}: {err}") from None
        return s.getsockname()[1]


class LoopbackSshd:
    """An sshd listening on ``address`` (default 127.0.0.2); ``ssh`` is the wrapper to log in with."""

    def __init__(self, directory: Path, address: str = "127.0.0.2"):
        self.dir = Path(directory)
        self.address = address
        self.proc: subprocess.Popen | None = None
        self.ssh = self.dir / "ssh"

    def start(self, timeout: float = 10.0) -> "LoopbackSshd":
        sshd = _sshd()
        if not shutil.which("ssh") or not shutil.which("ssh-keygen"):
            raise Unavailable("no ssh client or ssh-keygen (install openssh-client)")
        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        for name in ("host_key", "client_key"):
            if not (d / name).exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True,
                               capture_output=True)
        shutil.copy(d / "client_key.pub", d / "authorized_keys")
        if os.geteuid() == 0:  # the privilege-separation directory Debian's package makes at boot
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        port = _free_port(self.address)
        (d / "sshd_config").write_text(
            f"Port {port}\nListenAddress {self.address}\nHostKey {d / 'host_key'}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile {d / 'sshd.pid'}\n"
            "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "PermitRootLogin prohibit-password\nAllowTcpForwarding yes\nX11Forwarding no\n"
            "PrintMotd no\nMaxStartups 50\n")
        self.ssh.write_text(
            "#!/bin/sh\n"
            f"exec ssh -i {d / 'client_key'} -p {port} -oIdentitiesOnly=yes -oBatchMode=yes "
            "-oStrictHostKeyChecking=no -oUserKnownHostsFile=/dev/null -oLogLevel=ERROR \"$@\"\n")
        self.ssh.chmod(0o755)
        log = open(d / "sshd.log", "w")
        self.proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise Unavailable(f"sshd exited with {self.proc.returncode}: "
                                  + " ".join((d / "sshd.log").read_text().split())[-300:])
            probe = subprocess.run([str(self.ssh), self.address, "echo", "ok"], capture_output=True, text=True,
                                   timeout=timeout)
            if probe.stdout.strip() == "ok":
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise Unavailable(f"cannot log in to sshd on {self.address}: "
                                  + " ".join((probe.stderr or "").split())[-300:])
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "LoopbackSshd":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    if sys.argv[1:] != ["--check"]:
        sys.exit("usage: python tests/runtime/loopback_sshd.py --check")
    with tempfile.TemporaryDirectory(prefix="gp-loss-sshd-") as tmp:
        try:
            with LoopbackSshd(Path(tmp)) as sshd:
                print(f"sshd on {sshd.address}: logged in")
        except (Unavailable, OSError, subprocess.SubprocessError) as err:
            print(f"sshd cannot be started: {err}")
            sys.exit(1)
