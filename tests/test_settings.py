from pathlib import Path

from app.settings import Settings


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
