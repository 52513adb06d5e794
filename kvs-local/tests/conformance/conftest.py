"""Fixtures: the kvs-local binary on a free port, a small MKV made by
GStreamer, and boto3 clients pointed at kvs-local with `endpoint_url`."""

import pytest

import kvsclient


@pytest.fixture(scope="session")
def mkv(tmp_path_factory):
    """(file bytes, stream header, [(timecode, cluster bytes)])."""
    path = tmp_path_factory.mktemp("mkv") / "sample.mkv"
    data = kvsclient.make_mkv(path)
    header, clusters = kvsclient.split_mkv(data)
    assert len(clusters) >= 3, len(clusters)
    assert header + b"".join(c for _, c in clusters) == data
    return data, header, clusters


@pytest.fixture
def start(tmp_path):
    """start(*flags) -> KvsLocal; every server is stopped at the end."""
    servers = []

    def _start(*flags):
        s = kvsclient.KvsLocal(tmp_path / f"data{len(servers)}", *flags)
        servers.append(s)
        return s

    yield _start
    for s in servers:
        if not s.stopped:
            s.proc.kill()
            s.proc.wait()


@pytest.fixture
def kvs(start):
    """kvs-local with no flag beyond --port (and a data dir)."""
    return start()

