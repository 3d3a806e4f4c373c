# SPDX-License-Identifier: MIT
"""pytest's setup for the dirtyctl suites (tests/pytest.ini says which).

    pytest-3 --build-dir=BUILD [--probe-injection=true|false] tests/test-NAME.py[::TEST]

tests/meson.build runs each test of those files as a meson test of its own,
so that meson, and the totals line of scripts/test.sh, count every skip as a
skip: a run whose tests were all skipped exits 77.
"""
import os
import shutil
import tempfile

import pytest

import harness


def pytest_addoption(parser):
    parser.addoption("--build-dir", required=True,
                     help="the meson build directory: its tools/dirtyctl and tests/ programs")
    parser.addoption("--probe-injection", choices=("true", "false"), default="false",
                     help="the build honours the test hooks (meson -Dprobe_injection)")


def pytest_configure(config):
    harness.configure(config.getoption("--build-dir"),
                      config.getoption("--probe-injection") == "true")


@pytest.fixture(autouse=True)
def kill_what_the_test_started():
    """Every process a test started (and its session) ends with the test."""
    yield
    harness.kill_all()


@pytest.fixture
def workdir():
    """A fresh directory in the working directory (a disk file system, not
    /tmp), removed after the test once nothing it started can write there."""
    path = tempfile.mkdtemp(prefix="pytest-", dir=os.getcwd())
    yield path
    harness.kill_all()
    shutil.rmtree(path)


def pytest_sessionfinish(session, exitstatus):
    """All skipped, none failed: exit 77, meson's skip."""
    stats = session.config.pluginmanager.get_plugin("terminalreporter").stats
    if exitstatus == pytest.ExitCode.OK and stats.get("skipped") and not stats.get("passed"):
        session.exitstatus = 77
