"""The training rule through SLURM: a real one-node cluster on localhost, Snakemake's SLURM executor
plugin and profiles/slurm.

It installs Debian's munge/slurm packages and starts root daemons (munged, slurmctld, slurmd), so it
runs only when FACEVAE_SLURM_TEST=1 (.ci/run sets it) and skips with that reason elsewhere. Every
file (slurm.conf via SLURM_CONF, gres.conf, munge key and socket, spool, state, logs) lives in one
temporary folder -- except one symlink, /etc/slurm/slurm.conf -> that slurm.conf, made only when no
such file exists and removed afterwards: the executor plugin's job step drops every SLURM_* variable
(SLURM_CONF too) before its nested srun, which then only finds the default path. The daemons run in
the foreground as our children and are stopped by their PIDs.
The node has no GPU: it advertises a fake ``gres/gpu`` backed by a character device, so the
profile's one-GPU request for train_vae is scheduled as on a real GPU partition.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from support.media import REPO
from support.timeouts import hang_guard

ENABLED = os.environ.get("FACEVAE_SLURM_TEST") == "1"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ENABLED, reason="the SLURM test installs packages and starts root daemons: set FACEVAE_SLURM_TEST=1 (.ci/run does)"),
]

PACKAGES = ["munge", "slurmctld", "slurmd", "slurm-client"]


def _run(cmd, timeout=120, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def install_packages() -> None:
    if all(shutil.which(tool) for tool in ("munged", "slurmctld", "slurmd", "sbatch", "squeue")):
        return
    if os.geteuid() != 0:
        pytest.fail("the SLURM test needs root to install packages and start daemons")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        result = _run(cmd, timeout=hang_guard(600), env=env)
        assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


class OneNodeCluster:
    """munged + slurmctld + slurmd on this host, everything under ``root``; use as a context manager."""

    def __init__(self, root: Path):
        self.root = root
        self.host = socket.gethostname().split(".")[0]
        self.procs: list[subprocess.Popen] = []
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.default_conf = Path("/etc/slurm/slurm.conf")
        self.linked = False

    def write_files(self) -> None:
        r = self.root
        for sub in ("state", "spool", "log", "dev"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        munge = r / "munge"
        munge.mkdir(exist_ok=True)
        os.chmod(munge, 0o755)  # munged wants its socket folder searchable by all, not writable by them
        (munge / "munge.key").write_bytes(os.urandom(1024))
        os.chmod(munge / "munge.key", 0o400)
        shutil.chown(munge, "munge", "munge")
        shutil.chown(munge / "munge.key", "munge", "munge")
        fake_gpu = r / "dev" / "gpu0"
        subprocess.run(["mknod", str(fake_gpu), "c", "1", "3"], check=True)  # like /dev/null: gres needs a device
        cpus = os.cpu_count() or 1
        (r / "gres.conf").write_text(f"NodeName={self.host} Name=gpu File={fake_gpu}\n")
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=facevae-test",
                    f"SlurmctldHost={self.host}",
                    "SlurmUser=root",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={munge / 'munge.socket'}",
                    f"StateSaveLocation={r / 'state'}",
                    f"SlurmdSpoolDir={r / 'spool'}",
                    f"SlurmctldPidFile={r / 'slurmctld.pid'}",
                    f"SlurmdPidFile={r / 'slurmd.pid'}",
                    f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
                    "SlurmctldPort=16817",
                    "SlurmdPort=16818",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU_Memory",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/none",
                    "MpiDefault=none",
                    "ReturnToService=2",
                    # squeue (the profile's status command) must still see finished jobs: >= 3x the
                    # profile's slurm-init-seconds-before-status-checks.
                    "MinJobAge=300",
                    "GresTypes=gpu",
                    f"NodeName={self.host} CPUs={cpus} RealMemory={_memory_mb() - 512} Gres=gpu:1 State=UNKNOWN",
                    "PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def _start(self, cmd: list[str], log: str) -> subprocess.Popen:
        handle = open(self.root / "log" / log, "w")
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=self.env)
        self.procs.append(proc)
        return proc

    def __enter__(self) -> "OneNodeCluster":
        self.write_files()
        if self.default_conf.exists() or self.default_conf.is_symlink():
            pytest.skip(f"{self.default_conf} exists: this machine has its own SLURM setup, which the test must not touch")
        self.default_conf.parent.mkdir(parents=True, exist_ok=True)
        self.default_conf.symlink_to(self.conf)
        self.linked = True
        munge = self.root / "munge"
        # munged as user munge, in the foreground (setpriv execs: the PID is munged's own).
        self._start(["setpriv", "--reuid=munge", "--regid=munge", "--init-groups", "munged", "--foreground",
                     f"--key-file={munge / 'munge.key'}", f"--socket={munge / 'munge.socket'}",
                     f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
                     f"--seed-file={munge / 'munged.seed'}"], "munged.out")
        self._wait(lambda: (munge / "munge.socket").exists(), 30, "munged socket")
        self._start(["slurmctld", "-D", "-i", "-f", str(self.conf)], "slurmctld.out")
        self._wait(lambda: _run(["scontrol", "ping"], env=self.env).stdout.count("UP") > 0, 60, "slurmctld")
        self._start(["slurmd", "-D", "-f", str(self.conf)], "slurmd.out")
        self._wait(self._node_idle, 90, "the node to become idle")
        return self

    def _node_idle(self) -> bool:
        state = _run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env).stdout.strip()
        if state.startswith(("down", "drain", "unknown")):
            _run(["scontrol", "update", f"nodename={self.host}", "state=resume"], env=self.env)
        return state.startswith("idle")

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise AssertionError(f"{proc.args[0]} exited ({proc.returncode}) while waiting for {what}:\n{self.logs()}")
            if ready():
                return
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}:\n{self.logs()}")

    def logs(self) -> str:
        text = []
        for path in sorted((self.root / "log").glob("*")) + [self.root / "munge" / "munged.log"]:
            if path.is_file() and path.stat().st_size:
                text.append(f"--- {path.name}\n{path.read_text()[-2000:]}")
        return "\n".join(text)

    def __exit__(self, *exc) -> None:
        # Cancel what is left (a timed-out run's jobs), so no job step outlives the daemons.
        if self.procs and self.procs[-1].poll() is None:
            _run(["scancel", "--full", "--user=root"], env=self.env, timeout=30)
            deadline = time.monotonic() + 60
            while _run(["squeue", "-h"], env=self.env, timeout=30).stdout.strip() and time.monotonic() < deadline:
                time.sleep(1)
        for proc in reversed(self.procs):  # slurmd, slurmctld, munged: by PID, never by name
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self.linked:
            self.default_conf.unlink(missing_ok=True)


@pytest.fixture
def slurm_root():
    # Not pytest's tmp_path: that folder is private to root (0700) and munged runs as user munge.
    root = Path(tempfile.mkdtemp(prefix="facevae-slurm-"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_training_rule_runs_through_the_slurm_profile(pipeline, slurm_root):
    install_packages()
    faces = pipeline["workdir"] / "results/faces/d10.h5"
    work = slurm_root / "work"
    work.mkdir()
    config = {"actors": {"s": {"dataset": str(faces)}},
              "train": {"model": "blog", "latent_dim": 8, "epochs": 1, "min_steps": 0, "batch_size": 32, "checkpoint_minutes": 0}}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    with OneNodeCluster(slurm_root) as cluster:
        cmd = [str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
               "--configfile", str(work / "config.yaml"), "--profile", str(REPO / "profiles/slurm"),
               "--slurm-logdir", str(slurm_root / "log" / "jobs"), "--slurm-keep-successful-logs",
               # what a user of small nodes does: no job may ask for more CPUs than a node has
               "--max-threads", str(os.cpu_count() or 1), "results/models/s/model.pt"]
        start = time.monotonic()
        try:
            result = _run(cmd, timeout=hang_guard(600), env=cluster.env, cwd=work)
        except subprocess.TimeoutExpired as err:
            raise AssertionError(f"snakemake through SLURM did not finish in 600 s:\n{cluster.logs()}") from err
        seconds = time.monotonic() - start
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{output[-5000:]}\n{cluster.logs()}"
        # the training job really went through SLURM, asking for the profile's GPU
        found = re.search(r"SLURM jobid (\d+) \(log: \S*rule_train_vae", output)
        assert found, output[-3000:]
        job = _run(["scontrol", "show", "job", found.group(1)], env=cluster.env).stdout
    print(f"SLURM run: {seconds:.0f} s")
    assert "JobState=COMPLETED" in job, job
    assert re.search(r"gpu[:=]1", job), f"the training job did not ask for a GPU:\n{job}"
    assert (work / "results/models/s/model.pt").stat().st_size > 0
