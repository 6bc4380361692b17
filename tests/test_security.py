"""Issue 16: files we write honour the umask (read without changing it), URIs are
written without their credentials, and the documented way to point the workflow at a
tracking server is one its config schema accepts."""
from __future__ import annotations

import os
import re
import subprocess
import threading

import pytest

from conftest import FMNIST_DEBIAN, REPO, flags, free_port, snakemake
from locallearn.atomic import atomic_write, atomic_write_bytes, atomic_write_text, current_umask
from locallearn.credentials import PASSWORD_VAR, USERNAME_VAR, redact_uri, take_credentials


@pytest.fixture
def umask():
    """Set the umask for one test (single-threaded here), restoring it after."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    assert current_umask() == mask
    for i, write in enumerate((lambda p: atomic_write_text(p, "x"),
                               lambda p: atomic_write_bytes(p, b"x"),
                               lambda p: atomic_write(p, lambda tmp: tmp.write_bytes(b"x")))):
        path = write(tmp_path / f"f{i}")
        assert (path.stat().st_mode & 0o777) == mode
    assert os.umask(mask) == mask           # reading it never changed it
    assert (atomic_write_text(tmp_path / "f0", "y").stat().st_mode & 0o777) == mode  # a rewrite too
    assert (atomic_write(tmp_path / "g", lambda t: t.write_text("z"), mode=0o600).stat().st_mode & 0o777) == 0o600


def test_umask_is_read_without_a_process_wide_change(umask):
    """A thread creating files while another reads the umask must never see it at 0."""
    umask(0o077)
    stop, seen = threading.Event(), set()

    def watch():
        while not stop.is_set():
            seen.add(current_umask())

    t = threading.Thread(target=watch)
    t.start()
    for _ in range(2000):
        current_umask()
    stop.set()
    t.join()
    assert seen == {0o077}
    sources = [p for p in (REPO / "locallearn").glob("*.py") if "os.umask(" in p.read_text()]
    assert sources == [], "no module may set the umask to read it"


def test_dataset_files_honour_the_umask(tmp_path, umask):
    """The data layer writes through atomic.py (its own writer is gone): the custom
    checksum file, and (where Debian's package is there) the imported and unpacked
    Fashion-MNIST files."""
    import locallearn.data.datafetch as datafetch
    import locallearn.data.datasets as datasets
    from fake_data import write_fake

    assert not hasattr(datasets, "_write_atomic") and not hasattr(datasets, "_umask")
    umask(0o027)
    write_fake("MNIST", tmp_path / "fake", n_train=20, n_test=10)
    assert (tmp_path / "fake" / datasets.CUSTOM_CHECKSUMS).stat().st_mode & 0o777 == 0o640
    if FMNIST_DEBIAN.is_dir():
        datafetch.prepare("FashionMNIST", tmp_path / "data", source=FMNIST_DEBIAN)
        written = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
        assert len(written) == 8 and {p.stat().st_mode & 0o777 for p in written} == {0o640}


@pytest.mark.parametrize("uri, clean", [
    ("http://user:secret@127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("https://user:s%40cret@host.example/mlflow?x=1", "https://host.example/mlflow?x=1"),
    ("http://token@host:5000/", "http://host:5000/"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("sqlite:////home/me/results/mlflow.db", "sqlite:////home/me/results/mlflow.db"),
    ("postgresql://me:secret@db/mlflow", "postgresql://db/mlflow"),
    ("", ""), (None, None), ("vgg8b", "vgg8b"), ("user@host", "user@host"),
])
def test_redact_uri(uri, clean):
    assert redact_uri(uri) == clean


def test_take_credentials_hands_them_to_mlflow(monkeypatch):
    monkeypatch.delenv(USERNAME_VAR, raising=False)
    monkeypatch.delenv(PASSWORD_VAR, raising=False)
    assert take_credentials("http://me:s%40cret@h:1/x") == "http://h:1/x"
    assert (os.environ[USERNAME_VAR], os.environ[PASSWORD_VAR]) == ("me", "s@cret")
    monkeypatch.setenv(PASSWORD_VAR, "from-env")   # the environment wins
    assert take_credentials("http://me:other@h:1") == "http://h:1"
    assert os.environ[PASSWORD_VAR] == "from-env"


def test_train_config_never_holds_a_uri_password(monkeypatch):
    from locallearn.recipe.config import recipe_dict

    monkeypatch.delenv(USERNAME_VAR, raising=False)
    monkeypatch.delenv(PASSWORD_VAR, raising=False)
    cfg = flags("--mlflow-uri", "http://me:secret@127.0.0.1:5000")
    assert cfg.mlflow_uri == "http://127.0.0.1:5000"
    assert "secret" not in repr(vars(cfg)) + repr(recipe_dict(cfg))
    assert os.environ[PASSWORD_VAR] == "secret"


@pytest.mark.slow
def test_documented_tracking_server_config_is_accepted(tmp_path):
    """The form the slurm profile and .ci/mlflow-server.sh tell users is accepted by
    the config schema (the old `mlflow_uri=` was not)."""
    documented = "--config 'mlflow={uri: http://tracking-host:5000}'"
    for doc in (REPO / "workflow" / "profiles" / "slurm" / "config.yaml", REPO / ".ci" / "mlflow-server.sh"):
        text = doc.read_text()
        assert "mlflow_uri=" not in text, doc
        assert re.sub(r"<uri>", "http://tracking-host:5000", text).count(documented) >= 1, doc
    def dry_run(config: str) -> subprocess.CompletedProcess:
        return snakemake(tmp_path, "-n", "quick", "--config", config)

    ok = dry_run(f"mlflow={{uri: http://127.0.0.1:{free_port()}}}")
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "tracking_init" in ok.stdout + ok.stderr
    old = dry_run("mlflow_uri=http://127.0.0.1:5000")
    assert old.returncode != 0 and "mlflow_uri" in old.stdout + old.stderr
