#!/usr/bin/python3
"""Checks that README.md works as typed, on a machine set up by scripts/setup.sh, after
`cargo build` (run by scripts/test.sh after the cargo tests):

- runs every ```sh block of README.md from the repository root, each in a fresh bash
  (`-e -o pipefail`) with no GST_PLUGIN_PATH, CONTROL_PLANE_URI or AWS_* variables but those the
  block sets itself. What cannot run here is replaced, and each replacement is written below
  (`sub`) and printed: a camera becomes a live test source, AWS becomes a kvs-local started for
  the block (CONTROL_PLANE_URI and its demo keys), `sudo` into /usr becomes a DESTDIR, files the
  blocks write go to a temporary directory, HOME is a temporary directory for the per-user
  install. Every block must match exactly one rule below, and every rule one block;
- checks what each block produced: acknowledgements, the stored video being H.264 but not
  High 4:4:4, the meson install landing where GStreamer finds it;
- checks that the ```python block is examples/stream.py, byte for byte;
- checks that scripts/setup.sh's `elements` lists every element the README, scripts/,
  pipelines/, examples/, tests and benches use;
- runs scripts/demo.sh as CI would (CI=true, no terminal) and checks that it streamed and decoded.
"""

import glob
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
KVS_LOCAL = RELEASE / "kvs-local"
DEMO_KEYS = {
    "AWS_ACCESS_KEY_ID": "KVSLOCALDEMOACCESSKEY",
    "AWS_SECRET_ACCESS_KEY": "kvs-local-demo-secret-key",
}
# A camera is replaced by this (the README's lines use v4l2src).
CAMERA_STANDIN = "videotestsrc is-live=true num-buffers=90"
# Commands that, at the start of an indented or unmarked block, mean it should be a ```sh block.
COMMANDS = re.compile(
    r"^(gst-launch-1\.0|gst-inspect-1\.0|cargo|meson|\./scripts/|scripts/|python3|/usr/bin/python3"
    r"|export|target/)"
)


def fail(msg):
    print(f"check-readme: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def say(msg):
    print(f"check-readme: {msg}", flush=True)


def blocks(text):
    """(heading, language, body) of every fenced block; fails on commands outside ```sh."""
    heading, found, lines, i = "", [], text.splitlines(keepends=True), 0
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"```(\w*)\s*$", line)
        if fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            found.append((heading, fence.group(1), "".join(lines[i + 1 : end])))
            i = end
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("    ") and COMMANDS.match(line.strip()):
            fail(f"under '{heading}', an indented command is not checked; mark it ```sh: {line.strip()}")
        i += 1
    return found


def sub(body, old, new, why):
    """Replaces every `old` in a block by `new`; `old` must be there."""
    if old not in body:
        fail(f"expected {old!r} in the block:\n{body}")
    say(f"  replacing {old!r} with {new!r}: {why}")
    return body.replace(old, new)


def base_env():
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith(("AWS_", "GST_", "XDG_")) or k in ("CONTROL_PLANE_URI", "CARGO_TARGET_DIR"))
    }
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bash(script, env, timeout):
    """Runs `script` from the repository root; returns its output, fails when it fails. Whatever
    it started and left running (a `... &` before a failure) is stopped with it."""
    proc = subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        fail(f"timed out after {timeout} s:\n{script}\n--- output ---\n{out[-4000:]}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    if proc.returncode != 0:
        fail(f"exit status {proc.returncode}:\n{script}\n--- output ---\n{out[-4000:]}")
    return out


class KvsLocal:
    """kvs-local on a free port, standing in for AWS."""

    def __init__(self, work, name):
        self.data = work / f"data-{name}"
        self.work = work
        self.proc = subprocess.Popen(
            [KVS_LOCAL, "--port", "0", "--data-dir", self.data],
            stdout=subprocess.PIPE,
            stderr=open(work / f"kvs-local-{name}.log", "w"),
            text=True,
        )
        line = self.proc.stdout.readline()
        url = re.search(r"http://[0-9.:]+", line)
        if not url:
            fail(f"kvs-local did not start: {line!r}")
        self.url = url.group(0)

    def env(self, plugin_path=True):
        """The environment a user pointing kvssink at AWS would have, pointed at kvs-local."""
        env = base_env() | DEMO_KEYS | {"CONTROL_PLANE_URI": self.url}
        if plugin_path:
            env["GST_PLUGIN_PATH"] = str(RELEASE)
        return env

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def assert_plays(discoverer_output, what):
    """The video is H.264 that browsers, HLS and the console play: not High 4:4:4."""
    if "H.264" not in discoverer_output or "4:4:4" in discoverer_output:
        fail(f"{what} is not H.264 that plays everywhere:\n{discoverer_output}")


def assert_stored(server, stream):
    out_file = server.work / f"{stream}-{server.data.name}.mkv"
    bash(
        f"{shlex.quote(str(KVS_LOCAL))} export --data-dir {shlex.quote(str(server.data))} "
        f"--stream {stream} {shlex.quote(str(out_file))}",
        base_env(),
        60,
    )
    assert_plays(bash(f"gst-discoverer-1.0 {shlex.quote(str(out_file))}", base_env(), 60), f"stream {stream}")


def against_aws(streams, plugin_path=True, camera=True):
    """A block written for AWS (and a camera): run against kvs-local, then check what it stored."""

    def rule(body, work, name):
        if camera:
            body = sub(body, "v4l2src", CAMERA_STANDIN, "no camera here")
        server = KvsLocal(work, name)
        say(f"  with CONTROL_PLANE_URI={server.url} and kvs-local's demo keys: kvs-local stands in for AWS")
        try:
            out = bash(body, server.env(plugin_path), 300)
            for stream in streams:
                assert_stored(server, stream)
        finally:
            server.stop()
        return out

    return rule


def cargo_build(body, work, name):
    out = bash(body, base_env(), 1800)
    if "kvssink" not in out:
        fail(f"gst-inspect-1.0 kvssink did not describe kvssink:\n{out[-2000:]}")


def meson_user(body, work, name):
    home = work / "home"
    body = sub(body, "setup build", f"setup {work}/build-user", "build in a temporary directory")
    body = sub(body, "-C build", f"-C {work}/build-user", "build in a temporary directory")
    say(f"  with HOME={home}: installs into a temporary home, not yours")
    say(f"  with CARGO_TARGET_DIR={ROOT / 'target'}: reuses the release build above")
    env = base_env() | {
        "HOME": str(home),
        "CARGO_HOME": os.environ.get("CARGO_HOME", str(Path.home() / ".cargo")),
        "RUSTUP_HOME": os.environ.get("RUSTUP_HOME", str(Path.home() / ".rustup")),
        "CARGO_TARGET_DIR": str(ROOT / "target"),
    }
    out = bash(body, env, 900)
    found = re.search(r"Filename\s+(\S+)", out)
    expected = home / ".local/share/gstreamer-1.0/plugins/libgstkvs.so"
    if not found or Path(found.group(1)) != expected:
        fail(f"gst-inspect-1.0 kvssink did not find the installed {expected}:\n{out[-3000:]}")
    assert_optimised(expected)


def meson_system(body, work, name):
    root = work / "root"
    body = sub(body, "setup build", f"setup {work}/build-system", "build in a temporary directory")
    body = sub(body, "-C build", f"-C {work}/build-system", "build in a temporary directory")
    body = sub(body, "sudo meson install", f"DESTDIR={root} meson install", "no writing into /usr here")
    say(f"  with CARGO_TARGET_DIR={ROOT / 'target'}: reuses the release build above")
    bash(body, base_env() | {"CARGO_TARGET_DIR": str(ROOT / "target")}, 900)
    pluginsdir = subprocess.run(
        ["pkg-config", "--variable=pluginsdir", "gstreamer-1.0"], capture_output=True, text=True, check=True
    ).stdout.strip()
    installed = Path(f"{root}{pluginsdir}/libgstkvs.so")
    if not installed.is_file():
        fail(f"meson did not install into GStreamer's plugin directory {pluginsdir}: no {installed}")
    if "kvssink" not in bash(f"gst-inspect-1.0 {shlex.quote(str(installed))}", base_env(), 60):
        fail(f"gst-inspect-1.0 {installed} does not show kvssink")
    assert_optimised(installed)


def assert_optimised(so):
    size = so.stat().st_size
    if size > 40_000_000:
        fail(f"{so} is {size} bytes: a debug build, not an optimised one")
    say(f"  installed {so} ({size} bytes)")


def against_kvs_local(body, work, name):
    port = str(free_port())
    body = sub(body, "4566", port, "a port free on this machine")
    body = sub(body, "./kvs-data", f"{work}/kvs-data", "files go to a temporary directory")
    body = sub(body, "demo.mkv", f"{work}/demo.mkv", "files go to a temporary directory")
    out = bash(body, base_env(), 1800)
    if "PERSISTED" not in out:
        fail(f"no PERSISTED acknowledgement printed:\n{out[-3000:]}")
    assert_plays(out[out.rfind("Analyzing") :], "the exported demo.mkv")


def launch_lines(body, work, name):
    body = sub(body, "demo.mkv", f"{work}/demo.mkv", "the file the kvs-local section exported")
    camera = re.search(r"^scripts/launch\.sh camera .*$", body, re.M).group(0)
    body = sub(
        body,
        camera,
        f"gst-launch-1.0 -e -m $({camera.replace('launch.sh', 'launch.sh --print', 1)}"
        f" | sed 's/v4l2src device=[^ ]*/{CAMERA_STANDIN}/')",
        "no camera here",
    )
    return against_aws(["demo", "av", "replay", "cam1"], camera=False)(body, work, name)


def official_audio_video(body, work, name):
    body = sub(body, "alsasrc", "audiotestsrc is-live=true num-buffers=130", "no microphone here")
    return against_aws(["cam1"])(body, work, name)


def python_example(body, work, name):
    out = against_aws(["cam1"], plugin_path=False, camera=False)(body, work, name)
    if "PERSISTED" not in out or "summary: all-persisted" not in out:
        fail(f"examples/stream.py did not print PERSISTED acks and its summary:\n{out[-3000:]}")


def debug_dump(body, work, name):
    body = sub(body, "kvs-dump", f"{work}/kvs-dump", "files go to a temporary directory")
    out = against_aws(["cam1"])(body, work, name)
    assert_plays(out[out.rfind("Analyzing") :], "the PutMedia body dumped to KVS_DEBUG_DUMP_DATA_FILE_DIR")


# (heading starts with, first line starts with) -> what to do with the block.
RULES = {
    ("kvssink —", "gst-launch-1.0 v4l2src"): against_aws(["cam1"]),
    ("Building and installing", "cargo build --release"): cargo_build,
    ("Building and installing", "meson setup build -Dplugindir="): meson_user,
    ("Building and installing", "meson setup build --prefix=/usr"): meson_system,
    ("Against kvs-local", "cargo build --release"): against_kvs_local,
    ("Against AWS", "gst-launch-1.0 -e v4l2src"): against_aws(["cam1"]),
    ("Coming from AWS's kvssink", "gst-launch-1.0 -e v4l2src"): official_audio_video,
    ("From Python", "GST_PLUGIN_PATH="): python_example,
    ("The launch lines in", "scripts/launch.sh"): launch_lines,
    ("Debugging", "mkdir -p kvs-dump"): debug_dump,
}


def check_elements():
    """Every element used in a launch line somewhere is in setup.sh's `elements`."""
    setup = (ROOT / "scripts/setup.sh").read_text()
    listed = {e.split(":")[0] for e in re.search(r"^elements=\((.*?)^\)", setup, re.S | re.M).group(1).split()}
    installed = set(
        re.findall(
            r"^(?!typefindfunctions)[\w-]+:\s+([a-z][a-z0-9_]*):",
            subprocess.run(["gst-inspect-1.0"], capture_output=True, text=True, check=True).stdout,
            re.M,
        )
    )
    files = ["README.md", "scripts/*.sh", "pipelines/*.launch", "examples/*", "benches/**/*.rs"]
    files += [f"{d}/**/*.{ext}" for d in ("tests", "kvs-local/tests") for ext in ("rs", "py", "sh")]
    used = {}
    for pattern in files:
        for path in glob.glob(str(ROOT / pattern), recursive=True):
            if not Path(path).is_file() or "__pycache__" in path:
                continue
            text = re.sub(r"\\\n\s*", " ", Path(path).read_text())
            names = re.findall(r"!\s*\"?\s*([a-z][a-z0-9_]*)", text)
            names += re.findall(r"([a-z][a-z0-9_]*)(?:\s+[a-z][a-z0-9-]*=\S+)*\s*!", text)
            names += re.findall(r"ElementFactory::make\(\"([a-z0-9_]+)\"\)", text)
            for n in set(names) & installed - {"kvssink", "kvssrc"}:
                used.setdefault(n, Path(path).relative_to(ROOT))
    missing = sorted(n for n in used if n not in listed)
    if missing:
        fail("scripts/setup.sh's elements does not list " + ", ".join(f"{n} (used in {used[n]})" for n in missing))
    say(f"setup.sh lists all {len(used)} elements used: {' '.join(sorted(used))}")


def main():
    readme = (ROOT / "README.md").read_text()
    check_elements()
    found = blocks(readme)
    python = [body for heading, lang, body in found if lang == "python"]
    if python != [(ROOT / "examples/stream.py").read_text()]:
        fail("README's ```python block must be examples/stream.py, verbatim")
    say("README's Python block is examples/stream.py")
    # The README's first block already needs the release build its later sections make.
    say("building kvssink and kvs-local (release) for the blocks that come before their build")
    # One package per cargo invocation, as in the README: building both at once would unify their
    # dependencies' features differently and build them a second time.
    bash("cargo build --release --locked && cargo build --release --locked -p kvs-local", base_env(), 1800)
    used = set()
    with tempfile.TemporaryDirectory(prefix="check-readme-") as tmp:
        work = Path(tmp)
        for n, (heading, lang, body) in enumerate(found):
            if lang == "python":
                continue
            if lang != "sh" and any(COMMANDS.match(line) for line in body.splitlines()):
                fail(f"under '{heading}', a ```{lang} block holds commands; mark it ```sh:\n{body}")
            if lang != "sh":
                continue
            first = body.splitlines()[0]
            keys = [k for k in RULES if heading.startswith(k[0]) and first.startswith(k[1])]
            if len(keys) != 1:
                fail(f"no rule (or more than one) in scripts/check-readme.py for the block under '{heading}':\n{body}")
            if keys[0] in used:
                fail(f"two blocks under '{heading}' match one rule; give each its own")
            used.add(keys[0])
            say(f"block {n} under '{heading}': {first}")
            RULES[keys[0]](body, work, str(n))
            say(f"block {n}: ok")
        if unused := set(RULES) - used:
            fail(f"rules that match no README block (remove them): {sorted(unused)}")

    say("scripts/demo.sh, as CI runs it (CI=true, no terminal)")
    out = bash("CI=true bash scripts/demo.sh", base_env(), 1200)
    for expected in ("PERSISTED", "the stored video decodes from start to end"):
        if expected not in out:
            fail(f"scripts/demo.sh did not print {expected!r}:\n{out[-3000:]}")
    say("all README command blocks and the demo work")


if __name__ == "__main__":
    main()
