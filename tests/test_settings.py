import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from app import runner
from app.settings import Settings, SettingsError


def test_every_setting_reads_its_environment_variable():
    settings = Settings.from_env(
        {
            "VOCALIS_PORT": "9001",
            "VOCALIS_DATA_DIR": "/srv/vocalis",
            "VOCALIS_MODEL_DIR": "/models",
            "VOCALIS_NATS_URL": "nats://nats:4222",
            "VOCALIS_API_KEY": "k",
            "VOCALIS_MAX_SESSION_S": "60",
        }
    )
    assert settings.port == 9001
    assert settings.data_dir == Path("/srv/vocalis")
    assert settings.models_path == Path("/models")
    assert settings.nats_url == "nats://nats:4222"
    assert (settings.api_key, settings.max_session_s) == ("k", 60)


def test_workers_are_the_kinds_serve_runs():
    assert Settings.from_env({}).worker_kinds == ("stt", "llm", "tts", "analytics")
    assert Settings.from_env({"VOCALIS_WORKERS": " STT, stt ,analytics"}).worker_kinds == ("stt", "analytics")


def test_flags_override_the_environment():
    settings = Settings.from_env({"VOCALIS_PORT": "9001", "VOCALIS_HOST": "0.0.0.0"}, port=8123, host=None)
    assert (settings.port, settings.host) == (8123, "0.0.0.0")


def test_defaults():
    settings = Settings.from_env({})
    assert (settings.host, settings.port, settings.stt_model, settings.max_session_s) == (
        "127.0.0.1",
        8000,
        "whisper-base",
        3600,
    )
    assert settings.nats_url is None and settings.api_key is None
    assert settings.models_path == settings.data_dir / "models"


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("VOCALIS_PORT", "abc", "VOCALIS_PORT='abc': expected a whole number"),
        ("VOCALIS_PORT", "70000", "VOCALIS_PORT=70000: a port is 0 to 65535"),
        ("VOCALIS_LOG_LEVEL", "verbose", "VOCALIS_LOG_LEVEL='verbose': use one of debug, info, warning, error"),
        ("VOCALIS_STT_DEVICE", "tpu", "VOCALIS_STT_DEVICE='tpu': use one of auto, cpu, cuda"),
        ("VOCALIS_MAX_SESSION_S", "0", "VOCALIS_MAX_SESSION_S=0: must be above 0"),
        ("VOCALIS_STT_LANES", "-1", "VOCALIS_STT_LANES=-1: 0 (the device's default) or more"),
        ("VOCALIS_WORKERS", "stt,gpu", "VOCALIS_WORKERS='stt,gpu': a comma-separated list of stt, llm, tts, analytics"),
        ("VOCALIS_WORKERS", ",", "VOCALIS_WORKERS=',': a comma-separated list of stt, llm, tts, analytics"),
    ],
)
def test_a_bad_setting_is_one_line_naming_its_variable(variable, value, says):
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({variable: value})
    assert str(refused.value) == says
    cli = subprocess.run(
        [sys.executable, "-m", "app", "sessions"], env=os.environ | {variable: value}, capture_output=True, text=True
    )
    assert (cli.returncode, cli.stderr.strip()) == (2, f"vocalis: {says}")


def test_version():
    cli = subprocess.run([sys.executable, "-m", "app", "--version"], capture_output=True, text=True)
    assert cli.returncode == 0 and cli.stdout.strip() == f"vocalis {version('vocalis')}"


def test_every_data_dir_shares_one_model_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    first = Settings.from_env({"VOCALIS_DATA_DIR": "/srv/a"})
    second = Settings.from_env({"VOCALIS_DATA_DIR": "/srv/b"})
    assert first.models_path == second.models_path == tmp_path / "vocalis" / "models"


def test_models_list_says_what_is_not_prepared_yet(tmp_path):
    env = os.environ | {"VOCALIS_MODEL_DIR": str(tmp_path / "empty")}
    cli = subprocess.run([sys.executable, "-m", "app", "models", "list"], env=env, capture_output=True, text=True)
    rows = dict(line.split("\t") for line in cli.stdout.splitlines())
    assert cli.returncode == 0 and {"whisper-base", "qwen2.5-coder-1.5b", "kokoro"} <= set(rows)
    assert set(rows.values()) == {"not prepared (vocalis models prepare)"}


def test_an_stt_worker_runs_two_decodes_at_once_on_a_cpu_unless_told():
    assert runner.stt_lanes(Settings(stt_device="cpu")) == runner.CPU_STT_LANES == 2
    assert runner.stt_lanes(Settings(stt_device="cuda")) == 1  # a GPU batches instead
    assert runner.stt_lanes(Settings.from_env({"VOCALIS_STT_LANES": "3", "VOCALIS_STT_DEVICE": "cuda"})) == 3


def test_serve_admits_what_its_cores_keep_up_with_unless_told():
    cores = os.cpu_count() or 1
    assert runner.session_limit(Settings(), transcribes_here=True) == runner.SESSIONS_PER_CORE * cores
    assert runner.session_limit(Settings(), transcribes_here=False) == 0  # an edge whose workers run elsewhere
    assert runner.session_limit(Settings(workers="llm,tts"), transcribes_here=True) == 0
    assert runner.session_limit(Settings(max_sessions=0), transcribes_here=True) == 0
    assert runner.session_limit(Settings.from_env({"VOCALIS_MAX_SESSIONS": "3"}), transcribes_here=False) == 3
