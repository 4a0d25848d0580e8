"""The throwaway sshd on 127.0.0.2 that the SCOOP multi-host tests share (``sshd`` fixture)."""
import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

# CI sets this: there the two-host tests must run, so an sshd that cannot start fails them instead of skipping.
REQUIRED = os.environ.get("GP_LOSS_REQUIRE_SSHD") == "1"


def _sshd_module():
    spec = importlib.util.spec_from_file_location("loopback_sshd", Path(__file__).with_name("loopback_sshd.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def sshd(tmp_path_factory):
    """A running :class:`LoopbackSshd` (``tests/runtime/loopback_sshd.py``), stopped afterwards."""
    module = _sshd_module()
    server = module.LoopbackSshd(tmp_path_factory.mktemp("sshd"))
    try:
        server.start()
    except (module.Unavailable, OSError, subprocess.SubprocessError) as err:
        if REQUIRED:
            pytest.fail(f"GP_LOSS_REQUIRE_SSHD=1 but sshd cannot be started on 127.0.0.2: {err}")
        pytest.skip(f"sshd cannot be started on 127.0.0.2 ({err}); CI installs openssh-server")
    yield server
    server.stop()
