"""What an edge measures, served in the Prometheus text format at `GET /metrics` (behind the API key).

Workers run in other processes than the edge in a scale-out deployment and publish nothing for metrics: an edge
reports what it sees itself (its sessions, the events it sends, the records its sessions reduce) and what NATS
tells it about the job consumers, read at each scrape. Each edge has its own registry, so several apps in one
process (the tests) do not share counts.

    vocalis_sessions_open{mode}                 gauge: sessions this edge holds, by the mode they were opened in
                                                (`realtime`, `transcription`)
    vocalis_sessions_refused_total              counter: sessions refused with HTTP 503 before the upgrade
    vocalis_records_published_total{subject}    counter: what this edge's sessions handed to JetStream: `in`
                                                (input records: client events, audio, the edge's own), `out`
                                                (server events), `jobs` (work for the workers)
    vocalis_jobs_queued{kind}                   gauge: jobs no worker has taken yet (the consumer's num_pending)
    vocalis_jobs_in_flight{kind}                gauge: jobs a worker holds (num_ack_pending)
    vocalis_workers_live{kind}                  gauge: idle workers' outstanding fetches plus jobs in hand, as
                                                `/health` counts them: 0 means no live worker of the kind
    vocalis_jobs_total{kind,outcome}            counter: jobs this edge asked for that ended, `done`, `failed`,
                                                or `withdrawn` (deleted unseen: the session no longer needed it)
    vocalis_job_seconds{kind}                   histogram: from the edge's ask to the reduced record that ends
                                                the job, done or failed (queue wait, work, the way back through
                                                the log)
    vocalis_transcription_seconds               histogram: `speech_stopped` (a manual commit: `committed`) to
                                                the item's transcription `completed`, as the edge sends them
    vocalis_transcription_first_delta_seconds   histogram: `speech_started` to the item's first transcription
                                                `delta`, as the edge sends them
    vocalis_partial_decodes_dropped_total       counter: decodes of a turn in progress shed under load: not
                                                started by their deadline, or refused by a full queue
    vocalis_api_requests_total{endpoint,status} counter: REST audio requests this edge answered
                                                (`transcriptions`, `translations`, `speech`), by HTTP status

The job of a REST audio request (app/audio_api/) counts in `vocalis_jobs_total` and `vocalis_job_seconds` like a
session's, under its queue (`stt`, `tts`); its seconds run to the record that ends it, its last chunk of speech.

Job kinds are the work queues: `stt`, `stt-file` (REST transcriptions), `stt-partial` (decodes while the user
speaks), `llm`, `tts`. With several
edges, sum the counters and histograms over them; the queue and worker gauges are the same on every edge (they
describe the shared consumers). The process collector adds the usual `process_*` series (memory, CPU, files).
"""

import asyncio
import time
from collections import OrderedDict
from typing import TypeVar

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

from app.bus import WORKER_KINDS, Bus
from app.realtime.session_log import queue_of
from domain import events as ev
from domain import records as rec
from domain.jobs import TRANSCRIPTION_LATE, Job
from domain.state import SessionState, Transition, WithdrawJob

log = structlog.get_logger(__name__)
# A scrape waits this long for NATS; a kind it did not hear about is left out of the gauges, not shown stale.
LOOK_TIMEOUT_S = 1.0
# What one session remembers to time (asks and events whose end may never come: a cancelled response's jobs, a
# turn without a transcript); the oldest are forgotten first.
REMEMBERED = 1000
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0)
TRANSCRIPT_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
FIRST_DELTA_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0, 30.0)
T = TypeVar("T")


class EdgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.sessions_open = Gauge("vocalis_sessions_open", "Sessions this edge holds", ["mode"], registry=r)
        self.sessions_refused = Counter("vocalis_sessions_refused", "Sessions refused with HTTP 503", registry=r)
        self.records_published = Counter(
            "vocalis_records_published", "Records this edge handed to JetStream", ["subject"], registry=r
        )
        self.jobs_queued = Gauge("vocalis_jobs_queued", "Jobs no worker has taken yet", ["kind"], registry=r)
        self.jobs_in_flight = Gauge("vocalis_jobs_in_flight", "Jobs a worker holds", ["kind"], registry=r)
        self.workers_live = Gauge(
            "vocalis_workers_live", "Idle workers' fetches plus jobs in hand (0: no live worker)", ["kind"], registry=r
        )
        self.jobs = Counter("vocalis_jobs", "Jobs asked for by this edge that ended", ["kind", "outcome"], registry=r)
        self.job_seconds = Histogram(
            "vocalis_job_seconds", "Ask to the record that ends the job", ["kind"], buckets=JOB_BUCKETS, registry=r
        )
        self.transcription_seconds = Histogram(
            "vocalis_transcription_seconds",
            "speech_stopped (or committed) to the transcription's completed",
            buckets=TRANSCRIPT_BUCKETS,
            registry=r,
        )
        self.first_delta_seconds = Histogram(
            "vocalis_transcription_first_delta_seconds",
            "speech_started to the item's first transcription delta",
            buckets=FIRST_DELTA_BUCKETS,
            registry=r,
        )
        self.partials_dropped = Counter(
            "vocalis_partial_decodes_dropped", "Decodes of a turn in progress shed under load", registry=r
        )
        self.api_requests = Counter(
            "vocalis_api_requests", "REST audio requests answered", ["endpoint", "status"], registry=r
        )
        self.speculative_responses = Counter(
            "vocalis_speculative_responses",
            "Answers asked for in a turn's silence, before its end: used by the turn's response, or wasted",
            ["outcome"],
            registry=r,
        )

    def session(self, mode: str) -> "SessionWatch":
        return SessionWatch(self, mode)

    def refused(self) -> None:
        self.sessions_refused.inc()

    def api_job(self, kind: str, outcome: str, seconds: float | None) -> None:
        """A REST request's job ended (`done`, `failed`; `withdrawn` when its client left first, not timed)."""
        self.jobs.labels(kind, outcome).inc()
        if seconds is not None:
            self.job_seconds.labels(kind).observe(seconds)

    def api_request(self, endpoint: str, status: int) -> None:
        self.api_requests.labels(endpoint, str(status)).inc()

    async def exposition(self, bus: Bus) -> bytes:
        """Every metric, the job consumers as NATS sees them now."""
        await self._look_at_queues(bus)
        return generate_latest(self.registry)

    async def _look_at_queues(self, bus: Bus) -> None:
        looks = await asyncio.gather(
            *(bus.js.consumer_info(bus.subjects.jobs_stream, kind, timeout=LOOK_TIMEOUT_S) for kind in WORKER_KINDS),
            return_exceptions=True,
        )
        for gauge in (self.jobs_queued, self.jobs_in_flight, self.workers_live):
            gauge.clear()
        unanswered = []
        for kind, info in zip(WORKER_KINDS, looks, strict=True):
            if isinstance(info, BaseException):
                unanswered.append(kind)
                continue
            self.jobs_queued.labels(kind).set(info.num_pending or 0)
            self.jobs_in_flight.labels(kind).set(info.num_ack_pending or 0)
            self.workers_live.labels(kind).set((info.num_waiting or 0) + (info.num_ack_pending or 0))
        if unanswered:
            log.warning("metrics.consumers.unanswered", kinds=unanswered)


class SessionWatch:
    """One session's part of the metrics: the edge's connection tells it what it publishes and what it reduces,
    and it times jobs and turns by the monotonic clock, when the edge sends the events that start and end them."""

    def __init__(self, metrics: EdgeMetrics, mode: str) -> None:
        self._metrics = metrics
        self._mode = mode
        self._jobs: OrderedDict[str, tuple[str, float]] = OrderedDict()  # job id: its queue, when it was asked
        self._withdrawn: OrderedDict[str, None] = OrderedDict()  # jobs the session no longer wants
        self._speaking: OrderedDict[str, float] = OrderedDict()  # item id: speech_started
        self._ended: OrderedDict[str, float] = OrderedDict()  # item id: speech_stopped, or committed
        self._speculations = (0, 0)  # the session's speculative responses used and wasted, counted so far

    def opened(self) -> None:
        self._metrics.sessions_open.labels(self._mode).inc()

    def closed(self) -> None:
        self._metrics.sessions_open.labels(self._mode).dec()

    def published(self, subject: str) -> None:
        self._metrics.records_published.labels(subject).inc()

    def reduced(self, record: rec.ReducerRecord, transition: Transition) -> None:
        """A record reduced and its transition carried out (its events sent, its jobs asked for)."""
        now = time.monotonic()
        self._job_ended(record, now)
        for job in transition.jobs:
            if isinstance(job, Job):
                _remember(self._jobs, job.job_id, (queue_of(job), now))
            elif isinstance(job, WithdrawJob):
                _remember(self._withdrawn, job.job_id, None)
        m = self._metrics
        if isinstance(state := transition.state, SessionState):
            used, wasted = self._speculations
            if state.speculations_used > used:
                m.speculative_responses.labels("used").inc(state.speculations_used - used)
            if state.speculations_wasted > wasted:
                m.speculative_responses.labels("wasted").inc(state.speculations_wasted - wasted)
            self._speculations = (state.speculations_used, state.speculations_wasted)
        for event in transition.events:
            match event:
                case ev.SpeechStarted():
                    _remember(self._speaking, event.item_id, now)
                case ev.SpeechStopped() | ev.AudioCommitted() if event.item_id not in self._ended:
                    _remember(self._ended, event.item_id, now)
                case ev.TranscriptDelta() if (started := self._speaking.pop(event.item_id, None)) is not None:
                    m.first_delta_seconds.observe(now - started)
                case ev.TranscriptCompleted() if (ended := self._ended.pop(event.item_id, None)) is not None:
                    m.transcription_seconds.observe(now - ended)
                case ev.TranscriptFailed():
                    self._speaking.pop(event.item_id, None)
                    self._ended.pop(event.item_id, None)

    def _job_ended(self, record: rec.ReducerRecord, now: float) -> None:
        if (end := _end(record)) is None:
            return
        job_id, outcome = end
        asked = self._jobs.pop(job_id, None)
        if asked is None:  # a job whose end was already seen, or forgotten
            return
        kind, at = asked
        withdrawn = job_id in self._withdrawn
        self._withdrawn.pop(job_id, None)
        if withdrawn and outcome == "failed":
            # Deleted from its queue unseen (a worker that had taken it gives its result as usual): no latency,
            # and not shed for want of a worker.
            self._metrics.jobs.labels(kind, "withdrawn").inc()
            return
        self._metrics.jobs.labels(kind, outcome).inc()
        self._metrics.job_seconds.labels(kind).observe(now - at)
        if kind == "stt-partial" and isinstance(record, rec.TranscriptionFailed) and _shed(record):
            self._metrics.partials_dropped.inc()


def _end(record: rec.ReducerRecord) -> tuple[str, str] | None:
    """The job a record ends, and how: its last result, or its failure."""
    match record:
        case rec.TranscriptionCompleted() | rec.WordsDecoded() | rec.GenerationDone():
            return record.job_id, "done"
        case rec.SpeechSynthesized(last=True):
            return record.job_id, "done"
        case rec.TranscriptionFailed() | rec.GenerationFailed() | rec.SpeechFailed():
            return record.job_id, "failed"
    return None


def _shed(failed: rec.TranscriptionFailed) -> bool:
    """Shed under load, not failed of an error: refused by its full queue (the edge records that failure), or
    not started by its deadline (the worker says so)."""
    return failed.worker == "edge" or failed.message.startswith(TRANSCRIPTION_LATE)


def _remember(seen: "OrderedDict[str, T]", key: str, value: T) -> None:
    seen[key] = value
    while len(seen) > REMEMBERED:
        seen.popitem(last=False)
