"""`noise_reduction` end to end: the official SDK, real NATS, DeepFilterNet, silero and whisper. The audio the
session records (which the VAD scored and the transcriber reads) is the denoised audio while it is on, the raw
audio once `null` turned it off."""

import numpy as np

from app.log_reader import read_session
from domain import records as rec
from tests.realtime_client import JFK, events_until, pcm24k, sdk, stream, word_error_rate
from tests.test_log_tools_e2e import wait_closed

COMPLETED = "conversation.item.input_audio_transcription.completed"
ONE_TURN = {"type": "server_vad", "silence_duration_ms": 1500}


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def noise(seconds: float, level: float, seed: int) -> np.ndarray:
    """White noise at 24 kHz, as int16 samples of RMS `level`."""
    return np.random.default_rng(seed).standard_normal(int(seconds * 24_000)) * level


def pcm(samples: np.ndarray) -> bytes:
    return np.clip(samples, -32768, 32767).astype("<i2").tobytes()


def samples_of(records: list[rec.AudioReceived]) -> np.ndarray:
    return np.concatenate([np.frombuffer(r.pcm16k, dtype="<i2").astype(np.float64) for r in records])


async def test_noise_reduction_cleans_what_is_recorded_heard_and_transcribed_and_null_turns_it_off(stack):
    jfk = np.frombuffer(pcm24k("jfk.wav"), dtype="<i2").astype(np.float64)
    level = rms(jfk) / np.sqrt(10)  # 10 dB SNR over the file
    noisy_jfk = jfk + noise(len(jfk) / 24_000, level, seed=1)
    async with sdk(stack.ws_url).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        session_id = (await conn.recv()).session.id
        audio_input = {"turn_detection": ONE_TURN, "noise_reduction": {"type": "near_field"}}
        await conn.session.update(session={"type": "transcription", "audio": {"input": audio_input}})
        # At once: the audio after the update is denoised, however soon it comes.
        await stream(conn, pcm(np.concatenate([noise(2, level, seed=2), noisy_jfk, noise(2.5, level, seed=3)])))
        events = await events_until(conn, lambda e: e.type == COMPLETED, timeout=90)
        assert (
            events[0].type == "session.updated" and events[0].session.audio.input.noise_reduction.type == "near_field"
        )
        transcript = events[-1].transcript

        await conn.session.update(session={"type": "transcription", "audio": {"input": {"noise_reduction": None}}})
        updated = (await events_until(conn, lambda e: e.type == "session.updated"))[-1]
        assert updated.session.audio.input.noise_reduction is None
        await stream(conn, pcm(noise(2, level, seed=4)))
    await wait_closed(stack, session_id)

    recorded = await read_session(stack.bus, session_id)
    off_at = max(seq for seq, r in recorded.inputs if isinstance(r, rec.ClientEventReceived))
    on = [r for seq, r in recorded.inputs if isinstance(r, rec.AudioReceived) and seq < off_at]
    off = [r for seq, r in recorded.inputs if isinstance(r, rec.AudioReceived) and seq > off_at]
    appends = -(-(2 * 24_000 + len(jfk) + 60_000) // 2400)  # 100 ms each; each makes one record
    assert len(on) == appends and len(off) == 20

    raw_noise = rms(samples_of(off[5:]))
    assert raw_noise > 0.7 * level  # off: the noise as sent (less the band above 8 kHz)
    # On: the noise before the speech and after it, about 12 dB down (the limit sessions run DeepFilterNet with).
    assert rms(samples_of(on[:5])) / raw_noise < 0.5  # from the first append on
    assert 0.15 < rms(samples_of(on[5:20])) / raw_noise < 0.35
    assert 0.15 < rms(samples_of(on[-20:])) / raw_noise < 0.35
    speech = samples_of(on[20 : 20 + len(jfk) // 2400])
    assert rms(speech) > 0.5 * rms(jfk)  # the speech is kept
    assert word_error_rate(JFK, transcript) <= 0.2, transcript
